#include "pipelines/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "dit/atomic_file.h"
#include "dit/safetensors.h"
#include "pipelines/device_flag.h"
#include "pipelines/progress.h"
#include "pipelines/sampler.h"
#include "pipelines/shipped_model.h"
#include "sparse/recipe_attention.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace ditkit {
namespace {

using Clock = std::chrono::steady_clock;
using Named = std::vector<std::pair<std::string, at::Tensor>>;

constexpr const char* kCheckpointFormat = "ditkit-train/1";

// ---------------------------------------------------------------------------------------------
// Randomness from (seed, step): splitmix64 chains, so each step's draws depend on nothing else.

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

enum Stream : uint64_t { kFacts = 1, kRender, kDropout, kSigma, kNoise, kPureNoise, kFactDropout, kShapeSwap };

uint64_t derive(uint64_t seed, int64_t step, Stream stream, uint64_t index = 0) {
  return splitmix64(splitmix64(splitmix64(seed + 0x632be59bd9b4e019ull * stream) ^ uint64_t(step)) ^ index);
}

double unit_interval(uint64_t bits) { return (double(bits >> 11) + 0.5) * 0x1.0p-53; }  // in (0, 1)

// Clip i of step `at_step`: what it shows, and the caption it trains with.
ClipFacts clip_facts(const TrainOptions& o, int64_t at_step, int64_t i) {
  return sample_facts(derive(o.seed, at_step, kFacts, uint64_t(i)), Split::kTrain);
}

std::string clip_caption(const TrainOptions& o, int64_t at_step, int64_t i, const ClipFacts& facts) {
  if (unit_interval(derive(o.seed, at_step, kDropout, uint64_t(i))) < o.caption_dropout) return "";
  return caption_dropping_facts(facts, o.fact_dropout, derive(o.seed, at_step, kFactDropout, uint64_t(i)));
}

// ---------------------------------------------------------------------------------------------

// The preset as this run trains it: its depth and the caption encoder's mixing as the options say.
ModelPreset training_preset(const TrainOptions& o) {
  ModelPreset p = model_preset(o.preset);
  p.captions.token_mixing = o.caption_mixing;
  if (o.layers > 0) p.transformer.num_layers = o.layers;
  return p;
}

// The training recipe, checked: training picks one rule per layer, so step conditions are refused.
Recipe training_recipe(const TrainOptions& o) {
  Recipe recipe = load_recipe(o.recipe, attention_method_specs());
  for (const RecipeRule& rule : recipe.rules)
    if (rule.steps.constrained())
      throw std::invalid_argument("--recipe '" + o.recipe + "': rule " + rule.method +
                                  " has a step condition; a training batch mixes noise levels, so rules may "
                                  "pick layers only");
  check_recipe(recipe, static_cast<int>(training_preset(o).transformer.num_layers), 1);
  return recipe;
}

void check_options(const TrainOptions& o) {
  auto fail = [](const std::string& what) { throw std::invalid_argument(what); };
  if (o.out_dir.empty()) fail("--out: a run folder is required (checkpoints and the loss log go there)");
  model_preset(o.preset);
  if (o.layers < 0) fail("--layers must be >= 0 (0: the preset's), got " + std::to_string(o.layers));
  if (!o.recipe.empty()) training_recipe(o);
  if (o.steps < 0) fail("--steps must be >= 0, got " + std::to_string(o.steps));
  if (o.batch < 1) fail("--batch must be >= 1, got " + std::to_string(o.batch));
  if (!(o.lr > 0) || !std::isfinite(o.lr)) fail("--lr must be > 0, got " + std::to_string(o.lr));
  if (!(o.min_lr >= 0) || o.min_lr > o.lr) fail("--min-lr must be in [0, lr], got " + std::to_string(o.min_lr));
  if (o.warmup < 0) fail("--warmup must be >= 0, got " + std::to_string(o.warmup));
  if (o.schedule != "cosine" && o.schedule != "constant")
    fail("--schedule '" + o.schedule + "': expected cosine or constant");
  if (!(o.weight_decay >= 0)) fail("--weight-decay must be >= 0");
  if (!(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1)) fail("AdamW betas must be in [0, 1)");
  if (!(o.grad_clip >= 0)) fail("--grad-clip must be >= 0 (0: off), got " + std::to_string(o.grad_clip));
  if (!(o.ema_decay >= 0 && o.ema_decay < 1)) fail("--ema-decay must be in [0, 1), got " + std::to_string(o.ema_decay));
  if (!(o.caption_dropout >= 0 && o.caption_dropout <= 1))
    fail("--caption-dropout must be in [0, 1], got " + std::to_string(o.caption_dropout));
  if (!(o.shift > 0) || !std::isfinite(o.shift)) fail("--shift must be > 0, got " + std::to_string(o.shift));
  if (!(o.pure_noise >= 0 && o.pure_noise <= 1))
    fail("--pure-noise must be in [0, 1], got " + std::to_string(o.pure_noise));
  if (o.sigma_sampling != "logit-normal" && o.sigma_sampling != "uniform")
    fail("--sigma-sampling '" + o.sigma_sampling + "': expected logit-normal or uniform");
  if (!(o.object_weight >= 0) || !std::isfinite(o.object_weight))
    fail("--object-weight must be >= 0 (0: off), got " + std::to_string(o.object_weight));
  if (!(o.fact_dropout >= 0 && o.fact_dropout <= 1))
    fail("--fact-dropout must be in [0, 1], got " + std::to_string(o.fact_dropout));
  if (!(o.shape_swap >= 0 && o.shape_swap <= 1))
    fail("--shape-swap must be in [0, 1], got " + std::to_string(o.shape_swap));
  if (o.prediction != "velocity" && o.prediction != "sample")
    fail("--prediction '" + o.prediction + "': expected velocity or sample");
  if (!(o.distill >= 0 && o.distill <= 1)) fail("--distill must be in [0, 1], got " + std::to_string(o.distill));
  if (o.teacher.empty() && o.distill != 1) fail("--distill needs --teacher (the model whose prediction it mixes in)");
  if (!(o.max_minutes >= 0)) fail("--max-minutes must be >= 0 (0: no limit)");
  if (o.checkpoint_every < 1) fail("--checkpoint-every must be >= 1");
  if (o.log_every < 1) fail("--log-every must be >= 1");
  if (o.threads < 0) fail("--threads must be >= 0 (0: ATen's default)");
  if (o.precision != "auto" && o.precision != "fp32" && o.precision != "bf16")
    fail("--precision '" + o.precision + "': expected auto, fp32 or bf16");
}

// The settings that make a run what it is; a resume must not change them.
json run_identity(const TrainOptions& o) {
  json j = {{"preset", o.preset},   {"batch", o.batch},   {"seed", o.seed},
            {"caption_dropout", o.caption_dropout}, {"shift", o.shift}, {"pure_noise", o.pure_noise},
            {"prediction", o.prediction}};
  // Only when set, so that runs from before these settings existed still resume.
  if (o.object_weight > 0) j["object_weight"] = o.object_weight;
  if (o.layers > 0) j["layers"] = o.layers;
  if (o.fact_dropout > 0) j["fact_dropout"] = o.fact_dropout;
  if (!o.caption_mixing) j["caption_mixing"] = false;
  if (!o.recipe.empty()) j["recipe"] = o.recipe;
  if (o.sigma_sampling != "logit-normal") j["sigma_sampling"] = o.sigma_sampling;
  if (o.shape_swap > 0) j["shape_swap"] = o.shape_swap;
  if (!o.teacher.empty()) {
    j["teacher"] = o.teacher;
    j["distill"] = o.distill;
  }
  return j;
}


json all_settings(const TrainOptions& o) {
  json j = run_identity(o);
  j.update({{"steps", o.steps},
            {"lr", o.lr},
            {"warmup", o.warmup},
            {"schedule", o.schedule},
            {"min_lr", o.min_lr},
            {"weight_decay", o.weight_decay},
            {"betas", {o.beta1, o.beta2}},
            {"grad_clip", o.grad_clip},
            {"ema_decay", o.ema_decay},
            {"precision", o.precision},
            {"init_from", o.init_from}});
  return j;
}

// The velocity a network output stands for, as the sampler forms it: the output itself, or for an
// x0 prediction (x_t - x0_hat) / sigma, sigma held off zero (`s` broadcasts over the clip).
at::Tensor as_velocity(const at::Tensor& out, const at::Tensor& x_t, const at::Tensor& s,
                       const std::string& prediction) {
  return prediction == "velocity" ? out : (x_t - out) / s.clamp_min(kMinSigmaForSample);
}

// Weight decay for matrices only: biases, norm scales and the modulation tables (which hold
// shifts and scales, not projections) keep their values unless the loss moves them.
bool decays(const std::string& name, const at::Tensor& t) {
  return t.dim() >= 2 && name.find("scale_shift_table") == std::string::npos;
}

// A model's weights ("transformer.blocks.<i>.*" among them) spread over `layers` blocks: block i of
// the `from` moves to i * layers / from, and each block between starts as a copy of the one before
// it with its three output projections (self-attention, cross-attention, feed-forward) zeroed, so it
// adds nothing to the residual stream: the deeper model computes what the shallower one did, and
// training goes on from there with the new blocks' gradients flowing through the zeroed outputs.
std::map<std::string, at::Tensor> deepened(std::map<std::string, at::Tensor> weights, int64_t from, int64_t layers) {
  const std::string prefix = "transformer.blocks.";
  std::map<std::string, at::Tensor> out;
  std::vector<std::map<std::string, at::Tensor>> blocks(static_cast<size_t>(from));  // by block, the rest of the key
  for (auto& [key, t] : weights) {
    if (key.rfind(prefix, 0) != 0) {
      out.emplace(key, t);
      continue;
    }
    const size_t dot = key.find('.', prefix.size());
    blocks.at(std::stoul(key.substr(prefix.size(), dot - prefix.size())))[key.substr(dot + 1)] = t;
  }
  const std::set<std::string> outputs = {"attn1.to_out.0.weight", "attn1.to_out.0.bias", "attn2.to_out.0.weight",
                                         "attn2.to_out.0.bias",   "ffn.net.2.weight",    "ffn.net.2.bias"};
  std::vector<bool> placed(static_cast<size_t>(layers), false);
  for (int64_t i = 0; i < from; ++i) {
    const int64_t to = i * layers / from;
    placed[size_t(to)] = true;
    for (const auto& [rest, t] : blocks[size_t(i)]) out[prefix + std::to_string(to) + "." + rest] = t;
  }
  for (int64_t to = 1; to < layers; ++to) {
    if (placed[size_t(to)]) continue;
    const std::string before = prefix + std::to_string(to - 1) + ".", here = prefix + std::to_string(to) + ".";
    for (const auto& [rest, t] : blocks[0])
      out[here + rest] = outputs.count(rest) ? at::zeros_like(t) : out.at(before + rest).clone();
  }
  return out;
}

std::string shape_text(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << sizes;
  return s.str();
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::vector<std::string> model_preset_names() { return {"tiny", "shapes"}; }

ModelPreset model_preset(const std::string& name) {
  ModelPreset p;
  p.name = name;
  const int64_t channels = VideoCodecConfig{}.latent_channels();
  p.transformer.in_channels = p.transformer.out_channels = channels;
  p.transformer.patch_size = {1, 2, 2};
  if (name == "tiny") {
    p.transformer.num_attention_heads = 2;
    p.transformer.attention_head_dim = 16;
    p.transformer.ffn_dim = 64;
    p.transformer.num_layers = 2;
    p.transformer.freq_dim = 32;
    p.captions.dim = 32;
    p.captions.layers = 1;
    p.captions.heads = 2;
    p.captions.ffn = 64;
    p.clip = {8, 16, 16};
  } else if (name == "shapes") {
    // 2,048 tokens a clip (8 x 16 x 16 after the codec's 4x4x4 and the 1x2x2 patches); heads of 64.
    p.transformer.num_attention_heads = 4;
    p.transformer.attention_head_dim = 64;
    p.transformer.ffn_dim = 1024;
    p.transformer.num_layers = 6;
    p.transformer.freq_dim = 256;
    p.captions.dim = 128;
    p.captions.layers = 2;
    p.captions.heads = 4;
    p.captions.ffn = 512;
    p.clip = {32, 128, 128};
  } else {
    std::string names;
    for (const std::string& n : model_preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown model preset '" + name + "' (known: " + names + ")");
  }
  p.captions.max_length = 32;  // the longest caption has 19 words
  p.transformer.text_dim = p.captions.dim;
  return p;
}

at::Tensor object_loss_weights(const at::Tensor& coverage, const std::array<int64_t, 3>& factor, double object_weight) {
  return at::max_pool3d(coverage, {factor[0], factor[1], factor[2]}).mul_(object_weight).add_(1);
}

ClipFacts noised_facts(const TrainOptions& o, int64_t step, int64_t index, const ClipFacts& facts, double sigma) {
  const uint64_t bits = derive(o.seed, step, kShapeSwap, uint64_t(index));
  if (sigma < kShapeSwapMinSigma || !(unit_interval(bits) < o.shape_swap)) return facts;
  ClipFacts swapped = facts;
  for (size_t k = 0; k < swapped.objects.size(); ++k) {
    ObjectFacts& object = swapped.objects[k];
    std::vector<Shape> others;
    for (Shape shape : {Shape::kCircle, Shape::kSquare, Shape::kTriangle}) {
      ObjectFacts candidate = object;
      candidate.shape = shape;
      if (shape != object.shape && !in_held_out_pair(candidate)) others.push_back(shape);
    }
    if (!others.empty()) object.shape = others[splitmix64(bits + k) % others.size()];
  }
  return swapped;
}

double training_sigma(const TrainOptions& o, int64_t step, int64_t index) {
  if (unit_interval(derive(o.seed, step, kPureNoise, uint64_t(index))) < o.pure_noise) return 1.0;
  const uint64_t bits = derive(o.seed, step, kSigma, uint64_t(index));
  double t = unit_interval(bits);
  if (o.sigma_sampling == "logit-normal") {  // N(0, 1) by Box-Muller, through the sigmoid
    const double n = std::sqrt(-2 * std::log(t)) * std::cos(2 * M_PI * unit_interval(splitmix64(bits)));
    t = 1 / (1 + std::exp(-n));
  }
  return o.shift * t / (1 + (o.shift - 1) * t);
}

std::vector<std::string> training_captions(const TrainOptions& options, int64_t step) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < options.batch; ++i) out.push_back(clip_caption(options, step, i, clip_facts(options, step, i)));
  return out;
}

double learning_rate(const TrainOptions& o, int64_t step) {
  if (step < o.warmup) return o.lr * double(step + 1) / double(o.warmup + 1);
  if (o.schedule == "constant") return o.lr;
  const double span = double(std::max<int64_t>(o.steps - o.warmup, 1));
  const double progress = std::min(1.0, double(step - o.warmup) / span);
  return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + std::cos(M_PI * progress));
}

