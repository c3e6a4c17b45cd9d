// Training the shipped model: the Wan DiT and the caption encoder, jointly, on procedural clips
// (pipelines/shape_clips.h) through the space-to-depth codec (dit/video_codec.h).
//
// Objective: rectified flow as Wan samples it. x_t = (1 - sigma) x0 + sigma eps, the timestep
// input is sigma * 1000, and the loss is the mean squared error of the velocity eps - x0; by
// default the network predicts x0 and the velocity is formed from it as the sampler forms it
// (see TrainOptions::prediction). sigma is logit-normal(0, 1) bent by the same flow shift the
// sampler uses (flow_scheduler.h), so training sees noise levels where sampling spends its steps.
// Captions are dropped to "" with probability caption_dropout, which teaches the unconditional
// prediction that classifier-free guidance needs (the negative prompt at sampling is "").
//
// Precision: fp32 master weights, which the optimiser updates; with precision bf16 (the default
// on CUDA) forward and backward run on a bf16 copy of them (the modules Wan keeps in fp32 stay
// fp32), made afresh each step, and the copy's gradients are applied to the masters in fp32. This
// runs the model in its own bf16 arithmetic, the one inference uses, which autocast would not (its
// per-op casts meet the model's own dtype handling), and the same path runs, and is tested, on the
// CPU.
// Optimiser: AdamW (matrices decay; biases, norms and modulation tables do not), linear warm-up
// then cosine (or constant) learning rate, gradient clipping by global norm, EMA of the weights in
// fp32 (the EMA is what gets exported).
//
// Everything random in step s (the clips, their captions, the dropout, sigma, the noise) is drawn
// from (seed, s) alone, so a run resumed from a checkpoint takes the same steps as one that never
// stopped; on the CPU, with the same thread count, the weights come out bit-identical (on the GPU
// they differ only by the rounding of kernels that are not deterministic, e.g. atomics in backward).
//
// A run folder (TrainOptions::out_dir) holds:
//   checkpoint.safetensors  weights, EMA, AdamW moments, step, the run's settings (written atomically)
//   settings.json           the settings of the latest session
//   loss.jsonl              one JSON object per logged step: step, loss, lr, grad_norm, it_s,
//                           clips_s, elapsed_s (elapsed counts every session of the run)
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dit/caption_encoder.h"
#include "dit/video_codec.h"
#include "dit/wan_config.h"
#include "dit/wan_transformer.h"
#include "pipelines/shape_clips.h"

