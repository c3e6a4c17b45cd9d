#include "pipelines/shipped_model.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <system_error>

#include "dit/atomic_file.h"
#include "dit/config_json.h"
#include "ditkit_config.h"
#include "pipelines/flow_scheduler.h"

namespace fs = std::filesystem;

namespace ditkit {
namespace {

using nlohmann::json;

std::string index_path(const std::string& dir) { return (fs::path(dir) / "model_index.json").string(); }

// A default the folder must state: absent is an error, not Wan's value.
const json& required(const json& object, const char* name, const std::string& where) {
  const json* value = cfg::field(object, name);
  if (!value) cfg::fail(where, name, "is missing (the shipped model states every default)");
  return *value;
}

void check_defaults(const ModelDefaults& d, const std::string& where) {
  cfg::require_at_least(d.steps, 1, "steps", where);
  if (!(d.guidance >= 0)) cfg::fail(where, "guidance", "must be >= 0, got " + std::to_string(d.guidance));
  try {
    make_flow_scheduler(d.scheduler, d.shift);  // says which names and shifts it takes
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(where + ": field 'scheduler' or 'shift': " + e.what());
  }
}

}  // namespace

void check_shipped_sizes(const VideoCodecConfig& codec, const WanConfig& transformer, int64_t frames, int64_t height,
                         int64_t width) {
  const char* const names[] = {"frames", "height", "width"};
  const int64_t sizes[] = {frames, height, width};
  for (int i = 0; i < 3; ++i) {
    const int64_t unit = codec.factor[size_t(i)] * transformer.patch_size[size_t(i)];
    if (sizes[i] < 1 || sizes[i] % unit != 0)
      throw std::invalid_argument(
          std::string(names[i]) + " " + std::to_string(sizes[i]) + ": this model takes positive multiples of " +
          std::to_string(unit) + " (its codec's " + std::to_string(codec.factor[size_t(i)]) +
          " times the DiT's patch of " + std::to_string(transformer.patch_size[size_t(i)]) + ")");
  }
}

bool is_shipped_model_folder(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_regular_file(index_path(dir), ec)) return false;
  const json index = cfg::read_config_json(index_path(dir));
  const json* name = cfg::field(index, "_class_name");
  return name && *name == kShippedModelClass;
}

ShippedModelIndex read_shipped_model_index(const std::string& dir) {
  const std::string path = index_path(dir);
  const json index = cfg::read_config_json(path);
  if (const json* name = cfg::field(index, "_class_name"); !name || *name != kShippedModelClass)
    cfg::fail(
        path, "_class_name",
        std::string("must be \"") + kShippedModelClass + "\", got " + (name ? name->dump() : std::string("nothing")));
  ShippedModelIndex out;
  out.codec = video_codec_config_from_json(required(index, "codec", path), path + " codec");
  if (const json* prediction = cfg::field(index, "prediction")) {
    if (*prediction != "velocity" && *prediction != "sample")
      cfg::fail(path, "prediction", "must be \"velocity\" or \"sample\", got " + prediction->dump());
    out.prediction = prediction->get<std::string>();
  }
  const std::string where = path + " defaults";
  const json& d = required(index, "defaults", path);
  if (!d.is_object()) cfg::fail(path, "defaults", "must be a JSON object, got " + d.dump());
  ModelDefaults& m = out.defaults;
  for (const char* name : {"width", "height", "frames", "steps", "guidance", "shift", "scheduler"})
    required(d, name, where);
  cfg::read_int(d, "width", m.width, where);
  cfg::read_int(d, "height", m.height, where);
  cfg::read_int(d, "frames", m.frames, where);
  int64_t steps = 0;
  cfg::read_int(d, "steps", steps, where);
  if (steps < 1 || steps > 100000) cfg::fail(where, "steps", "must be in 1..100000, got " + std::to_string(steps));
  m.steps = int(steps);
  cfg::read_double(d, "guidance", m.guidance, where);
  cfg::read_double(d, "shift", m.shift, where);
  for (auto [name, field] : {std::pair{"scheduler", &m.scheduler}, std::pair{"negative_prompt", &m.negative_prompt}})
    if (const json* value = cfg::field(d, name)) {
      if (!value->is_string()) cfg::fail(where, name, "must be a string, got " + value->dump());
      *field = value->get<std::string>();
    }
  check_defaults(m, where);
  return out;
}

void save_shipped_model(const std::string& dir, const WanTransformer& transformer, const CaptionEncoder& captions,
                        const ShippedModelIndex& index, at::ScalarType weights_dtype) {
  const WanConfig& c = transformer.config();
  if (captions.config().dim != c.text_dim)
    throw std::invalid_argument("save_shipped_model: the caption encoder's dim " +
                                std::to_string(captions.config().dim) + " differs from the transformer's text_dim " +
                                std::to_string(c.text_dim));
  const int64_t channels = index.codec.latent_channels();
  if (c.in_channels != channels || c.out_channels != channels)
    throw std::invalid_argument("save_shipped_model: the codec makes " + std::to_string(channels) +
                                " latent channels; the transformer has in_channels " + std::to_string(c.in_channels) +
                                " and out_channels " + std::to_string(c.out_channels));
  const ModelDefaults& d = index.defaults;
  check_shipped_sizes(index.codec, c, d.frames, d.height, d.width);
  check_defaults(d, "save_shipped_model: defaults");
  if (index.prediction != "velocity" && index.prediction != "sample")
    throw std::invalid_argument("save_shipped_model: prediction must be \"velocity\" or \"sample\", got \"" +
                                index.prediction + "\"");

  fs::path final_dir = fs::path(dir).lexically_normal();
  if (final_dir.filename().empty()) final_dir = final_dir.parent_path();  // "assets/default-model/"
  std::error_code ec;
  const bool replacing = fs::exists(final_dir, ec) && !(fs::is_directory(final_dir, ec) && fs::is_empty(final_dir, ec));
  if (replacing && !is_shipped_model_folder(final_dir.string()))
    throw std::runtime_error("save_shipped_model: '" + final_dir.string() +
                             "' exists and is not a shipped model folder; not replacing it");

  AtomicOutput out(final_dir.string(), /*directory=*/true);
  const fs::path partial(out.partial_path());
  for (const char* part : {"transformer", "caption_encoder"}) fs::create_directory(partial / part);
  transformer.save((partial / "transformer").string(), weights_dtype, kShippedShardBytes);
  captions.save((partial / "caption_encoder").string(), weights_dtype);
  const json defaults = {{"width", d.width},         {"height", d.height},
                         {"frames", d.frames},       {"steps", d.steps},
                         {"guidance", d.guidance},   {"shift", d.shift},
                         {"scheduler", d.scheduler}, {"negative_prompt", d.negative_prompt}};
  const json model_index = {{"_class_name", kShippedModelClass},
                            {"_ditkit_version", DITKIT_VERSION_STRING},
                            {"codec", video_codec_config_to_json(index.codec)},
                            {"prediction", index.prediction},
                            {"defaults", defaults}};
  write_text_file((partial / "model_index.json").string(), model_index.dump(2) + "\n");

  // The old folder steps aside only once the new one is complete, and goes once it is in place.
  const fs::path old =
      final_dir.parent_path() / ("." + final_dir.filename().string() + ".old-" + std::to_string(::getpid()));
  if (replacing) {
    remove_tree(old.string());
    fs::rename(final_dir, old);
  }
  try {
    out.commit();
  } catch (...) {
    if (replacing) fs::rename(old, final_dir, ec);
    throw;
  }
  if (replacing) remove_tree(old.string());
}

}  // namespace ditkit
