#include "pipelines/png.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "dit/atomic_file.h"
#include "ditkit_config.h"
#include "pipelines/video_writer.h"

#if DITKIT_HAVE_ZLIB
#include <zlib.h>
#endif

namespace ditkit {
namespace {

constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

#if DITKIT_HAVE_ZLIB
uint32_t crc32_of(const uint8_t* p, size_t n, uint32_t crc = 0) {
  return static_cast<uint32_t>(::crc32(crc, p, static_cast<uInt>(n)));
}
#else
uint32_t crc32_of(const uint8_t* p, size_t n, uint32_t crc = 0) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t adler32_of(const uint8_t* p, size_t n) {
  uint32_t a = 1, b = 0;
  for (size_t i = 0; i < n; ++i) {
    a = (a + p[i]) % 65521;
    b = (b + a) % 65521;
  }
  return (b << 16) | a;
}
#endif

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s));
}

uint32_t get_u32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

void put_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  put_u32(out, crc32_of(out.data() + start, out.size() - start));  // CRC covers type and data
}

uint8_t paeth(int a, int b, int c) {
  int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return static_cast<uint8_t>(pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
}

// The value filter `type` subtracts from (encoder) or adds to (decoder) byte i of a row;
// `row` holds raw bytes and `prev` the raw row above (zeros for the first row).
uint8_t predictor(int type, const uint8_t* row, const uint8_t* prev, size_t i) {
  constexpr size_t bpp = 3;
  int a = i >= bpp ? row[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
  switch (type) {
    case 0: return 0;
    case 1: return static_cast<uint8_t>(a);
    case 2: return static_cast<uint8_t>(b);
    case 3: return static_cast<uint8_t>((a + b) / 2);
    case 4: return paeth(a, b, c);
  }
  throw std::runtime_error("PNG: unknown filter type " + std::to_string(type));
}

// Raw scanlines, each led by its filter type byte.
std::vector<uint8_t> filter_rows(const uint8_t* pixels, int64_t height, size_t stride) {
  std::vector<uint8_t> out, zeros(stride, 0);
  out.reserve(height * (stride + 1));
#if DITKIT_HAVE_ZLIB
  constexpr int kFilters = 5;  // try all, keep the one with the smallest sum of |signed bytes| (libpng's heuristic)
#else
  constexpr int kFilters = 1;  // stored blocks do not compress, so filtering would only cost time
#endif
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = pixels + y * stride;
    const uint8_t* prev = y > 0 ? row - stride : zeros.data();
    int best = 0;
    uint64_t best_cost = UINT64_MAX;
    for (int type = 0; type < kFilters; ++type) {
      uint64_t cost = 0;
      for (size_t i = 0; i < stride; ++i) cost += std::abs(int8_t(row[i] - predictor(type, row, prev, i)));
      if (cost < best_cost) best_cost = cost, best = type;
    }
    out.push_back(static_cast<uint8_t>(best));
    for (size_t i = 0; i < stride; ++i) out.push_back(static_cast<uint8_t>(row[i] - predictor(best, row, prev, i)));
  }
  return out;
}

std::vector<uint8_t> zlib_compress(const std::vector<uint8_t>& raw) {
#if DITKIT_HAVE_ZLIB
  uLongf size = compressBound(raw.size());
  std::vector<uint8_t> out(size);
  if (compress2(out.data(), &size, raw.data(), raw.size(), Z_DEFAULT_COMPRESSION) != Z_OK)
    throw std::runtime_error("PNG: zlib compression failed");
  out.resize(size);
  return out;
#else
  // zlib header (deflate, 32K window, no dictionary) and stored blocks of at most 65535 bytes.
  std::vector<uint8_t> out = {0x78, 0x01};
  size_t pos = 0;
  do {
    size_t len = std::min<size_t>(65535, raw.size() - pos);
    bool last = pos + len == raw.size();
    out.push_back(last ? 1 : 0);  // BFINAL bit, BTYPE 00 (stored), padding to the byte
    out.push_back(len & 0xff), out.push_back(len >> 8);
    out.push_back(~len & 0xff), out.push_back((~len >> 8) & 0xff);
    out.insert(out.end(), raw.begin() + pos, raw.begin() + pos + len);
    pos += len;
  } while (pos < raw.size());
  put_u32(out, adler32_of(raw.data(), raw.size()));
  return out;
#endif
}

std::vector<uint8_t> zlib_decompress(const std::vector<uint8_t>& in, size_t expected) {
  std::vector<uint8_t> out(expected);
#if DITKIT_HAVE_ZLIB
  uLongf size = expected;
  if (uncompress(out.data(), &size, in.data(), in.size()) != Z_OK || size != expected)
    throw std::runtime_error("PNG: corrupt or truncated image data");
#else
  // Without zlib only stored blocks (what this encoder writes) can be read.
  if (in.size() < 6 || (in[0] & 0x0f) != 8 || (in[0] * 256 + in[1]) % 31 != 0 || (in[1] & 0x20))
    throw std::runtime_error("PNG: bad zlib header");
  size_t pos = 2, filled = 0;
  for (bool last = false; !last;) {
    if (pos + 5 > in.size()) throw std::runtime_error("PNG: truncated image data");
    uint8_t header = in[pos];
    last = header & 1;
    if ((header >> 1) & 3)
      throw std::runtime_error("PNG: compressed image data needs zlib, which this build lacks");
    size_t len = in[pos + 1] | (in[pos + 2] << 8), nlen = in[pos + 3] | (in[pos + 4] << 8);
    pos += 5;
    if ((len ^ 0xffff) != nlen || pos + len > in.size() || filled + len > expected)
      throw std::runtime_error("PNG: corrupt stored block");
    std::memcpy(out.data() + filled, in.data() + pos, len);
    pos += len, filled += len;
  }
  if (filled != expected || pos + 4 > in.size() || get_u32(in.data() + pos) != adler32_of(out.data(), out.size()))
    throw std::runtime_error("PNG: corrupt or truncated image data");
#endif
  return out;
}

}  // namespace

