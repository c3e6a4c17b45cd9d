// composition_probe: why a shapes model draws a held-out colour + shape pair (a green square, which
// training never shows) as a shape that colour came with. The caption encoder mixes its words, so
// the token "square" after "green" is a vector training never produced; or the DiT itself binds
// shape to colour. The probe tells them apart: each held-out pair is generated twice from the same
// noise, once from the caption's own context, and once with two tokens spliced in from captions
// training does show: the colour token from the caption with a shape seen with that colour, the
// shape token from the caption with a colour seen with that shape (every other token as written).
// If the spliced runs get the shape right and the written ones do not, the encoder's mixing is
// what fails; if both fail, the DiT does. The adherence checker judges every clip.
//   composition_probe [--model DIR] [--repeats 1] [--prompts 0] [--steps 0] [--device cpu]
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "dit/video_codec.h"
#include "pipelines/adherence_checker.h"
#include "pipelines/device_flag.h"
#include "pipelines/model_location.h"
#include "pipelines/sampler.h"
#include "pipelines/shape_clips.h"
#include "pipelines/shipped_model.h"
#include "pipelines/text_to_video.h"

using namespace ditkit;

namespace {

// Caption word positions of a one-object caption: "a <colour> <shape> moves <speed> <direction> ...".
constexpr int64_t kColourWord = 1, kShapeWord = 2;

const Shape kShapes[] = {Shape::kCircle, Shape::kSquare, Shape::kTriangle};
const Direction kDirections[] = {Direction::kLeft, Direction::kRight, Direction::kUp, Direction::kDown};

ObjectFacts object(const std::string& colour, Shape shape, Direction direction) {
  return {colour, shape, direction, Speed::kFast};
}

bool seen(const ObjectFacts& o) { return !in_held_out_pair(o); }

struct Probe {
  ClipFacts stated;        // one object in a held-out colour + shape pair, its direction seen with the shape
  ClipFacts colour_donor;  // the same with a shape seen with the colour (and with the direction)
  ClipFacts shape_donor;   // the same with a colour seen with the shape
};

// Every held-out colour + shape pair, with each direction training shows that shape moving in, on
// a black background (never an object's colour); donors as Probe says.
std::vector<Probe> probes() {
  std::vector<Probe> out;
  for (const std::string& colour : object_colours())
    for (Shape shape : kShapes)
      for (Direction direction : kDirections) {
        const ObjectFacts o = object(colour, shape, direction);
        if (seen(o)) continue;
        const Shape* donor_shape = std::find_if(std::begin(kShapes), std::end(kShapes),
                                                [&](Shape other) { return seen(object(colour, other, direction)); });
        // A colour that makes the object seen: then the shape + direction pair is not held out,
        // only the colour + shape pair is.
        const auto donor_colour = std::find_if(object_colours().begin(), object_colours().end(),
                                               [&](const std::string& other) { return seen(object(other, shape, direction)); });
        if (donor_shape == std::end(kShapes) || donor_colour == object_colours().end()) continue;
        Probe p;
        p.stated = {{o}, "black", ""};
        p.colour_donor = p.shape_donor = p.stated;
        p.colour_donor.objects[0].shape = *donor_shape;
        p.shape_donor.objects[0].colour = *donor_colour;
        out.push_back(p);
      }
  return out;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : "; ") + item;
  return out;
}

struct Tally {
  int runs = 0, all_right = 0;
  FactCounts facts;
};

}  // namespace