double ema_decay(const TrainOptions& o, int64_t step) {
  return std::min(o.ema_decay, double(1 + step) / double(10 + step));
}

// ---------------------------------------------------------------------------------------------

struct Trainer::State {
  TrainOptions options;
  ModelPreset preset;
  at::Device device;
  at::ScalarType compute_dtype;
  VideoCodec codec;
  WanTransformer transformer, ema_transformer, compute_transformer;
  CaptionEncoder captions, ema_captions, compute_captions;
  // "transformer.<key>" / "caption_encoder.<key>", the same order in each: the fp32 master
  // weights the optimiser updates, their EMA, and the weights forward and backward run on (the
  // masters themselves in fp32, a bf16 copy otherwise).
  Named params, ema, compute;
  std::unique_ptr<RecipeAttention> attention;  // with options.recipe; else dense attention
  // With options.teacher: the frozen model whose prediction is the target, in the compute dtype.
  struct Teacher {
    WanTransformer transformer;
    CaptionEncoder captions;
    std::string prediction;
  };
  std::optional<Teacher> teacher;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  int64_t step = 0;
  double elapsed_before = 0;  // wall time of earlier sessions of this run
  Clock::time_point started = Clock::now();
  at::Tensor loss_sum, grad_norm_sum;  // since the last log line, on the device
  int64_t logged_steps = 0;

