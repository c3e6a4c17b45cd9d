// The shipped model's folder: what dit-train writes and TextToVideo::load reads.
//
//   model_index.json   {"_class_name": "DitkitShapesPipeline", "_ditkit_version": ...,
//                       "codec": {"type": "space_to_depth", "factor": [4, 4, 4], "scale": 1.0},
//                       "prediction": "velocity" or "sample" (x0; SamplingOptions::prediction),
//                       "defaults": {"width", "height", "frames", "steps", "guidance", "shift",
//                                    "negative_prompt", "scheduler"}}
//   transformer/       a diffusers Wan transformer folder (config.json +
//                      diffusion_pytorch_model.safetensors, or its shards and index.json past
//                      kShippedShardBytes), what WanTransformer::load reads
//   caption_encoder/   config.json, vocab.txt, model.safetensors (dit/caption_encoder.h)
//
// The class name tells it apart from a diffusers Wan folder, whose model_index.json says
// "WanPipeline". Where the shipped folder is looked for: pipelines/model_location.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "dit/caption_encoder.h"
#include "dit/video_codec.h"
#include "dit/wan_transformer.h"
#include "pipelines/text_to_video.h"

namespace ditkit {

constexpr const char* kShippedModelClass = "DitkitShapesPipeline";
// The most weight data save_shipped_model puts in one transformer file: the folder lives in git
// and travels to the GPU machine, where files over 16 MiB are not wanted.
constexpr uint64_t kShippedShardBytes = uint64_t(12) << 20;

// What model_index.json holds besides the class name.
struct ShippedModelIndex {
  VideoCodecConfig codec;
  std::string prediction = "velocity";  // what the DiT outputs (SamplingOptions::prediction)
  ModelDefaults defaults;               // max_sequence_length is the caption encoder's max_length, not stored here
};

// True when `dir`/model_index.json exists and names kShippedModelClass (a folder without one, or
// with another class, is left to the Wan loader).
bool is_shipped_model_folder(const std::string& dir);

// Reads `dir`/model_index.json. Every default must be present (the model's author chose them);
// errors (std::runtime_error) name the file and the field.
ShippedModelIndex read_shipped_model_index(const std::string& dir);

// Writes a shipped model folder at `dir` from its parts, weights stored in `weights_dtype`
// (bfloat16 halves the assets; the modules Wan keeps in fp32 stay fp32). The folder appears
// complete or not at all; an existing shipped model folder there is replaced, anything else
// there is an error. Throws std::invalid_argument when the parts do not fit together (the caption
// encoder's dim against the transformer's text_dim, the codec's channels against its in and out
// channels, defaults the codec or the DiT's patches cannot take).
void save_shipped_model(const std::string& dir, const WanTransformer& transformer, const CaptionEncoder& captions,
                        const ShippedModelIndex& index, at::ScalarType weights_dtype = at::kBFloat16);

// The sizes `codec` and the transformer's patches can take: throws std::invalid_argument naming
// them (width and height multiples of codec factor x patch, frames of the temporal product).
void check_shipped_sizes(const VideoCodecConfig& codec, const WanConfig& transformer, int64_t frames, int64_t height,
                         int64_t width);

}  // namespace ditkit