std::vector<uint8_t> encode_png(const at::Tensor& image) {
  at::Tensor img = contiguous_rgb(image, 3, "encode_png");
  const int64_t height = img.size(0), width = img.size(1);
  std::vector<uint8_t> out(std::begin(kSignature), std::end(kSignature)), ihdr;
  put_u32(ihdr, static_cast<uint32_t>(width));
  put_u32(ihdr, static_cast<uint32_t>(height));
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8 bits, RGB, deflate, adaptive filtering, no interlace
  put_chunk(out, "IHDR", ihdr);
  put_chunk(out, "IDAT", zlib_compress(filter_rows(img.data_ptr<uint8_t>(), height, width * 3)));
  put_chunk(out, "IEND", {});
  return out;
}

at::Tensor decode_png(const std::vector<uint8_t>& bytes) {
  if (bytes.size() < 8 || std::memcmp(bytes.data(), kSignature, 8) != 0)
    throw std::runtime_error("PNG: not a PNG file");
  int64_t width = 0, height = 0;
  std::vector<uint8_t> idat;
  bool end = false;
  for (size_t pos = 8; !end;) {
    if (pos + 12 > bytes.size()) throw std::runtime_error("PNG: truncated file");
    size_t len = get_u32(&bytes[pos]);
    if (len > bytes.size() - pos - 12) throw std::runtime_error("PNG: truncated chunk");
    const uint8_t* type = &bytes[pos + 4];
    const uint8_t* data = type + 4;
    if (crc32_of(type, len + 4) != get_u32(data + len)) throw std::runtime_error("PNG: chunk CRC mismatch");
    std::string name(type, type + 4);
    if (name == "IHDR") {
      if (len != 13) throw std::runtime_error("PNG: bad IHDR");
      width = get_u32(data), height = get_u32(data + 4);
      if (data[8] != 8 || data[9] != 2 || data[10] != 0 || data[11] != 0 || data[12] != 0)
        throw std::runtime_error("PNG: only 8-bit RGB, non-interlaced images are supported");
    } else if (name == "IDAT") {
      idat.insert(idat.end(), data, data + len);
    } else if (name == "IEND") {
      end = true;
    }  // ancillary chunks are skipped
    pos += len + 12;
  }
  if (width <= 0 || height <= 0) throw std::runtime_error("PNG: missing or empty IHDR");
  if (width * height > (int64_t(1) << 28)) throw std::runtime_error("PNG: image too large");  // a corrupt IHDR
  const size_t stride = width * 3;
  std::vector<uint8_t> raw = zlib_decompress(idat, height * (stride + 1)), zeros(stride, 0);
  at::Tensor img = at::empty({height, width, 3}, at::kByte);
  uint8_t* pixels = img.data_ptr<uint8_t>();
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* in = &raw[y * (stride + 1)];
    uint8_t* row = pixels + y * stride;
    const uint8_t* prev = y > 0 ? row - stride : zeros.data();
    for (size_t i = 0; i < stride; ++i) row[i] = static_cast<uint8_t>(in[1 + i] + predictor(in[0], row, prev, i));
  }
  return img;
}

void write_png(const at::Tensor& image, const std::string& path) {
  std::vector<uint8_t> bytes = encode_png(image);
  AtomicOutput output(path);
  std::ofstream out(output.partial_path(), std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw std::runtime_error("cannot write '" + output.partial_path() + "'");
  output.commit();
}

at::Tensor read_png(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open '" + path + "'");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    return decode_png(bytes);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

}  // namespace ditkit