  State(TrainOptions o, ModelPreset p, at::Device d)
      : options(std::move(o)),
        preset(std::move(p)),
        device(d),
        compute_dtype(options.precision == "bf16" || (options.precision == "auto" && device.is_cuda()) ? at::kBFloat16
                                                                                                      : at::kFloat),
        transformer(make_transformer(at::kFloat)),
        ema_transformer(make_transformer(at::kFloat)),
        compute_transformer(compute_dtype == at::kFloat ? transformer : make_transformer(compute_dtype)),
        captions(make_captions(at::kFloat)),
        ema_captions(make_captions(at::kFloat)),
        compute_captions(compute_dtype == at::kFloat ? captions : make_captions(compute_dtype)) {
    params = named(transformer, captions);
    ema = named(ema_transformer, ema_captions);
    compute = named(compute_transformer, compute_captions);
    if (!options.recipe.empty()) {
      const WanConfig& c = preset.transformer;
      attention = std::make_unique<RecipeAttention>(training_recipe(options));
      attention->begin_run(static_cast<int>(c.num_layers), 1);
      for (const auto& [key, w] : attention->weights(static_cast<int>(c.num_layers), c.attention_head_dim, device)) {
        // The method applies its weights in fp32 whatever the compute dtype, so the master is
        // also the compute copy.
        params.emplace_back("attention." + key, w);
        compute.emplace_back("attention." + key, w);
        ema.emplace_back("attention." + key, w.detach().clone());
      }
    }
    std::vector<at::Tensor> decay, no_decay;
    for (auto& [name, t] : params) {
      t.requires_grad_(true);  // in bf16 the masters get their gradients from the copy
      (decays(name, t) ? decay : no_decay).push_back(t);
    }
    for (auto& [name, t] : compute) t.requires_grad_(true);
    auto adamw = torch::optim::AdamWOptions(options.lr)
                     .betas({options.beta1, options.beta2})
                     .eps(1e-8)
                     .weight_decay(options.weight_decay);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(adamw));
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(adamw.weight_decay(0)));
    optimizer = std::make_unique<torch::optim::AdamW>(std::move(groups), adamw);
    reset_log_sums();
  }

  WanTransformer make_transformer(at::ScalarType dtype) const {
    return WanTransformer::random(preset.transformer, options.seed, device, dtype);
  }
  CaptionEncoder make_captions(at::ScalarType dtype) const {
    return CaptionEncoder::random(preset.captions, CaptionVocabulary(caption_vocabulary(), "the caption words"),
                                  options.seed + 1, device, dtype);
  }
  static Named named(const WanTransformer& dit, const CaptionEncoder& text) {
    Named out;
    for (const auto& [k, t] : dit.named_parameters()) out.emplace_back("transformer." + k, t);
    for (const auto& [k, t] : text.named_parameters()) out.emplace_back("caption_encoder." + k, t);
    return out;
  }

  void reset_log_sums() {
    loss_sum = at::zeros({}, at::dtype(at::kFloat).device(device));
    grad_norm_sum = at::zeros({}, at::dtype(at::kFloat).device(device));
    logged_steps = 0;
  }

  double elapsed() const { return elapsed_before + std::chrono::duration<double>(Clock::now() - started).count(); }
  std::string checkpoint_path() const { return (fs::path(options.out_dir) / "checkpoint.safetensors").string(); }
  std::string log_path() const { return (fs::path(options.out_dir) / "loss.jsonl").string(); }

  torch::optim::AdamWParamState* adam_state(const at::Tensor& p) {
    auto it = optimizer->state().find(p.unsafeGetTensorImpl());
    return it == optimizer->state().end() ? nullptr : static_cast<torch::optim::AdamWParamState*>(it->second.get());
  }

  // The loss on the batch of step `at_step`.
  at::Tensor loss_at(int64_t at_step) {
    const TrainOptions& o = options;
    const int64_t B = o.batch;
    std::vector<ClipFacts> facts, noised;
    std::vector<uint64_t> render_seeds;
    std::vector<std::string> prompts;
    std::vector<float> sigmas;
    for (int64_t i = 0; i < B; ++i) {
      facts.push_back(clip_facts(o, at_step, i));
      render_seeds.push_back(derive(o.seed, at_step, kRender, uint64_t(i)));
      prompts.push_back(clip_caption(o, at_step, i, facts.back()));
      sigmas.push_back(float(training_sigma(o, at_step, i)));
      if (o.shape_swap > 0) noised.push_back(noised_facts(o, at_step, i, facts.back(), sigmas.back()));
    }
    at::Tensor coverage;
    const at::Tensor x0 = codec.encode(
        render_clips(facts, render_seeds, preset.clip, device, o.object_weight > 0 ? &coverage : nullptr));
    // What x_t is made from: x0, or with shape_swap each clip as noised_facts gives it.
    const at::Tensor x0_in =
        o.shape_swap > 0 ? codec.encode(render_clips(noised, render_seeds, preset.clip, device, nullptr)) : x0;
    at::Generator gen = at::globalContext().defaultGenerator(device).clone();
    gen.set_current_seed(derive(o.seed, at_step, kNoise));
    const at::Tensor noise = at::randn(x0.sizes(), gen, x0.options());
    const at::Tensor sigma = at::tensor(sigmas, at::kFloat).to(device);
    const at::Tensor s = sigma.view({B, 1, 1, 1, 1});
    const at::Tensor x_t = (1 - s) * x0_in + s * noise;
    const at::Tensor context = compute_captions.encode(compute_captions.tokenize(prompts).ids);
    const at::Tensor out = compute_transformer.forward(x_t, sigma * 1000, context, attention.get()).to(at::kFloat);
    const at::Tensor velocity = as_velocity(out, x_t, s, o.prediction);
    // The velocity that takes this x_t to x0, (x_t - x0) / sigma: noise - x0 exactly where x_t
    // was made from x0 itself (the two renders are the same bits).
    at::Tensor target = o.shape_swap > 0 ? noise - x0 + (1 - s) / s * (x0_in - x0) : noise - x0;
    if (teacher) {
      const at::Tensor taught = teacher_velocity(x_t, sigma, prompts);
      target = o.distill == 1 ? taught : (1 - o.distill) * target + o.distill * taught;
    }
    const at::Tensor error = (velocity - target).square();
    if (o.object_weight == 0) return error.mean();
    const at::Tensor w = object_loss_weights(coverage, codec.config().factor, o.object_weight);
    return (error * w).mean() / w.mean();
  }

  // The teacher's velocity at x_t for these captions, as the sampler forms it from its output.
  at::Tensor teacher_velocity(const at::Tensor& x_t, const at::Tensor& sigma, const std::vector<std::string>& prompts) {
    at::NoGradGuard no_grad;
    const at::Tensor context = teacher->captions.encode(teacher->captions.tokenize(prompts).ids);
    const at::Tensor out = teacher->transformer.forward(x_t, sigma * 1000, context, nullptr).to(at::kFloat);
    return as_velocity(out, x_t, sigma.view({-1, 1, 1, 1, 1}), teacher->prediction);
  }

  // Loads options.teacher, which must be a shipped model folder of this preset's shapes and caption words.
  void load_teacher(const std::string& dir) {
    const std::string where = "--teacher " + dir;
    if (!is_shipped_model_folder(dir)) throw std::runtime_error(where + ": not a shipped model folder");
    Teacher t{WanTransformer::load((fs::path(dir) / "transformer").string(), device, compute_dtype),
              CaptionEncoder::load((fs::path(dir) / "caption_encoder").string(), device, compute_dtype),
              read_shipped_model_index(dir).prediction};
    if (t.captions.vocabulary().words() != caption_vocabulary())
      throw std::runtime_error(where + ": its caption vocabulary differs from the caption words the clips use");
    const Named theirs = named(t.transformer, t.captions);
    const size_t model_weights = params.size() - (attention ? attention_weight_count() : 0);
    for (size_t i = 0; i < model_weights; ++i) {
      const bool has = i < theirs.size() && theirs[i].first == params[i].first;
      if (!has || !theirs[i].second.sizes().equals(params[i].second.sizes()))
        throw std::runtime_error(
            where + ": weight '" + params[i].first + "' " +
            (has ? "has shape " + shape_text(theirs[i].second.sizes()) : std::string("is missing")) + ", preset '" +
            preset.name + "' needs " + shape_text(params[i].second.sizes()));
    }
    teacher = std::move(t);
  }

  at::Tensor step_once() {
    const double lr = learning_rate(options, step);
    for (auto& group : optimizer->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    const bool copy = compute_dtype != at::kFloat;
    if (copy) {
      at::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i)
        if (!compute[i].second.is_same(params[i].second)) compute[i].second.copy_(params[i].second);
    }
    optimizer->zero_grad();
    for (auto& [name, t] : compute) t.mutable_grad().reset();
    at::Tensor loss = loss_at(step);
    loss.backward();

    std::vector<at::Tensor> grads;
    for (size_t i = 0; i < params.size(); ++i) {
      const at::Tensor& g = compute[i].second.grad();
      if (!g.defined()) continue;
      if (copy) params[i].second.mutable_grad() = g.to(at::kFloat);
      grads.push_back(params[i].second.grad());
    }
    // Global norm and clipping without reading anything back to the host.
    const at::Tensor norm = at::linalg_vector_norm(at::stack(at::_foreach_norm(grads)), 2);
    if (options.grad_clip > 0) at::_foreach_mul_(grads, (options.grad_clip / (norm + 1e-6)).clamp_max(1.0));
    optimizer->step();
    ++step;

    {
      at::NoGradGuard no_grad;
      std::vector<at::Tensor> raw, avg;
      for (size_t i = 0; i < params.size(); ++i) {
        raw.push_back(params[i].second);
        avg.push_back(ema[i].second);
      }
      at::_foreach_lerp_(avg, raw, 1.0 - ema_decay(options, step));
    }
    const at::Tensor detached = loss.detach();
    loss_sum.add_(detached);
    grad_norm_sum.add_(norm);
    ++logged_steps;
    return detached;
  }

  void save() {
    std::map<std::string, at::Tensor> tensors;
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string& name = params[i].first;
      tensors["param/" + name] = params[i].second.detach();
      tensors["ema/" + name] = ema[i].second;
      if (auto* st = adam_state(params[i].second)) {
        tensors["adam_m/" + name] = st->exp_avg();
        tensors["adam_v/" + name] = st->exp_avg_sq();
        tensors["adam_step/" + name] = at::scalar_tensor(st->step(), at::kLong);
      }
    }
    const json meta = {{"step", step}, {"elapsed_s", elapsed()}};
    save_safetensors(checkpoint_path(), tensors,
                     {{"format", kCheckpointFormat},
                      {"run", run_identity(options).dump()},
                      {"settings", all_settings(options).dump()},
                      {"progress", meta.dump()},
                      {"transformer_config", wan_config_json(preset.transformer)}});
  }

  void load() {
    const std::string path = checkpoint_path();
    SafetensorsFile file(path);
    const auto& meta = file.metadata();
    auto meta_field = [&](const std::string& key) -> const std::string& {
      auto it = meta.find(key);
      if (it == meta.end())
        throw std::runtime_error(path + ": not a dit-train checkpoint (its metadata has no '" + key + "')");
      return it->second;
    };
    if (meta_field("format") != kCheckpointFormat)
      throw std::runtime_error(path + ": checkpoint format '" + meta_field("format") + "', this dit-train reads '" +
                               kCheckpointFormat + "'");
    json saved, progress;
    try {
      saved = json::parse(meta_field("run"));
      progress = json::parse(meta_field("progress"));
    } catch (const json::exception& e) {
      throw std::runtime_error(path + ": unreadable metadata: " + e.what());
    }
    const json now = run_identity(options);
    // Both ways: a setting recorded only when given (the recipe) may be missing from either.
    json keys = now;
    keys.update(saved);
    for (const auto& [key, ignored] : keys.items())
      if (!saved.contains(key) || !now.contains(key) || saved[key] != now[key])
        throw std::runtime_error(path + ": this run folder was started with " + key + " = " +
                                 (saved.contains(key) ? saved[key].dump() : std::string("(unset)")) + ", not " +
                                 (now.contains(key) ? now[key].dump() : std::string("(unset)")) +
                                 "; resume with the same setting, or start a new run in another --out folder");
    std::set<std::string> expected;
    at::NoGradGuard no_grad;
    auto take = [&](const std::string& key, const at::Tensor& into) {
      expected.insert(key);
      if (!file.contains(key)) throw std::runtime_error(path + ": tensor '" + key + "' is missing");
      at::Tensor t = file.get(key);
      if (!t.sizes().equals(into.sizes()))
        throw std::runtime_error(path + ": tensor '" + key + "' has shape " + shape_text(t.sizes()) + ", preset '" +
                                 preset.name + "' needs " + shape_text(into.sizes()));
      into.copy_(t);
    };
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string& name = params[i].first;
      take("param/" + name, params[i].second);
      take("ema/" + name, ema[i].second);
      if (!file.contains("adam_step/" + name)) continue;  // saved before its first update
      expected.insert("adam_step/" + name);
      auto st = std::make_unique<torch::optim::AdamWParamState>();
      st->step(file.get("adam_step/" + name).item<int64_t>());
      st->exp_avg(at::empty_like(params[i].second, at::MemoryFormat::Contiguous));
      st->exp_avg_sq(at::empty_like(params[i].second, at::MemoryFormat::Contiguous));
      take("adam_m/" + name, st->exp_avg());
      take("adam_v/" + name, st->exp_avg_sq());
      optimizer->state()[params[i].second.unsafeGetTensorImpl()] = std::move(st);
    }
    for (const std::string& key : file.keys())
      if (!expected.count(key))
        throw std::runtime_error(path + ": tensor '" + key + "' belongs to no weight of preset '" + preset.name + "'");
    step = progress.value("step", int64_t(0));
    elapsed_before = progress.value("elapsed_s", 0.0);
  }

  // Starts from the weights of a shipped model folder, which must have this preset's shapes and
  // vocabulary. The recipe's own weights (an sla projection) start from the folder's
  // attention_weights.safetensors where it has them, so fine-tuning can go on from a tuned model;
  // those it lacks keep their initial values, and weights no rule of the recipe owns are not used.
  void init_from(const std::string& dir) {
    const std::string where = "--init-from " + dir;
    if (!is_shipped_model_folder(dir)) throw std::runtime_error(where + ": not a shipped model folder");
    const CaptionEncoder text = CaptionEncoder::load((fs::path(dir) / "caption_encoder").string(), device, at::kFloat);
    if (text.vocabulary().words() != caption_vocabulary())
      throw std::runtime_error(where + ": its caption vocabulary differs from the caption words the clips use");
    const WanTransformer dit = WanTransformer::load((fs::path(dir) / "transformer").string(), device, at::kFloat);
    const Named loaded = named(dit, text);
    std::map<std::string, at::Tensor> by_name(loaded.begin(), loaded.end());
    const int64_t layers = preset.transformer.num_layers, theirs = dit.config().num_layers;
    if (theirs > layers)
      throw std::runtime_error(where + ": it has " + std::to_string(theirs) + " layers, this run " +
                               std::to_string(layers) + " (--layers may add layers, not drop them)");
    if (theirs < layers) by_name = deepened(std::move(by_name), theirs, layers);
    // The attention methods' weights (after the model's in `params`) keep their initial values.
    const size_t model_weights = params.size() - (attention ? attention_weight_count() : 0);
    if (by_name.size() != model_weights)
      throw std::runtime_error(where + ": it has " + std::to_string(by_name.size()) + " weights, preset '" +
                               preset.name + "' has " + std::to_string(params.size()));
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < model_weights; ++i) {
      auto& [name, t] = params[i];
      auto it = by_name.find(name);
      if (it == by_name.end() || !it->second.sizes().equals(t.sizes()))
        throw std::runtime_error(where + ": weight '" + name + "' " +
                                 (it == by_name.end() ? std::string("is missing")
                                                      : "has shape " + shape_text(it->second.sizes())) +
                                 ", preset '" + preset.name + "' needs " + shape_text(t.sizes()));
      t.copy_(it->second);
    }
    const fs::path tuned = fs::path(dir) / kAttentionWeightsFile;
    if (model_weights == params.size() || !fs::exists(tuned)) return;
    const SafetensorsFile file(tuned.string());
    for (size_t i = model_weights; i < params.size(); ++i) {
      auto& [name, t] = params[i];
      const std::string key = name.substr(std::string("attention.").size());
      if (!file.contains(key)) continue;
      const at::Tensor w = file.get(key);
      if (!w.sizes().equals(t.sizes()))
        throw std::runtime_error(where + ": " + tuned.string() + " holds '" + key + "' of shape " +
                                 shape_text(w.sizes()) + ", the recipe needs " + shape_text(t.sizes()));
      t.copy_(w);
    }
  }

  size_t attention_weight_count() const {
    return static_cast<size_t>(std::count_if(params.begin(), params.end(), [](const auto& p) {
      return p.first.rfind("attention.", 0) == 0;
    }));
  }

  // Keeps the log lines of steps the checkpoint holds: later ones came from a session whose
  // steps are about to be taken again.
  void trim_log() {
    std::ifstream in(log_path());
    if (!in) return;
    std::string kept, line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.value("step", int64_t(-1)) <= step) kept += line + "\n";
    }
    write_text_file(log_path(), kept);
  }

  void append_log(const TrainLogLine& l) {
    std::ofstream out(log_path(), std::ios::app);
    const json j = {{"step", l.step},           {"loss", l.loss},       {"lr", l.lr},
                    {"grad_norm", l.grad_norm}, {"it_s", l.it_s},       {"clips_s", l.clips_s},
                    {"elapsed_s", l.elapsed_s}};
    out << j.dump() << "\n";
    if (!out) throw std::runtime_error("cannot write " + log_path());
  }
};

