// path_probe: where a shapes model takes an object's path from, the noisy input or the caption.
// Renders one-object ground-truth clips, noises each at several noise levels, and asks the model
// for its clean-clip estimate x̂0 under a caption whose direction is the opposite of the clip's;
// the adherence checker then says which way the object in x̂0 moves. A model that reads the path
// from x_t follows the clip; one that listens to the caption follows the caption; at the highest
// levels there is no object to follow (the estimate is a blur). It also says how far x̂0 moves
// when the caption's direction, colour or shape word alone changes: how much the network listens
// to each, and how sharp x̂0 under the stated caption is: the checker's shape and fill (area over
// bounding box) of the object in it, beside the clip's own. docs/shipped_model.md reads it.
//   path_probe [--model DIR] [--clips 8] [--sigma 0.9 --sigma 0.97 ...] [--device cpu]
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <CLI/CLI.hpp>
#include <array>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "dit/caption_encoder.h"
#include "dit/video_codec.h"
#include "dit/wan_transformer.h"
#include "pipelines/adherence_checker.h"
#include "pipelines/device_flag.h"
#include "pipelines/model_location.h"
#include "pipelines/shape_clips.h"
#include "pipelines/shipped_model.h"

namespace fs = std::filesystem;
using namespace ditkit;

namespace {

Direction opposite(Direction d) { return static_cast<Direction>(static_cast<int>(d) ^ 1); }  // left<->right, up<->down

}  // namespace