int main(int argc, char** argv) {
  std::string model, device_name = "cpu";
  int repeats = 1, max_prompts = 0, steps = 0;
  CLI::App app{"composition_probe: does a shapes model's encoder or its DiT fail an unseen colour + shape pair?"};
  app.add_option("-m,--model", model, "shapes model folder; default: the shipped model");
  app.add_option("--repeats", repeats, "noise seeds per prompt")->check(CLI::PositiveNumber);
  app.add_option("--prompts", max_prompts, "at most this many prompts (0: every held-out pair and direction)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--steps", steps, "denoising steps (0: the model's)")->check(CLI::NonNegativeNumber);
  app.add_option("--device", device_name, "cpu or cuda[:N]");
  CLI11_PARSE(app, argc, argv);
  try {
    if (model.empty()) model = find_default_model_folder();
    if (!is_shipped_model_folder(model)) throw std::invalid_argument("--model '" + model + "' is not a shapes model folder");
    const at::Device device = device_from_flag(device_name);
    const ShippedModelIndex index = read_shipped_model_index(model);
    TextToVideo pipeline = TextToVideo::load(model, device, run_dtype(device));
    const VideoCodec codec(index.codec);
    const TextToVideoOptions gen = pipeline.default_options();
    SamplingOptions sampling = gen.sampling;
    if (steps > 0) sampling.steps = steps;
    sampling.prediction = index.prediction;  // sample() takes it from here; generate() does this itself
    const std::vector<int64_t> latent_shape = {1, index.codec.latent_channels(), gen.frames / index.codec.factor[0],
                                               gen.height / index.codec.factor[1], gen.width / index.codec.factor[2]};
    at::NoGradGuard no_grad;
    const at::Tensor uncond = pipeline.encode_texts({gen.negative_prompt}, 0);

    std::vector<Probe> list = probes();
    if (max_prompts > 0 && size_t(max_prompts) < list.size()) list.resize(size_t(max_prompts));
    std::printf("%s: %zu prompts x %d noise seeds, %d steps, guidance %g, on %s\n", model.c_str(), list.size(),
                repeats, sampling.steps, sampling.guidance, device.str().c_str());
    Tally written, spliced;
    for (size_t i = 0; i < list.size(); ++i) {
      const Probe& p = list[i];
      // One batch: the stated caption, then the donors.
      const at::Tensor texts =
          pipeline.encode_texts({caption(p.stated), caption(p.colour_donor), caption(p.shape_donor)}, 0);
      const at::Tensor as_written = texts.narrow(0, 0, 1);
      at::Tensor swapped = as_written.clone();
      swapped.select(1, kColourWord).copy_(texts[1].select(0, kColourWord));
      swapped.select(1, kShapeWord).copy_(texts[2].select(0, kShapeWord));
      std::printf("\"%s\" (colour token from \"%s %s\", shape token from \"%s %s\")\n", caption(p.stated).c_str(),
                  p.colour_donor.objects[0].colour.c_str(), shape_word(p.colour_donor.objects[0].shape).c_str(),
                  p.shape_donor.objects[0].colour.c_str(), shape_word(p.shape_donor.objects[0].shape).c_str());
      for (int r = 0; r < repeats; ++r) {
        sampling.seed = int64_t(i) * 1000 + r;
        for (auto [context, tally, name] : {std::tuple{as_written, &written, "as written"},
                                            std::tuple{swapped, &spliced, "spliced"}}) {
          const at::Tensor latents = sample(pipeline.transformer(), latent_shape, context, uncond, sampling);
          const CheckReport report = check_clip(codec.decode(latents), p.stated);
          ++tally->runs;
          tally->all_right += report.all_right;
          tally->facts += report.facts;
          std::string seen_shape = "not found";
          for (const ObjectReport& o : report.seen)
            if (o.stated) seen_shape = o.shape ? shape_word(*o.shape) : "no shape";
          std::printf("  seed %lld %-10s: %s (drawn: %s)\n", (long long)sampling.seed, name,
                      report.all_right ? "all right" : ("wrong: " + joined(report.wrong)).c_str(),
                      seen_shape.c_str());
          std::fflush(stdout);
        }
      }
    }
    std::printf("\n| context | all facts right | object found | shape right (of found) | direction right (of found) |\n"
                "|---|---|---|---|---|\n");
    for (auto [tally, name] : {std::pair{&written, "as written"}, std::pair{&spliced, "spliced"}})
      std::printf("| %s | %d / %d | %lld / %lld | %lld | %lld |\n", name, tally->all_right, tally->runs,
                  (long long)tally->facts.found, (long long)tally->facts.objects, (long long)tally->facts.shapes_right,
                  (long long)tally->facts.directions_right);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "composition_probe: %s\n", e.what());
    return 1;
  }
  return 0;
}