Trainer::Trainer(TrainOptions options) {
  check_options(options);
  if (options.threads > 0) at::set_num_threads(options.threads);
  const at::Device device = device_from_flag(options.device);
  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (!fs::is_directory(options.out_dir))
    throw std::runtime_error("--out '" + options.out_dir + "': cannot create the run folder" +
                             (ec ? " (" + ec.message() + ")" : std::string()));
  ModelPreset preset = training_preset(options);
  s_ = std::make_unique<State>(std::move(options), std::move(preset), device);
  if (!s_->options.teacher.empty()) s_->load_teacher(s_->options.teacher);
  const bool have_checkpoint = fs::exists(s_->checkpoint_path());
  if (have_checkpoint && !s_->options.resume)
    throw std::runtime_error(s_->checkpoint_path() +
                             " exists: pass --resume to continue that run, or choose another --out folder");
  if (have_checkpoint) {
    s_->load();
    s_->trim_log();
  } else {
    remove_tree(s_->log_path());
    if (!s_->options.init_from.empty()) s_->init_from(s_->options.init_from);
    at::NoGradGuard no_grad;  // the EMA starts at the initial weights
    for (size_t i = 0; i < s_->params.size(); ++i) s_->ema[i].second.copy_(s_->params[i].second);
  }
  // Fail now, not after the first thousand steps, when the folder cannot be written.
  write_text_file((fs::path(s_->options.out_dir) / "settings.json").string(),
                  all_settings(s_->options).dump(2) + "\n");
}