int main(int argc, char** argv) {
  std::string model, device_name = "cpu";
  int clips = 8;
  uint64_t seed = 0;
  std::vector<double> sigmas = {0.9, 0.97, 0.99, 0.995, 0.999, 1.0};
  CLI::App app{"path_probe: does a shapes model take an object's path from the noisy input or the caption?"};
  app.add_option("-m,--model", model, "shapes model folder; default: the shipped model");
  app.add_option("--clips", clips, "one-object clips (directions in turn)")->check(CLI::PositiveNumber);
  app.add_option("--sigma", sigmas, "noise levels, each in (0, 1]")->check(CLI::Range(1e-6, 1.0));
  app.add_option("--seed", seed, "clip facts, placement and noise");
  app.add_option("--device", device_name, "cpu or cuda[:N]");
  CLI11_PARSE(app, argc, argv);
  try {
    if (model.empty()) model = find_default_model_folder();
    if (!is_shipped_model_folder(model)) throw std::invalid_argument("--model '" + model + "' is not a shapes model folder");
    if (device_name != "cpu" && device_name.rfind("cuda", 0) != 0)
      throw std::invalid_argument("--device: '" + device_name + "' is not cpu or cuda[:N]");
    const at::Device device(device_name);
    const at::ScalarType dtype = run_dtype(device);
    const ShippedModelIndex index = read_shipped_model_index(model);
    const WanTransformer transformer = WanTransformer::load((fs::path(model) / "transformer").string(), device, dtype);
    const CaptionEncoder captions = CaptionEncoder::load((fs::path(model) / "caption_encoder").string(), device, dtype);
    const VideoCodec codec(index.codec);
    const ClipSize size{index.defaults.frames, index.defaults.height, index.defaults.width};
    at::NoGradGuard no_grad;

    struct Tally {
      int path = 0, caption = 0, other = 0, none = 0;
      double moved_by[3] = {0, 0, 0};  // mean |Δx̂0| (pixel units of [-1, 1]) for direction, colour, shape
    };
    // Per noise level (the last entry: the clip itself) and true shape, the object in x̂0 under the
    // stated caption: how often found, how often the checker names its shape, its summed fill.
    struct Sharpness {
      int clips = 0, found = 0, shape_right = 0;
      double fill = 0;
    };
    std::vector<std::array<Sharpness, 3>> sharpness(sigmas.size() + 1);
    auto look = [&](const at::Tensor& latents, const ObjectFacts& object, std::array<Sharpness, 3>& row) {
      Sharpness& s = row[static_cast<size_t>(object.shape)];
      ++s.clips;
      for (const ObjectReport& o : observe_clip(codec.decode(latents)).objects)
        if (o.colour == object.colour) {
          ++s.found;
          s.shape_right += o.shape == object.shape;
          s.fill += o.fill;
        }
    };
    double context_moved_by[3] = {0, 0, 0};  // mean |Δcontext| / mean |context|, the same word changes
    std::vector<Tally> tally(sigmas.size());
    for (int c = 0; c < clips; ++c) {
      ClipFacts facts = sample_facts(seed + uint64_t(c), Split::kTrain);
      facts.objects.resize(1);
      ObjectFacts& object = facts.objects[0];
      object.direction = static_cast<Direction>(c % 4);
      object.speed = Speed::kFast;  // the clearest path
      ClipFacts told = facts;
      told.objects[0].direction = opposite(object.direction);
      const at::Tensor x0 = codec.encode(render_clips({facts}, {seed + uint64_t(c)}, size, device)).to(dtype);
      // The stated caption with one word changed: the direction (told), the colour, the shape.
      ClipFacts recoloured = facts, reshaped = facts;
      for (const std::string& c2 : object_colours())
        if (c2 != object.colour && c2 != facts.background) {
          recoloured.objects[0].colour = c2;
          break;
        }
      reshaped.objects[0].shape = static_cast<Shape>((static_cast<int>(object.shape) + 1) % 3);
      auto encode = [&](const ClipFacts& f) { return captions.encode(captions.tokenize({caption(f)}).ids.to(device)); };
      const at::Tensor context = encode(told), stated = encode(facts);
      const at::Tensor changed[2] = {encode(recoloured), encode(reshaped)};
      const at::Tensor contexts[3] = {context, changed[0], changed[1]};
      for (int w = 0; w < 3; ++w)
        context_moved_by[w] +=
            ((contexts[w] - stated).abs().mean() / stated.abs().mean()).to(at::kFloat).item<double>() / clips;
      at::Generator gen = at::globalContext().defaultGenerator(device).clone();
      gen.set_current_seed(seed + uint64_t(c));
      const at::Tensor noise = at::randn(x0.sizes(), gen, x0.options());
      look(x0, object, sharpness.back());
      std::printf("clip %d: \"%s\", told \"%s\"\n", c, caption(facts).c_str(), caption(told).c_str());
      for (size_t i = 0; i < sigmas.size(); ++i) {
        const double s = sigmas[i];
        const at::Tensor x_t = (1 - s) * x0 + s * noise;
        // x̂0 from what the network predicts (the sampler's conversion, without its floor).
        auto estimate = [&](const at::Tensor& ctx) {
          const at::Tensor out =
              transformer.forward(x_t, at::full({1}, s * 1000, x0.options().dtype(at::kFloat)), ctx).to(at::kFloat);
          return index.prediction == "sample" ? out : x_t.to(at::kFloat) - s * out;
        };
        const at::Tensor x0_hat = estimate(context), x0_stated = estimate(stated);
        const at::Tensor reworded[3] = {x0_hat, estimate(changed[0]), estimate(changed[1])};
        for (int w = 0; w < 3; ++w)
          tally[i].moved_by[w] += (codec.decode_float(reworded[w]) - codec.decode_float(x0_stated)).abs().mean().item<double>() / clips;
        look(x0_stated, object, sharpness[i]);
        const ClipObservation seen = observe_clip(codec.decode(x0_hat));
        std::optional<Direction> moved;
        for (const ObjectReport& o : seen.objects)
          if (o.colour == object.colour) moved = o.direction;
        Tally& t = tally[i];
        const char* verdict = !moved ? (++t.none, "no moving object")
                              : *moved == object.direction ? (++t.path, "follows the path in x_t")
                              : *moved == told.objects[0].direction ? (++t.caption, "follows the caption")
                                                                     : (++t.other, "moves another way");
        std::printf("  sigma %.3f: %s\n", s, verdict);
        std::fflush(stdout);
      }
    }
    std::printf("\n| sigma | x̂0 follows the path in x_t | follows the caption | another way | no moving object |\n"
                "|---|---|---|---|---|\n");
    for (size_t i = 0; i < sigmas.size(); ++i)
      std::printf("| %.3f | %d / %d | %d / %d | %d | %d |\n", sigmas[i], tally[i].path, clips, tally[i].caption, clips,
                  tally[i].other, tally[i].none);
    std::printf("\nthe caption encoder's output changes by %.1f%% (direction word), %.1f%% (colour), %.1f%% (shape)\n",
                100 * context_moved_by[0], 100 * context_moved_by[1], 100 * context_moved_by[2]);
    std::printf("\nmean |change of x̂0| (pixels in [-1, 1]) when one word of the stated caption changes\n"
                "| sigma | direction | colour | shape |\n|---|---|---|---|\n");
    for (size_t i = 0; i < sigmas.size(); ++i)
      std::printf("| %.3f | %.4f | %.4f | %.4f |\n", sigmas[i], tally[i].moved_by[0], tally[i].moved_by[1],
                  tally[i].moved_by[2]);
    std::printf("\nthe object in x̂0 under the stated caption: shape right / found / clips, mean fill (area over box;\n"
                "the checker says square from 0.89, circle from 0.64)\n"
                "| sigma | circle | square | triangle |\n|---|---|---|---|\n");
    for (size_t i = 0; i < sharpness.size(); ++i) {
      if (i < sigmas.size())
        std::printf("| %.3f |", sigmas[i]);
      else
        std::printf("| the clip |");
      for (const Sharpness& s : sharpness[i])
        std::printf(s.found ? " %d / %d / %d, %.3f |" : " %d / %d / %d, - |", s.shape_right, s.found, s.clips,
                    s.found ? s.fill / s.found : 0.0);
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "path_probe: %s\n", e.what());
    return 1;
  }
  return 0;
}
