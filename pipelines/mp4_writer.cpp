#include "pipelines/mp4_writer.h"

#include <memory>
#include <stdexcept>

#include "dit/atomic_file.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/log.h>
#include <libswscale/swscale.h>
}

namespace ditkit {
namespace {

void check(int ret, const std::string& what) {
  if (ret >= 0) return;
  char reason[AV_ERROR_MAX_STRING_SIZE];
  av_strerror(ret, reason, sizeof reason);
  throw std::runtime_error("write_mp4: " + what + ": " + reason);
}

struct AvDeleter {
  void operator()(AVCodecContext* p) const { avcodec_free_context(&p); }
  void operator()(AVFrame* p) const { av_frame_free(&p); }
  void operator()(AVPacket* p) const { av_packet_free(&p); }
  void operator()(SwsContext* p) const { sws_freeContext(p); }
  void operator()(AVFormatContext* p) const {
    avio_closep(&p->pb);
    avformat_free_context(p);
  }
};
template <class T>
using AvPtr = std::unique_ptr<T, AvDeleter>;

struct Dictionary {
  AVDictionary* d = nullptr;
  ~Dictionary() { av_dict_free(&d); }
};

// [H, W, 3] -> even H and W, repeating the last row / column (4:2:0 has one chroma sample per 2x2).
at::Tensor pad_to_even(at::Tensor frame) {
  if (frame.size(0) % 2) frame = at::cat({frame, frame.narrow(0, frame.size(0) - 1, 1)}, 0);
  if (frame.size(1) % 2) frame = at::cat({frame, frame.narrow(1, frame.size(1) - 1, 1)}, 1);
  return frame.contiguous();
}

}  // namespace

void write_mp4(const at::Tensor& frames, const std::string& path, const VideoOptions& options) {
  at::Tensor video = contiguous_rgb(frames, 4, "write_mp4");
  if (options.fps <= 0) throw std::invalid_argument("write_mp4: fps must be positive, got " + std::to_string(options.fps));
  if (options.crf < 0 || options.crf > 51)
    throw std::invalid_argument("write_mp4: crf must be in 0..51, got " + std::to_string(options.crf));
  const int width = static_cast<int>(video.size(2) + 1) & ~1, height = static_cast<int>(video.size(1) + 1) & ~1;

  const AVCodec* codec = avcodec_find_encoder_by_name("libx264");
  if (!codec) codec = avcodec_find_encoder(AV_CODEC_ID_H264);
  if (!codec)
    throw std::runtime_error("write_mp4: cannot write '" + path + "': this FFmpeg has no H.264 encoder; "
                             "write a .y4m file or a PNG folder instead");

  AtomicOutput output(path);
  const std::string& partial = output.partial_path();
  AVFormatContext* raw_format = nullptr;
  // The muxer is named because the partial file's name does not end in .mp4.
  check(avformat_alloc_output_context2(&raw_format, nullptr, "mp4", partial.c_str()), "cannot set up the mp4 muxer");
  AvPtr<AVFormatContext> format(raw_format);

  AvPtr<AVCodecContext> encoder(avcodec_alloc_context3(codec));
  if (!encoder) throw std::bad_alloc();
  encoder->width = width;
  encoder->height = height;
  encoder->pix_fmt = AV_PIX_FMT_YUV420P;  // what browsers and phones decode
  encoder->time_base = {1, options.fps};
  encoder->framerate = {options.fps, 1};
  encoder->color_primaries = AVCOL_PRI_BT709;
  encoder->color_trc = AVCOL_TRC_BT709;
  encoder->colorspace = AVCOL_SPC_BT709;
  encoder->color_range = AVCOL_RANGE_MPEG;
  if (format->oformat->flags & AVFMT_GLOBALHEADER) encoder->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  Dictionary codec_options;
  av_dict_set(&codec_options.d, "crf", std::to_string(options.crf).c_str(), 0);
  av_dict_set(&codec_options.d, "preset", options.preset.c_str(), 0);
  // x264 prints ~20 info lines per file at FFmpeg's default level; quiet them unless the host
  // application chose a level of its own.
  if (av_log_get_level() == AV_LOG_INFO) av_log_set_level(AV_LOG_WARNING);
  check(avcodec_open2(encoder.get(), codec, &codec_options.d),
        std::string("cannot open encoder ") + codec->name + " (crf " + std::to_string(options.crf) + ", preset '" +
            options.preset + "')");

  AVStream* stream = avformat_new_stream(format.get(), nullptr);
  if (!stream) throw std::bad_alloc();
  check(avcodec_parameters_from_context(stream->codecpar, encoder.get()), "cannot set the stream parameters");
  stream->time_base = encoder->time_base;
  stream->avg_frame_rate = encoder->framerate;
  check(avio_open(&format->pb, partial.c_str(), AVIO_FLAG_WRITE), "cannot open '" + partial + "'");
  Dictionary muxer_options;
  av_dict_set(&muxer_options.d, "movflags", "+faststart", 0);  // index first: playable while downloading
  check(avformat_write_header(format.get(), &muxer_options.d), "cannot write the mp4 header");

  // swscale converts with BT.601 unless told otherwise; the stream is tagged BT.709.
  AvPtr<SwsContext> scaler(sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P,
                                          SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, nullptr, nullptr,
                                          nullptr));
  if (!scaler) throw std::runtime_error("write_mp4: cannot set up RGB to yuv420p conversion");
  const int* bt709 = sws_getCoefficients(SWS_CS_ITU709);
  sws_setColorspaceDetails(scaler.get(), bt709, /*srcRange full*/ 1, bt709, /*dstRange limited*/ 0, 0, 1 << 16,
                           1 << 16);

  AvPtr<AVFrame> frame(av_frame_alloc());
  AvPtr<AVPacket> packet(av_packet_alloc());
  if (!frame || !packet) throw std::bad_alloc();
  frame->format = AV_PIX_FMT_YUV420P;
  frame->width = width;
  frame->height = height;
  check(av_frame_get_buffer(frame.get(), 0), "cannot allocate a frame");

  auto write_packets = [&] {
    for (;;) {
      int ret = avcodec_receive_packet(encoder.get(), packet.get());
      if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return;
      check(ret, "encoding failed");
      av_packet_rescale_ts(packet.get(), encoder->time_base, stream->time_base);
      packet->stream_index = stream->index;
      check(av_interleaved_write_frame(format.get(), packet.get()), "cannot write to '" + partial + "'");
    }
  };
  for (int64_t t = 0; t < video.size(0); ++t) {
    at::Tensor rgb = pad_to_even(video[t]);
    const uint8_t* src[1] = {rgb.data_ptr<uint8_t>()};
    const int src_stride[1] = {3 * width};
    check(av_frame_make_writable(frame.get()), "cannot reuse the frame buffer");  // the encoder may hold it
    sws_scale(scaler.get(), src, src_stride, 0, height, frame->data, frame->linesize);
    frame->pts = t;
    check(avcodec_send_frame(encoder.get(), frame.get()), "encoding failed");
    write_packets();
  }
  check(avcodec_send_frame(encoder.get(), nullptr), "encoding failed");  // flush the delayed frames
  write_packets();
  check(av_write_trailer(format.get()), "cannot finish '" + partial + "'");
  check(avio_closep(&format->pb), "cannot close '" + partial + "'");
  output.commit();
}

}  // namespace ditkit