Trainer::~Trainer() = default;

at::Tensor Trainer::train_step() { return s_->step_once(); }

void Trainer::save_checkpoint() { s_->save(); }

TrainSummary Trainer::train(const std::function<void(const TrainLogLine&)>& on_log) {
  State& s = *s_;
  const TrainOptions& o = s.options;
  TrainSummary summary;
  summary.start_step = s.step;
  const auto session_start = Clock::now();
  auto seconds_since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  // The budget counts from the trainer's construction (model building and loading included).
  const double budget_s = o.max_minutes * 60;
  // A guess until one has been timed: 16 bytes a weight (itself, its EMA, two moments) at 200 MB/s.
  double checkpoint_s = 0.05 + 16.0 * double(parameter_count()) / 200e6;
  double step_s = 0;
  auto checkpoint = [&] {
    const auto t = Clock::now();
    s.save();
    checkpoint_s = std::max(checkpoint_s, seconds_since(t));
  };
  auto since_start = [&] { return std::chrono::duration<double>(Clock::now() - s.started).count(); };

  Progress progress("train", std::max<int64_t>(o.steps - s.step, 0));
  auto log_time = Clock::now();
  int64_t log_step = s.step;
  // Writes one loss.jsonl line for the steps since the last one; a non-finite loss stops the run
  // before it can reach a checkpoint.
  auto write_log = [&] {
    TrainLogLine line;
    line.step = s.step;
    line.loss = s.loss_sum.item<double>() / double(s.logged_steps);
    line.grad_norm = s.grad_norm_sum.item<double>() / double(s.logged_steps);
    if (!std::isfinite(line.loss) || !std::isfinite(line.grad_norm))
      throw std::runtime_error("training diverged: loss " + std::to_string(line.loss) + ", gradient norm " +
                               std::to_string(line.grad_norm) + " over steps " + std::to_string(log_step + 1) + ".." +
                               std::to_string(s.step) + "; the last checkpoint is kept (try a lower --lr)");
    line.lr = learning_rate(o, s.step - 1);
    line.it_s = double(s.step - log_step) / seconds_since(log_time);
    line.clips_s = line.it_s * double(o.batch);
    line.elapsed_s = s.elapsed();
    s.append_log(line);
    if (on_log) on_log(line);
    s.reset_log_sums();
    log_time = Clock::now();
    log_step = s.step;
  };
  while (s.step < o.steps) {
    if (budget_s > 0 && since_start() + 2 * step_s + 2 * checkpoint_s > budget_s) {
      summary.out_of_time = true;
      break;
    }
    const auto t = Clock::now();
    s.step_once();
    step_s = seconds_since(t);
    progress.advance();
    // A log line at every checkpoint too: its check keeps a diverged state out of the checkpoint.
    if (s.step % o.log_every == 0 || s.step % o.checkpoint_every == 0) write_log();
    if (s.step % o.checkpoint_every == 0 && s.step < o.steps) checkpoint();
  }
  progress.finish();
  if (s.logged_steps > 0) write_log();
  if (s.step > summary.start_step || !fs::exists(s.checkpoint_path())) checkpoint();
  summary.end_step = s.step;
  summary.seconds = seconds_since(session_start);
  return summary;
}

