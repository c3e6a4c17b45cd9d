// dit-train: trains the shipped text-to-video model (a Wan DiT and its caption encoder) on
// procedural clips of moving shapes. `dit-train --out runs/shapes --resume --max-minutes 8` trains
// for at most 8 minutes and leaves a checkpoint that the same command continues from;
// `--export DIR` then writes the shipped model folder from the EMA weights.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/headeronly/version.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "dit/caption_encoder.h"
#include "dit/wan_config.h"
#include "ditkit_config.h"
#include "pipelines/shipped_model.h"
#include "pipelines/trainer.h"

namespace {

double millions(int64_t n) { return double(n) / 1e6; }

int64_t count(const std::vector<std::pair<std::string, at::Tensor>>& named, const std::string& prefix) {
  int64_t n = 0;
  for (const auto& [name, t] : named)
    if (name.rfind(prefix, 0) == 0) n += t.numel();
  return n;
}

void print_start(const ditkit::Trainer& trainer) {
  const ditkit::TrainOptions& o = trainer.options();
  const ditkit::ModelPreset& p = trainer.preset();
  const auto& c = p.transformer;
  const auto params = trainer.parameters();
  const int64_t dit = count(params, "transformer."), text = count(params, "caption_encoder.");
  const int64_t f = p.clip.frames / 4, h = p.clip.height / 4, w = p.clip.width / 4;
  const int64_t tokens = f / c.patch_size[0] * (h / c.patch_size[1]) * (w / c.patch_size[2]);
  std::fprintf(stderr, "ditkit %s | LibTorch %s | CUDA kernels %s | GPU %s | %d CPU threads\n", DITKIT_VERSION_STRING,
               TORCH_VERSION, DITKIT_HAVE_CUDA ? "built" : "not built", at::hasCUDA() ? "available" : "none",
               at::get_num_threads());
  if (!o.recipe.empty())
    std::fprintf(stderr, "dit-train: self-attention through recipe '%s', its learned weights %.4fM parameters\n",
                 o.recipe.c_str(), millions(count(params, "attention.")));
  if (!o.teacher.empty())
    std::fprintf(stderr, "dit-train: distilling from %s (its share of the target %g)\n", o.teacher.c_str(), o.distill);
  std::fprintf(stderr,
               "dit-train: preset '%s': DiT %.2fM parameters (dim %lld = %lld heads x %lld, %lld layers, ffn %lld), "
               "caption encoder %.2fM (dim %lld, %lld layers%s); %.1f MiB as bf16\n",
               p.name.c_str(), millions(dit), (long long)c.inner_dim(), (long long)c.num_attention_heads,
               (long long)c.attention_head_dim, (long long)c.num_layers, (long long)c.ffn_dim, millions(text),
               (long long)p.captions.dim, (long long)p.captions.layers,
               p.captions.token_mixing ? "" : ", no token mixing", double(dit + text) * 2 / (1 << 20));
  std::fprintf(stderr,
               "dit-train: clips %lldx%lldx%lld -> latents %lldx%lldx%lldx%lld -> %lld tokens; batch %lld on %s%s; "
               "prediction %s, shift %g (%s), pure noise %g, object weight %g, caption dropout %g, fact dropout %g, "
               "shape swap %g\n",
               (long long)p.clip.frames, (long long)p.clip.height, (long long)p.clip.width, (long long)c.in_channels,
               (long long)f, (long long)h, (long long)w, (long long)tokens, (long long)o.batch,
               trainer.device().str().c_str(), trainer.compute_dtype() == at::kBFloat16 ? " (bf16 compute, fp32 master weights)" : " (fp32)",
               o.prediction.c_str(), o.shift, o.sigma_sampling.c_str(), o.pure_noise, o.object_weight, o.caption_dropout, o.fact_dropout,
               o.shape_swap);
  std::fprintf(stderr, "dit-train: %s at step %lld of %lld, seed %llu, lr %g (warm-up %lld, %s), run folder %s\n",
               trainer.step() > 0 ? "resuming" : "starting", (long long)trainer.step(), (long long)o.steps,
               (unsigned long long)o.seed, o.lr, (long long)o.warmup, o.schedule.c_str(), o.out_dir.c_str());
}

// A run that starts from a shipped folder keeps that model's caption encoder setting, sampling
// shift and depth unless the command gives them: fine-tuning a model should not quietly change how
// it reads captions or samples (the export stores both), nor fail on a folder deepened earlier.
void take_init_folder_settings(const CLI::App& app, ditkit::TrainOptions& o) {
  // Any other folder is the Trainer's to refuse, with the reason.
  if (o.init_from.empty() || !ditkit::is_shipped_model_folder(o.init_from)) return;
  const bool mixes = ditkit::load_caption_encoder_config(o.init_from + "/caption_encoder/config.json").token_mixing;
  const double shift = ditkit::read_shipped_model_index(o.init_from).defaults.shift;
  if (app.count("--no-caption-mixing") == 0) o.caption_mixing = mixes;
  if (app.count("--shift") == 0) o.shift = shift;
  if (app.count("--layers") == 0)
    o.layers = ditkit::load_wan_config(o.init_from + "/transformer/config.json").num_layers;
  if (o.caption_mixing != mixes || o.shift != shift)
    std::fprintf(stderr, "dit-train: note: %s has token mixing %s and shift %g; this run trains with mixing %s, shift %g\n",
                 o.init_from.c_str(), mixes ? "on" : "off", shift, o.caption_mixing ? "on" : "off", o.shift);
}

}  // namespace