namespace ditkit {

// A model size and the clips it trains on.
struct ModelPreset {
  std::string name;
  WanConfig transformer;          // in/out channels = the codec's latent channels
  CaptionEncoderConfig captions;  // vocab_size comes from the caption vocabulary
  ClipSize clip;
};

// "tiny" (tests: dim 32, 2 layers, 8x16x16 clips) or "shapes" (the shipped model: dim 256,
// 6 layers, 32x128x128 clips = 2,048 tokens). Throws std::invalid_argument naming the presets.
ModelPreset model_preset(const std::string& name);
std::vector<std::string> model_preset_names();

struct TrainOptions {
  std::string out_dir;  // the run folder (created if missing); required
  bool resume = false;  // continue from out_dir/checkpoint.safetensors when it exists
  std::string preset = "shapes";
  // Transformer blocks, instead of the preset's (0: the preset's). With init_from a folder of fewer
  // blocks, the model is deepened: the folder's blocks spread out and the new ones start as
  // identities (their output projections zero), so training goes on from what the folder computes.
  int64_t layers = 0;
  std::string device = "auto";  // auto, cpu or cuda[:N]
  int64_t steps = 4000;         // total optimiser steps of the run (the defaults make the shipped model)
  int64_t batch = 32;
  uint64_t seed = 0;
  double lr = 3e-4;
  int64_t warmup = 200;             // steps of linear warm-up
  std::string schedule = "cosine";  // after warm-up: "cosine" (down to min_lr) or "constant"
  double min_lr = 3e-5;
  double weight_decay = 0.01;
  double beta1 = 0.9, beta2 = 0.99;
  double grad_clip = 1.0;  // max global gradient norm; 0 turns clipping off
  double ema_decay = 0.999;
  double caption_dropout = 0.1;
  // The flow shift applied to sigma; the exported model samples with it too. Clips of flat
  // colours packed 768 values a token reveal their background and objects through the noise up
  // to sigma ~ 0.99, so a model trained where shift 3 puts sigma learns to read them from x_t and
  // never from the caption; shift 12 puts a sixth of training above sigma 0.97, where the
  // caption is what tells the objects apart.
  double shift = 12.0;
  // Fraction of clips trained at sigma = 1 (pure noise), where the sampler starts and only the
  // caption can say what the video holds; logit-normal sigmas almost never reach it.
  double pure_noise = 0.1;
  // How the other clips' noise levels are drawn before the shift: "logit-normal" (t ~ sigmoid of
  // N(0, 1), SD3's) or "uniform" (t ~ U(0, 1), the distribution of the sampler's own grid, which
  // is evenly spaced in t). With shift 48, logit-normal trains 0.1% of clips below sigma 0.7 and
  // uniform 4.6%, while 30 sampling steps take their last from sigma 0.62. Measured on the
  // shipped model (run 15, docs/shipped_model.md): uniform did not sharpen its shapes.
  std::string sigma_sampling = "logit-normal";
  // Extra loss weight on the latent cells an object touches: their error counts 1 + object_weight
  // times (the loss is divided by the mean weight, so its scale stays). Objects fill a few percent
  // of a clip, so unweighted the background outweighs the shape and path that most caption words
  // are about. 0: every cell alike.
  double object_weight = 0;
  // Share of fact words (colour, shape, speed, direction, texture, background) left out of the
  // captions that are kept, each on its own (caption_dropping_facts): the model sees what one word
  // does apart from the words it usually comes with, which unseen pairs of them need. 0: none.
  double fact_dropout = 0;
  // Share of the clips at sigma >= kShapeSwapMinSigma whose x_t is made from the same clip with
  // each object's shape changed, while the target stays the clip the caption describes: where a
  // generated clip's layout is settled, the model is taught to draw the shape the caption names
  // over another shape in x_t (the shipped model's squares come out round, docs/shipped_model.md).
  // Replacement shapes never make a held-out pair. 0: none. Measured (run 17, 0.5 for 2,929 steps
  // from the shipped weights): adherence fell from 10 to 3 of 20 (11 without it), triangles broke up.
  double shape_swap = 0;
  // false: the caption encoder's tokens attend only to themselves (CaptionEncoderConfig::
  // token_mixing), so that a colour word's vector cannot carry the shape it came with in training
  // and the DiT has to read each fact from its own word. Written into the export's config.
  bool caption_mixing = true;
  // "velocity": the network predicts eps - x0 (Wan's flow prediction; what the sampler expects).
  // "sample": it predicts x0 and the loss compares (x_t - x0_hat) / max(sigma, kMinSigmaForSample)
  // with the velocity, as the sampler converts it (SamplingOptions::prediction). Each
  // token carries 768 latent values (192 channels x 1x2x2) through a narrower width, so a velocity
  // model cannot carry the noise it should remove, while x0 lies on a low-dimensional set it can
  // (Li & He, "Back to Basics: Let Denoising Generative Models Denoise", 2025).
  std::string prediction = "sample";
  std::string precision = "auto";  // of forward and backward: fp32, bf16, or auto (bf16 on CUDA, else fp32)
  double max_minutes = 0;          // stop (with a checkpoint) before this much wall time; 0: no limit
  int64_t checkpoint_every = 1000;  // steps; a checkpoint is also written when the run stops
  int64_t log_every = 50;           // steps per loss.jsonl line
  int threads = 0;                  // CPU threads for ATen; 0 leaves ATen's default
  // A new run (no checkpoint in out_dir) starts from this shipped model folder's weights instead
  // of random ones, with fresh optimiser moments: how training goes on where only an export
  // survived (a device call returns the export, not the checkpoint). Give it another seed, so
  // that it sees other clips than the run it continues.
  std::string init_from;
  // Self-attention through this recipe (sparse/recipe.h) instead of dense attention, e.g.
  // "sla:keep=0.05": fine-tuning a model for a sparse method. Gradients reach every weight
  // through the method's differentiable path (execute_plan), and the method's learned weights
  // (sla's projections) train with the model as "attention.<key>". Rules may pick layers but not
  // steps (a training batch mixes noise levels). "" is dense attention.
  std::string recipe;
  // Distillation: a shipped model folder whose prediction, with dense attention, on the same x_t,
  // noise level and caption, is the target instead of the clip's (for a sparse recipe started from
  // that folder's weights: the dense model the fine-tune should stay). The teacher reads the
  // caption through its own caption encoder and never trains. "": the clips are the target.
  std::string teacher;
  // With a teacher, its share of the target velocity: (1 - distill) (noise - x0) + distill v_teacher
  // (another value without a teacher is an error).
  double distill = 1.0;
};

// What one loss.jsonl line says.
struct TrainLogLine {
  int64_t step = 0;
  double loss = 0;       // mean over the steps since the previous line
  double lr = 0;         // at the line's step
  double grad_norm = 0;  // mean global norm before clipping, over the same steps
  double it_s = 0, clips_s = 0;
  double elapsed_s = 0;  // the run's wall time so far, every session counted
};

struct TrainSummary {
  int64_t start_step = 0, end_step = 0;
  bool out_of_time = false;  // stopped by max_minutes before `steps`
  double seconds = 0;        // this session's wall time
};

// Per latent cell, 1 + object_weight * the largest coverage among the pixels it packs: float
// [B, 1, T/fT, H/fH, W/fW] from render_clips' coverage [B, 1, T, H, W] and the codec's factors.
at::Tensor object_loss_weights(const at::Tensor& coverage, const std::array<int64_t, 3>& factor, double object_weight);

// The captions of step `step`'s batch (0-based), as the model reads them: caption_dropout of them
// "", the others with fact_dropout of their fact words left out.
std::vector<std::string> training_captions(const TrainOptions& options, int64_t step);

// The noise level of clip `index` of step `step`'s batch (0-based): 1 for the pure_noise share,
// otherwise t drawn by sigma_sampling and shifted as the sampler shifts: shift t / (1 + (shift - 1) t).
double training_sigma(const TrainOptions& options, int64_t step, int64_t index);

// The lowest noise level shape_swap applies at: above it x_t still shows a shape only faintly.
constexpr double kShapeSwapMinSigma = 0.9;

// The facts clip `index` of step `step` is noised from, given its own: the same, or for the
// shape_swap share of clips at sigma >= kShapeSwapMinSigma, each object's shape replaced by
// another that makes no held-out pair (an object with no such shape keeps its own).
ClipFacts noised_facts(const TrainOptions& options, int64_t step, int64_t index, const ClipFacts& facts,
                       double sigma);

// The learning rate at `step` (0-based) under `options`' warm-up and schedule.
double learning_rate(const TrainOptions& options, int64_t step);
// The EMA decay used after step `step` (1-based count of steps taken): min(ema_decay,
// (1 + step) / (10 + step)), so early weights, still far from trained, leave the average quickly.
double ema_decay(const TrainOptions& options, int64_t step);

class Trainer {
 public:
  // Validates the options (std::invalid_argument naming the option), creates out_dir, and starts
  // a new run, or resumes: options.resume with a checkpoint in out_dir loads it and requires the
  // settings that define the run (preset, batch, seed, caption_dropout, shift, pure_noise,
  // object_weight, fact_dropout, prediction, teacher, distill) to match, else std::runtime_error naming both values.
  // Other settings (steps, lr, ...) may change on resume and apply from then on. Without
  // options.resume an existing checkpoint is an error (runs are not overwritten by accident).
  explicit Trainer(TrainOptions options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains until options.steps or the time budget, writing a checkpoint every checkpoint_every
  // steps and one when it stops, a loss.jsonl line every log_every steps and at each checkpoint,
  // and drawing a progress line on stderr when that is a terminal. `on_log` sees each line as it
  // is written. A non-finite loss stops the run with std::runtime_error before it reaches a
  // checkpoint (the last one is left as it was).
  TrainSummary train(const std::function<void(const TrainLogLine&)>& on_log = {});

  // One optimiser step at the current step; returns the step's loss (a 0-dim device tensor, read
  // it only when needed: reading waits for the device).
  at::Tensor train_step();

  void save_checkpoint();
  // Writes the shipped model folder (pipelines/shipped_model.h) at `dir` from the EMA weights,
  // stored as bfloat16; model_index.json says what the DiT predicts. With a recipe whose methods
  // learn weights, their EMA goes to `dir`/attention_weights.safetensors (fp32), which
  // TextToVideo hands to the recipe it generates with.
  void export_model(const std::string& dir) const;

  int64_t step() const;
  const TrainOptions& options() const;
  const ModelPreset& preset() const;
  at::Device device() const;
  at::ScalarType compute_dtype() const;  // of forward and backward
  std::string checkpoint_path() const;
  std::string loss_log_path() const;
  // "transformer.<key>" and "caption_encoder.<key>": the trained weights and their EMA, in the
  // same order, on the training device, fp32.
  std::vector<std::pair<std::string, at::Tensor>> parameters() const;
  std::vector<std::pair<std::string, at::Tensor>> ema_parameters() const;
  int64_t parameter_count() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace ditkit