void Trainer::export_model(const std::string& dir) const {
  ShippedModelIndex index;
  index.defaults.width = s_->preset.clip.width;
  index.defaults.height = s_->preset.clip.height;
  index.defaults.frames = s_->preset.clip.frames;
  index.defaults.steps = 30;
  index.defaults.guidance = 3.0;  // 52 of 100 held-out prompts right against 44 at 5 (docs/shipped_model.md)
  index.defaults.shift = s_->options.shift;
  index.defaults.scheduler = "unipc";
  index.defaults.negative_prompt = "";  // what caption dropout trained as the unconditional prompt
  index.prediction = s_->options.prediction;
  save_shipped_model(dir, s_->ema_transformer, s_->ema_captions, index, at::kBFloat16);
  std::map<std::string, at::Tensor> attention_weights;
  for (const auto& [name, t] : s_->ema)
    if (name.rfind("attention.", 0) == 0) attention_weights[name.substr(10)] = t.to(at::kCPU);
  if (!attention_weights.empty())
    save_safetensors((fs::path(dir) / kAttentionWeightsFile).string(), attention_weights, {});
}

int64_t Trainer::step() const { return s_->step; }
const TrainOptions& Trainer::options() const { return s_->options; }
const ModelPreset& Trainer::preset() const { return s_->preset; }
at::Device Trainer::device() const { return s_->device; }
at::ScalarType Trainer::compute_dtype() const { return s_->compute_dtype; }
std::string Trainer::checkpoint_path() const { return s_->checkpoint_path(); }
std::string Trainer::loss_log_path() const { return s_->log_path(); }
std::vector<std::pair<std::string, at::Tensor>> Trainer::parameters() const { return s_->params; }
std::vector<std::pair<std::string, at::Tensor>> Trainer::ema_parameters() const { return s_->ema; }

int64_t Trainer::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : s_->params) n += t.numel();
  return n;
}

}  // namespace ditkit