int main(int argc, char** argv) {
  ditkit::TrainOptions o;
  std::string export_dir;
  CLI::App app{"dit-train: train the shipped text-to-video model on procedural clips of moving shapes"};
  // A flag given twice takes its last value, so scripts can append overrides to their defaults.
  app.option_defaults()->always_capture_default()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("-o,--out", o.out_dir, "run folder: checkpoint.safetensors, loss.jsonl, settings.json")->required();
  app.add_flag("--resume", o.resume, "continue the run in --out from its checkpoint (a new run if there is none)");
  app.add_option("--model-config", o.preset, "model size: tiny (tests) or shapes (the shipped model)")
      ->check(CLI::IsMember(ditkit::model_preset_names()));
  app.add_option("--layers", o.layers,
                 "transformer blocks instead of the preset's (0: the preset's); with --init-from a shallower "
                 "folder, its blocks spread out and the new ones start as identities")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--steps", o.steps, "total optimiser steps of the run")->check(CLI::NonNegativeNumber);
  app.add_option("--batch", o.batch, "clips per step")->check(CLI::PositiveNumber);
  app.add_option("--lr", o.lr, "peak learning rate (AdamW)")->check(CLI::PositiveNumber);
  app.add_option("--min-lr", o.min_lr, "learning rate at the end of the cosine schedule")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--warmup", o.warmup, "steps of linear learning-rate warm-up")->check(CLI::NonNegativeNumber);
  app.add_option("--schedule", o.schedule, "learning rate after warm-up: cosine or constant")
      ->check(CLI::IsMember({"cosine", "constant"}));
  app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay (matrices only)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--grad-clip", o.grad_clip, "max global gradient norm (0: no clipping)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--ema-decay", o.ema_decay, "decay of the weights' moving average (the exported weights)");
  app.add_option("--caption-dropout", o.caption_dropout, "fraction of captions replaced by \"\" (for guidance)");
  app.add_option("--shift", o.shift,
                 "flow shift applied to the training noise levels and stored for sampling (with --init-from the "
                 "folder's unless given)")
      ->check(CLI::PositiveNumber);
  app.add_option("--pure-noise", o.pure_noise, "fraction of clips trained at sigma = 1 (where sampling starts)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--sigma-sampling", o.sigma_sampling,
                 "how the noise levels are drawn before the shift: logit-normal, or uniform as the sampler's grid "
                 "(trains low noise levels more often)")
      ->check(CLI::IsMember({"logit-normal", "uniform"}));
  app.add_option("--object-weight", o.object_weight,
                 "extra loss weight on latent cells an object touches (they count 1 + this); 0: none")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--fact-dropout", o.fact_dropout,
                 "share of fact words (colour, shape, direction, ...) left out of each kept caption; 0: none")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--shape-swap", o.shape_swap,
                 "share of clips at sigma >= 0.9 noised from the clip with its objects' shapes changed, the target "
                 "still the captioned clip (meant to teach the shape word over the shape in x_t; run 17 measured it "
                 "hurting: docs/shipped_model.md); 0: none")
      ->check(CLI::Range(0.0, 1.0));
  app.add_flag("!--no-caption-mixing", o.caption_mixing,
               "caption encoder tokens attend only to themselves, so each word says its own fact (kept in the export; "
               "with --init-from the folder's setting unless given)");
  app.add_option("--prediction", o.prediction, "what the DiT predicts: sample (x0) or velocity (Wan's)")
      ->check(CLI::IsMember({"velocity", "sample"}));
  app.add_option("--seed", o.seed, "seed of the weights and of every step's data and noise");
  app.add_option("--device", o.device, "auto, cpu or cuda[:N]")->envname("DITKIT_DEVICE");
  app.add_option("--precision", o.precision, "forward and backward in fp32 or bf16 (auto: bf16 on CUDA)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  app.add_option("--max-minutes", o.max_minutes, "checkpoint and stop before this much wall time (0: no limit)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints")->check(CLI::PositiveNumber);
  app.add_option("--log-every", o.log_every, "steps per loss.jsonl line")->check(CLI::PositiveNumber);
  app.add_option("--threads", o.threads, "CPU threads (0: ATen's default)")->check(CLI::NonNegativeNumber);
  app.add_option("--init-from", o.init_from,
                 "a new run starts from this shipped model folder's weights (e.g. an earlier --export), "
                 "the recipe's own (sla projections) included where the folder has them");
  app.add_option("--recipe", o.recipe,
                 "train through this attention recipe, e.g. sla:keep=0.05 (layer conditions only; \"\": dense); "
                 "its learned weights train too and export beside the model");
  app.add_option("--teacher", o.teacher,
                 "distil: this shipped model folder's prediction (dense attention, same x_t and caption) is the "
                 "target instead of the clip's, e.g. the model a sparse --recipe fine-tunes from");
  app.add_option("--distill", o.distill, "with --teacher, its share of the target (0: the clip's alone)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--export", export_dir, "after training, write the shipped model folder here (EMA weights, bf16)");
  app.footer("Resuming: the same command with --resume continues where the checkpoint left off and takes the\n"
             "same steps as an uninterrupted run. `--resume --steps 0 --export DIR` only exports.");
  CLI11_PARSE(app, argc, argv);

  try {
    take_init_folder_settings(app, o);
    ditkit::Trainer trainer(o);
    print_start(trainer);
    // On a terminal the progress line is redrawn in place; clear it before a log line.
    const char* clear = ::isatty(::fileno(stderr)) ? "\r\033[K" : "";
    const ditkit::TrainSummary summary = trainer.train([&](const ditkit::TrainLogLine& l) {
      std::fprintf(stderr, "%sstep %lld  loss %.4f  lr %.2e  grad norm %.3f  %.2f it/s  %.1f clips/s  %.0f s\n", clear,
                   (long long)l.step, l.loss, l.lr, l.grad_norm, l.it_s, l.clips_s, l.elapsed_s);
    });
    const int64_t done = summary.end_step - summary.start_step;
    std::fprintf(stderr, "dit-train: %lld steps (%lld..%lld) in %.1f s%s; checkpoint %s\n", (long long)done,
                 (long long)summary.start_step, (long long)summary.end_step, summary.seconds,
                 summary.out_of_time ? ", stopped by --max-minutes (continue with --resume)" : "",
                 trainer.checkpoint_path().c_str());
    if (!export_dir.empty()) {
      trainer.export_model(export_dir);
      std::fprintf(stderr, "dit-train: exported the EMA weights at step %lld to %s\n", (long long)trainer.step(),
                   export_dir.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dit-train: %s\n", e.what());
    return 1;
  }
  return 0;
}
