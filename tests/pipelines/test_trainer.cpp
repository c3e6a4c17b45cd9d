#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "dit/atomic_file.h"
#include "dit/safetensors.h"
#include "dit/wan_transformer.h"
#include "pipelines/device_flag.h"
#include "pipelines/shipped_model.h"
#include "pipelines/text_to_video.h"
#include "pipelines/trainer.h"
#include "sparse/recipe_attention.h"
#include "tests/model_test_support.h"

namespace ditkit {
namespace {

namespace fs = std::filesystem;
using testing_support::throws_with;

// A folder per test, removed afterwards.
class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("ditkit-trainer-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
            std::to_string(::getpid()));
    remove_tree(dir_.string());
    fs::create_directories(dir_);
    threads_ = at::get_num_threads();
  }
  void TearDown() override {
    remove_tree(dir_.string());
    at::set_num_threads(threads_);  // the trainer sets the process-wide count; later tests keep theirs
  }

  // The tiny model on the CPU, quick enough for a few dozen steps in seconds.
  TrainOptions tiny(const std::string& run) const {
    TrainOptions o;
    o.out_dir = (dir_ / run).string();
    o.preset = "tiny";
    o.device = "cpu";
    o.batch = 4;
    o.steps = 8;
    o.lr = 2e-3;
    o.warmup = 2;
    o.log_every = 1;
    o.seed = 7;
    o.threads = 1;  // this model's ops are too small to gain from threads, and lose much on a busy machine
    return o;
  }

  // Trains `o` one step; then resuming with `change` made is refused naming `words` (the setting
  // defines the run), and resuming as the run was goes on from step 1.
  static void expect_resume_refuses(TrainOptions o, const std::function<void(TrainOptions&)>& change,
                                    const std::vector<std::string>& words) {
    o.steps = 1;
    Trainer(o).train();
    o.resume = true;
    TrainOptions changed = o;
    change(changed);
    EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(changed); }, words));
    EXPECT_EQ(Trainer(o).step(), 1);
  }

  fs::path dir_;
  int threads_ = 0;
};

double mean(const std::vector<double>& v, size_t from, size_t to) {
  return std::accumulate(v.begin() + long(from), v.begin() + long(to), 0.0) / double(to - from);
}

TEST_F(TrainerTest, LossFallsOnTheTinyModel) {
  TrainOptions o = tiny("smoke");
  o.steps = 60;
  o.batch = 8;
  o.warmup = 5;
  std::vector<double> losses;
  Trainer trainer(o);
  const TrainSummary summary = trainer.train([&](const TrainLogLine& l) { losses.push_back(l.loss); });
  ASSERT_EQ(summary.end_step, 60);
  ASSERT_EQ(losses.size(), 60u);
  const double first = mean(losses, 0, 10), last = mean(losses, 50, 60);
  std::printf("tiny model: mean loss of steps 1-10 %.4f, of steps 51-60 %.4f\n", first, last);
  EXPECT_LT(last, 0.8 * first);

  // The log holds one line per step, and the checkpoint the final step.
  std::ifstream log(trainer.loss_log_path());
  std::string line;
  int lines = 0;
  while (std::getline(log, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j.at("step").get<int64_t>(), ++lines);
    for (const char* key : {"loss", "lr", "grad_norm", "it_s", "clips_s", "elapsed_s"}) EXPECT_TRUE(j.contains(key));
  }
  EXPECT_EQ(lines, 60);
  EXPECT_TRUE(fs::exists(trainer.checkpoint_path()));
}

TEST(ObjectLossWeights, WeighEachLatentCellByItsMostCoveredPixel) {
  at::Tensor coverage = at::zeros({2, 1, 8, 8, 8});
  coverage[0][0][5][1][6] = 0.5;  // one pixel, half covered: latent cell (1, 0, 1) of clip 0
  coverage[1].fill_(1);
  const at::Tensor w = object_loss_weights(coverage, {4, 4, 4}, 3.0);
  ASSERT_EQ(w.sizes(), (std::vector<int64_t>{2, 1, 2, 2, 2}));
  at::Tensor want = at::ones({2, 1, 2, 2, 2});
  want[0][0][1][0][1] = 2.5;
  want[1].fill_(4);
  EXPECT_TRUE(at::allclose(w, want)) << w;
  EXPECT_TRUE(at::equal(object_loss_weights(coverage, {4, 4, 4}, 0.0), at::ones({2, 1, 2, 2, 2})));
}

TEST_F(TrainerTest, ObjectWeightChangesTheLossAndDefinesTheRun) {
  TrainOptions o = tiny("plain");
  const double plain = Trainer(o).train_step().item<double>();
  o = tiny("weighted");
  o.object_weight = 4;
  const double weighted = Trainer(o).train_step().item<double>();
  EXPECT_TRUE(std::isfinite(weighted));
  EXPECT_GT(std::abs(weighted - plain), 1e-4 * plain) << "same batch, same weights: only the weighting differs";

  expect_resume_refuses(o, [](TrainOptions& c) { c.object_weight = 0; }, {"object_weight", "4"});
}

// 800 clips at each noise level: below kShapeSwapMinSigma nothing changes; at and above it about
// the shape_swap share of clips come back with other shapes, and nothing else changed.
TEST_F(TrainerTest, ShapeSwapNoisesFromOtherShapesAboveItsSigmaAndDefinesTheRun) {
  TrainOptions o = tiny("shape-swap");
  o.shape_swap = 0.5;
  int swapped = 0, draws = 0;
  for (int64_t step = 0; step < 100; ++step)
    for (int64_t i = 0; i < 8; ++i) {
      const ClipFacts facts = sample_facts(uint64_t(1000 + step * 8 + i), Split::kTrain);
      for (double sigma : {0.5, 0.89, kShapeSwapMinSigma, 0.97, 1.0}) {
        const ClipFacts got = noised_facts(o, step, i, facts, sigma);
        ASSERT_EQ(got.objects.size(), facts.objects.size());
        EXPECT_EQ(got.background, facts.background);
        EXPECT_EQ(got.texture, facts.texture);
        bool changed = false;
        for (size_t k = 0; k < facts.objects.size(); ++k) {
          const ObjectFacts &a = facts.objects[k], &b = got.objects[k];
          EXPECT_EQ(b.colour, a.colour);
          EXPECT_EQ(b.direction, a.direction);
          EXPECT_EQ(b.speed, a.speed);
          if (b.shape != a.shape) {
            changed = true;
            EXPECT_FALSE(in_held_out_pair(b)) << caption(got);
          }
        }
        if (sigma < kShapeSwapMinSigma) {
          EXPECT_FALSE(changed) << "sigma " << sigma;
        } else {
          swapped += changed;
          ++draws;
        }
        o.shape_swap = 0;
        EXPECT_EQ(caption(noised_facts(o, step, i, facts, sigma)), caption(facts));
        o.shape_swap = 0.5;
      }
    }
  EXPECT_NEAR(double(swapped) / draws, 0.5, 0.07);

  // The loss of one step with and without: the batch has clips at sigma >= 0.9 to swap.
  o.shape_swap = 1;
  bool any = false;
  for (int64_t i = 0; i < o.batch; ++i) any |= training_sigma(o, 0, i) >= kShapeSwapMinSigma;
  ASSERT_TRUE(any);
  const double with = Trainer(o).train_step().item<double>();
  TrainOptions plain = tiny("no-swap");
  const double without = Trainer(plain).train_step().item<double>();
  EXPECT_TRUE(std::isfinite(with));
  // Same weights and batch, bit for bit, but for the swapped clips' x_t and target; objects are a
  // few percent of a clip, so the losses differ only a little.
  EXPECT_NE(with, without);

  expect_resume_refuses(o, [](TrainOptions& c) { c.shape_swap = 0.5; }, {"shape_swap", "1"});
}

TEST_F(TrainerTest, FactDropoutLeavesWordsOutOfTheKeptCaptionsAndDefinesTheRun) {
  TrainOptions o = tiny("fact-dropout");
  o.batch = 64;
  o.caption_dropout = 0.25;
  const std::vector<std::string> whole = training_captions(o, 3);
  o.fact_dropout = 0.5;
  const std::vector<std::string> dropped = training_captions(o, 3);
  ASSERT_EQ(whole.size(), 64u);
  ASSERT_EQ(dropped.size(), 64u);
  int empty = 0, shortened = 0;
  for (size_t i = 0; i < whole.size(); ++i) {
    ASSERT_EQ(whole[i].empty(), dropped[i].empty()) << "caption dropout draws as before";
    if (whole[i].empty()) {
      ++empty;
      continue;
    }
    EXPECT_NO_THROW(parse_caption(whole[i])) << whole[i];
    EXPECT_LE(dropped[i].size(), whole[i].size());
    shortened += dropped[i].size() < whole[i].size();
  }
  EXPECT_GT(empty, 4);
  EXPECT_GT(shortened, 40) << "at 0.5 nearly every kept caption loses a word";
  EXPECT_EQ(training_captions(o, 3), dropped);
  EXPECT_NE(training_captions(o, 4), dropped);

  o.batch = 4;
  expect_resume_refuses(o, [](TrainOptions& c) { c.fact_dropout = 0; }, {"fact_dropout", "0.5"});
}

// Shares of 6,400 draws (200 steps of 32 clips) at shift 48, the shipped model's.
TEST_F(TrainerTest, SigmaSamplingSetsWhereTrainingLandsAndDefinesTheRun) {
  TrainOptions o = tiny("sigma-sampling");
  o.shift = 48;
  o.pure_noise = 0.25;
  auto shares = [&] {
    int pure = 0, below_07 = 0, below_09 = 0, n = 0;
    for (int64_t step = 0; step < 200; ++step)
      for (int64_t i = 0; i < 32; ++i, ++n) {
        const double sigma = training_sigma(o, step, i);
        EXPECT_GT(sigma, 0);
        EXPECT_LE(sigma, 1);
        pure += sigma == 1.0;
        below_07 += sigma < 0.7;
        below_09 += sigma < 0.9;
      }
    return std::array<double, 3>{double(pure) / n, double(below_07) / n, double(below_09) / n};
  };
  // 0.75 of the clips x P(shifted t < 0.7 or 0.9): logit-normal 0.0013 and 0.047, uniform
  // 0.046 and 0.158 (t < 0.7 / (48 - 47 * 0.7) and t < 0.9 / (48 - 47 * 0.9)).
  const std::array<double, 3> logit_normal = shares();
  EXPECT_NEAR(logit_normal[0], 0.25, 0.02);
  EXPECT_LT(logit_normal[1], 0.004);
  EXPECT_NEAR(logit_normal[2], 0.75 * 0.047, 0.01);
  o.sigma_sampling = "uniform";
  const std::array<double, 3> uniform = shares();
  EXPECT_EQ(uniform[0], logit_normal[0]) << "the pure-noise draw does not depend on the sampling";
  EXPECT_NEAR(uniform[1], 0.75 * 0.046, 0.01);
  EXPECT_NEAR(uniform[2], 0.75 * 0.158, 0.015);

  o.batch = 4;
  expect_resume_refuses(o, [](TrainOptions& c) { c.sigma_sampling = "logit-normal"; }, {"sigma_sampling", "uniform"});
}

TEST_F(TrainerTest, NoCaptionMixingReachesTheExportAndDefinesTheRun) {
  TrainOptions o = tiny("no-mixing");
  o.caption_mixing = false;
  o.batch = 2;
  o.steps = 1;
  Trainer trainer(o);
  EXPECT_FALSE(trainer.preset().captions.token_mixing);
  trainer.train();
  const std::string folder = (dir_ / "model").string();
  trainer.export_model(folder);
  EXPECT_FALSE(CaptionEncoder::load(folder + "/caption_encoder", at::kCPU, at::kFloat).config().token_mixing);
  o.resume = true;
  o.caption_mixing = true;
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(o); }, {"caption_mixing"}));
  o.caption_mixing = false;
  EXPECT_EQ(Trainer(o).step(), 1);
}

TEST_F(TrainerTest, ResumeGivesTheWeightsOfAnUninterruptedRun) {
  TrainOptions whole = tiny("whole");
  Trainer straight(whole);
  straight.train();

  TrainOptions parts = tiny("parts");
  {
    Trainer first(parts);
    for (int i = 0; i < 3; ++i) first.train_step();
    first.save_checkpoint();  // as a run stopped by its time budget after step 3 would leave it
  }
  parts.resume = true;
  Trainer second(parts);
  ASSERT_EQ(second.step(), 3);
  second.train();
  ASSERT_EQ(second.step(), 8);

  const auto a = straight.parameters(), b = second.parameters();
  const auto ea = straight.ema_parameters(), eb = second.ema_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
    EXPECT_TRUE(at::equal(ea[i].second, eb[i].second)) << "EMA " << ea[i].first;
  }
}

TEST_F(TrainerTest, EmaIsTheDecayedAverageOfTheWeights) {
  TrainOptions o = tiny("ema");
  o.ema_decay = 0.5;  // small, so that each step moves the average visibly
  Trainer trainer(o);
  std::vector<at::Tensor> expected;
  for (const auto& [name, t] : trainer.parameters()) expected.push_back(t.detach().to(at::kDouble));
  for (int64_t step = 1; step <= 4; ++step) {
    trainer.train_step();
    const double d = ema_decay(o, step);
    const auto params = trainer.parameters();
    for (size_t i = 0; i < params.size(); ++i)
      expected[i] = d * expected[i] + (1 - d) * params[i].second.detach().to(at::kDouble);
  }
  EXPECT_DOUBLE_EQ(ema_decay(o, 1), 2.0 / 11.0);  // the early steps use the lower (1 + n) / (10 + n)
  EXPECT_DOUBLE_EQ(ema_decay(o, 100), 0.5);
  const auto params = trainer.parameters(), ema = trainer.ema_parameters();
  double largest_gap = 0;
  for (size_t i = 0; i < ema.size(); ++i) {
    EXPECT_EQ(ema[i].first, params[i].first);
    EXPECT_TRUE(at::allclose(ema[i].second.to(at::kDouble), expected[i], 1e-5, 1e-7)) << ema[i].first;
    largest_gap = std::max(largest_gap, (ema[i].second - params[i].second).abs().max().item<double>());
  }
  EXPECT_GT(largest_gap, 0);  // the average lags the weights
}

TEST_F(TrainerTest, ExportWritesALoadableShippedFolderFromTheEma) {
  TrainOptions o = tiny("export");
  o.steps = 2;
  Trainer trainer(o);
  trainer.train();
  const std::string folder = (dir_ / "model").string();
  trainer.export_model(folder);
  ASSERT_TRUE(is_shipped_model_folder(folder));
  EXPECT_EQ(read_shipped_model_index(folder).defaults.negative_prompt, "");
  const WanTransformer loaded = WanTransformer::load(folder + "/transformer", at::kCPU, at::kFloat);
  at::Tensor saved, trained;
  for (const auto& [name, t] : loaded.named_parameters())
    if (name == "patch_embedding.weight") saved = t;
  for (const auto& [name, t] : trainer.ema_parameters())
    if (name == "transformer.patch_embedding.weight") trained = t;
  ASSERT_TRUE(saved.defined() && trained.defined());
  EXPECT_TRUE(at::equal(trained.to(at::kBFloat16).to(at::kFloat), saved));
}

// Fine-tuning through a recipe: the loss falls, the method's projections are trained weights
// with EMA, they go into the checkpoint (resume needs the same recipe) and export beside the model.
// The tiny model has 8 tokens, one key block, so sla's complement is empty here and the
// projections get zero gradients: this is the plumbing; tests/sparse/test_sla.cpp checks the
// gradients themselves.
TEST_F(TrainerTest, TrainsThroughARecipeAndExportsItsWeights) {
  TrainOptions o = tiny("sla");
  o.steps = 40;
  o.batch = 8;
  o.warmup = 5;
  o.recipe = "sla:keep=0.1";
  std::vector<double> losses;
  Trainer trainer(o);
  std::vector<std::string> attention_names;
  for (const auto& [name, t] : trainer.parameters())
    if (name.rfind("attention.", 0) == 0) attention_names.push_back(name);
  EXPECT_EQ(attention_names, (std::vector<std::string>{"attention.blocks.0.attn1.sla_proj.weight",
                                                       "attention.blocks.1.attn1.sla_proj.weight"}));
  trainer.train([&](const TrainLogLine& l) { losses.push_back(l.loss); });
  ASSERT_EQ(losses.size(), 40u);
  const double first = mean(losses, 0, 10), last = mean(losses, 30, 40);
  std::printf("tiny model through sla:keep=0.1: mean loss of steps 1-10 %.4f, of steps 31-40 %.4f\n", first, last);
  EXPECT_LT(last, 0.8 * first);

  const std::string folder = (dir_ / "sla_model").string();
  trainer.export_model(folder);
  SafetensorsFile exported(folder + "/" + kAttentionWeightsFile);
  EXPECT_EQ(exported.keys(), (std::vector<std::string>{"blocks.0.attn1.sla_proj.weight",
                                                       "blocks.1.attn1.sla_proj.weight"}));
  EXPECT_EQ(exported.get("blocks.0.attn1.sla_proj.weight").sizes(), (std::vector<int64_t>{16, 16}));
  // Generating from the folder hands them to the recipe.
  TextToVideo model = TextToVideo::load(folder, at::kCPU, at::kFloat);
  RecipeAttention attention(parse_recipe("sla:keep=0.1", attention_method_specs()));
  TextToVideoOptions options = model.default_options();
  options.prompt = "a red circle moves left on a blue background";
  options.sampling.steps = 1;
  model.generate(options, &attention);
  for (const auto& [key, w] : attention.weights(2, 16, at::kCPU)) EXPECT_TRUE(at::equal(w, exported.get(key))) << key;

  o.resume = true;
  o.recipe.clear();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(o); }, {"recipe", "sla:keep=0.1"}));
  o = tiny("sla_steps");
  o.recipe = "dense@steps<2,sla";
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(o); }, {"--recipe", "step condition"}));
}

// --init-from a tuned folder carries the recipe's weights too (fine-tuning goes on from them), and
// refuses one of another shape.
TEST_F(TrainerTest, InitFromCarriesTheRecipesWeights) {
  TrainOptions o = tiny("tuned");
  o.steps = 1;
  o.recipe = "sla:keep=0.1";
  Trainer first(o);
  const std::string folder = (dir_ / "tuned_model").string();
  first.export_model(folder);
  // The tiny model's projections get no gradient (one key block), so write tuned ones by hand.
  const std::string file = folder + "/" + kAttentionWeightsFile;
  std::map<std::string, at::Tensor> tuned = {{"blocks.0.attn1.sla_proj.weight", at::randn({16, 16})},
                                             {"blocks.1.attn1.sla_proj.weight", at::randn({16, 16})}};
  save_safetensors(file, tuned, {});

  TrainOptions next = tiny("from_tuned");
  next.recipe = "sla:keep=0.1";
  next.init_from = folder;
  Trainer second(next);
  int carried = 0;
  for (const auto& list : {second.parameters(), second.ema_parameters()})
    for (const auto& [name, t] : list)
      if (name.rfind("attention.", 0) == 0) {
        EXPECT_TRUE(at::equal(t, tuned.at(name.substr(10)))) << name;
        ++carried;
      }
  EXPECT_EQ(carried, 4);

  // Another recipe has no use for them; the model's own weights still load.
  next = tiny("from_tuned_topk");
  next.init_from = folder;
  EXPECT_NO_THROW(Trainer t(next));

  tuned["blocks.1.attn1.sla_proj.weight"] = at::zeros({8, 8});
  save_safetensors(file, tuned, {});
  next = tiny("from_bad");
  next.recipe = "sla:keep=0.1";
  next.init_from = folder;
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(next); },
                                              {"--init-from", kAttentionWeightsFile, "blocks.1.attn1.sla_proj.weight", "[8, 8]"}));
}

// The path CUDA takes by default (a bf16 copy for forward and backward, fp32 masters), on the CPU.
TEST_F(TrainerTest, Bf16ComputeUpdatesTheFp32Masters) {
  TrainOptions o = tiny("bf16");
  o.precision = "bf16";
  o.steps = 3;
  Trainer trainer(o);
  ASSERT_EQ(trainer.compute_dtype(), at::kBFloat16);
  std::vector<at::Tensor> before;
  for (const auto& [name, t] : trainer.parameters()) before.push_back(t.detach().clone());
  std::vector<double> losses;
  trainer.train([&](const TrainLogLine& l) { losses.push_back(l.loss); });
  ASSERT_EQ(losses.size(), 3u);
  for (double l : losses) EXPECT_TRUE(std::isfinite(l));
  const auto after = trainer.parameters();
  int moved = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].second.scalar_type(), at::kFloat) << after[i].first;
    moved += !at::equal(after[i].second, before[i]);
  }
  EXPECT_EQ(moved, int(after.size()));  // every weight gets a gradient and an update
}

// Both targets train, and the export tells the sampler which one the DiT predicts.
TEST_F(TrainerTest, TheExportSaysWhatTheModelPredicts) {
  for (const char* prediction : {"velocity", "sample"}) {
    TrainOptions o = tiny(std::string("predicts-") + prediction);
    o.prediction = prediction;
    o.steps = 2;
    Trainer trainer(o);
    std::vector<double> losses;
    trainer.train([&](const TrainLogLine& l) { losses.push_back(l.loss); });
    for (double l : losses) EXPECT_TRUE(std::isfinite(l)) << prediction;
    const std::string folder = (dir_ / (std::string("model-") + prediction)).string();
    trainer.export_model(folder);
    EXPECT_EQ(read_shipped_model_index(folder).prediction, prediction);
  }
}

// A run can start from an export: the weights are the export's, the EMA starts there too.
TEST_F(TrainerTest, InitFromAnExportStartsFromItsWeights) {
  TrainOptions o = tiny("first");
  o.steps = 3;
  Trainer first(o);
  first.train();
  const std::string folder = (dir_ / "model").string();
  first.export_model(folder);

  TrainOptions next = tiny("next");
  next.seed = 8;
  next.init_from = folder;
  Trainer second(next);
  const auto ema = first.ema_parameters(), params = second.parameters(), second_ema = second.ema_parameters();
  ASSERT_EQ(ema.size(), params.size());
  for (size_t i = 0; i < ema.size(); ++i) {
    // Stored as bf16, except the modules Wan keeps in fp32.
    const at::Tensor stored = ema[i].second.to(at::kBFloat16).to(at::kFloat);
    EXPECT_TRUE(at::equal(params[i].second, stored) || at::equal(params[i].second, ema[i].second)) << ema[i].first;
    EXPECT_TRUE(at::equal(second_ema[i].second, params[i].second)) << ema[i].first;
  }
  second.train();

  TrainOptions shapes = tiny("wrong");
  shapes.preset = "shapes";
  shapes.init_from = folder;
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(shapes); }, {"--init-from", "shape", "shapes"}));
}

// Deepening: a 2-block export started at 4 blocks computes what it did (the new blocks are
// identities), its blocks keep their weights in their new places (0 -> 0, 1 -> 2), the new ones
// are copies of the block before them with zero outputs, it trains and exports 4 blocks; fewer
// layers than the folder's are refused, and a resume must keep the depth.
TEST_F(TrainerTest, InitFromAShallowerExportAddsIdentityBlocks) {
  TrainOptions o = tiny("shallow");
  o.steps = 3;
  Trainer first(o);
  first.train();
  const std::string shallow = (dir_ / "shallow-model").string(), deep = (dir_ / "deep-model").string();
  first.export_model(shallow);

  TrainOptions next = tiny("deep");
  next.seed = 8;
  next.layers = 4;
  next.init_from = shallow;
  Trainer second(next);
  EXPECT_EQ(second.preset().transformer.num_layers, 4);
  second.export_model(deep);  // the EMA starts at the initial weights
  const WanTransformer before = WanTransformer::load(shallow + "/transformer", at::kCPU, at::kFloat);
  const WanTransformer after = WanTransformer::load(deep + "/transformer", at::kCPU, at::kFloat);
  ASSERT_EQ(after.config().num_layers, 4);
  std::map<std::string, at::Tensor> weights;
  for (const auto& [name, t] : after.named_parameters()) weights[name] = t;
  for (const auto& [name, t] : before.named_parameters()) {
    std::string moved = name;
    if (name.rfind("blocks.1.", 0) == 0) moved.replace(0, 8, "blocks.2");  // 1 * 4 / 2
    ASSERT_TRUE(weights.count(moved)) << moved;
    EXPECT_TRUE(at::equal(weights[moved], t)) << name;
  }
  for (const std::string added : {"1", "3"}) {
    const std::string block = "blocks." + added + ".";
    const std::string previous = "blocks." + std::to_string(std::stoi(added) - 1) + ".";
    for (const std::string output : {"attn1.to_out.0", "attn2.to_out.0", "ffn.net.2"})
      for (const std::string part : {".weight", ".bias"})
        EXPECT_EQ(weights[block + output + part].abs().max().item<float>(), 0.f) << block + output + part;
    for (const std::string input : {"attn1.to_q.weight", "attn2.to_k.weight", "ffn.net.0.proj.weight", "norm2.weight"})
      EXPECT_TRUE(at::equal(weights[block + input], weights[previous + input])) << block + input;
  }

  const at::Tensor latents = at::randn({1, 192, 2, 4, 4}, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor timestep = at::full({1}, 700.f), context = at::randn({1, 5, before.config().text_dim});
  const at::Tensor a = before.forward(latents, timestep, context), b = after.forward(latents, timestep, context);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-5 * (1 + a.abs().max().item<double>()));
  second.train();
  EXPECT_EQ(second.step(), next.steps);

  TrainOptions fewer = tiny("fewer");
  fewer.layers = 1;
  fewer.init_from = shallow;
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(fewer); }, {"--init-from", "2 layers", "1"}));
  expect_resume_refuses(tiny("depth"), [](TrainOptions& c) { c.layers = 3; }, {"layers"});
  TrainOptions negative = tiny("negative");
  negative.layers = -1;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(negative); }, {"--layers", "-1"}));
}

// Distillation: a student that is its teacher (started from its folder, dense attention) has
// nothing to learn, so its loss is zero where the clips' loss is not; with distill 0 the teacher
// changes nothing; a student of other weights gets a loss of its own. Bad teachers are refused.
TEST_F(TrainerTest, DistillationTargetsTheTeachersPrediction) {
  TrainOptions o = tiny("teacher");
  o.steps = 3;
  Trainer first(o);
  first.train();
  const std::string folder = (dir_ / "teacher_model").string();
  first.export_model(folder);

  auto first_loss = [&](const std::string& run, const std::string& teacher, double distill, bool init) {
    TrainOptions s = tiny(run);
    s.seed = 8;
    s.teacher = teacher;
    s.distill = distill;
    if (init) s.init_from = folder;
    Trainer student(s);
    return student.train_step().item<double>();
  };
  const double data = first_loss("data", "", 1, true);
  EXPECT_GT(data, 0.01);
  EXPECT_LT(first_loss("self", folder, 1, true), 1e-10);
  EXPECT_DOUBLE_EQ(first_loss("none", folder, 0, true), data);
  // Half-way between the clip's target and the student's own prediction: a quarter of the loss.
  EXPECT_NEAR(first_loss("mixed", folder, 0.5, true), data / 4, 1e-4 * data);
  const double random_student = first_loss("random", folder, 1, false);
  EXPECT_GT(random_student, 1e-3);
  EXPECT_TRUE(std::isfinite(random_student));

  TrainOptions bad = tiny("bad_teacher");
  bad.teacher = (dir_ / "nowhere").string();
  EXPECT_TRUE(
      throws_with<std::runtime_error>([&] { Trainer t(bad); }, {"--teacher", "nowhere", "not a shipped model"}));
  bad.teacher = folder;
  bad.distill = 1.5;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(bad); }, {"--distill", "[0, 1]"}));
  bad.teacher.clear();
  bad.distill = 0.5;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(bad); }, {"--distill", "--teacher"}));
  bad = tiny("wrong_preset");
  bad.preset = "shapes";
  bad.teacher = folder;
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(bad); }, {"--teacher", "preset 'shapes' needs"}));
}

// --device as every tool and dit-train read it: the forms it takes, and errors naming the value.
TEST(DeviceFlag, NamesTheDeviceOrTheProblem) {
  EXPECT_EQ(device_from_flag("cpu"), at::Device(at::kCPU));
  EXPECT_EQ(device_from_flag("auto"), at::hasCUDA() ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU));
  for (const char* bad : {"tpu", "", "cuda:x", "mps", "cpu0"})
    EXPECT_TRUE(throws_with<std::invalid_argument>([&] { device_from_flag(bad); },
                                                   {"--device: '" + std::string(bad) + "'", "auto, cpu or cuda[:N]"}))
        << bad;
  if (at::hasCUDA()) {
    EXPECT_EQ(device_from_flag("cuda"), at::Device(at::kCUDA, 0));
    EXPECT_TRUE(throws_with<std::invalid_argument>([] { device_from_flag("cuda:99"); }, {"--device: 'cuda:99'", "CUDA GPU"}));
  } else {
    for (const char* gpu : {"cuda", "cuda:0", "cuda:99"})
      EXPECT_TRUE(throws_with<std::invalid_argument>([&] { device_from_flag(gpu); }, {"--device", gpu, "no usable CUDA GPU"}))
          << gpu;
  }
}

TEST_F(TrainerTest, BadInputGivesClearErrors) {
  TrainOptions o = tiny("errors");
  o.out_dir.clear();
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(o); }, {"--out", "required"}));

  o = tiny("errors");
  o.preset = "huge";
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(o); }, {"huge", "tiny", "shapes"}));

  // A run folder under a file cannot be created.
  std::ofstream(dir_ / "a_file") << "x";
  o = tiny("errors");
  o.out_dir = (dir_ / "a_file" / "run").string();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(o); }, {"a_file", "cannot create"}));

  o = tiny("taken");
  o.steps = 1;
  Trainer(o).train();
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(o); }, {"checkpoint.safetensors", "--resume"}));

  o.resume = true;
  o.batch = 3;
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(o); }, {"batch = 4", "not 3", "--out"}));
  o.batch = 4;
  o.seed = 8;
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(o); }, {"seed = 7", "not 8"}));
  o.seed = 7;
  o.preset = "shapes";
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { Trainer t(o); }, {"preset = \"tiny\"", "not \"shapes\""}));

  o = tiny("options");
  o.lr = 0;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(o); }, {"--lr"}));
  o = tiny("options");
  o.prediction = "noise";
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(o); }, {"--prediction", "noise"}));
  o = tiny("options");
  o.pure_noise = 1.5;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(o); }, {"--pure-noise", "[0, 1]"}));
  o = tiny("options");
  o.shape_swap = -0.1;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(o); }, {"--shape-swap", "[0, 1]"}));
  o = tiny("options");
  o.object_weight = -1;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(o); }, {"--object-weight", ">= 0"}));
  o = tiny("options");
  o.fact_dropout = -0.1;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(o); }, {"--fact-dropout", "[0, 1]"}));
  o = tiny("options");
  o.sigma_sampling = "gaussian";
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { Trainer t(o); }, {"--sigma-sampling", "gaussian", "uniform"}));
}

TEST_F(TrainerTest, TheTimeBudgetStopsWithACheckpoint) {
  TrainOptions o = tiny("budget");
  o.steps = 1000000;
  o.max_minutes = 0.02;  // 1.2 s
  Trainer trainer(o);
  const TrainSummary summary = trainer.train();
  EXPECT_TRUE(summary.out_of_time);
  EXPECT_GT(summary.end_step, 0);
  EXPECT_LT(summary.end_step, o.steps);
  EXPECT_LT(summary.seconds, 1.2);
  o.resume = true;
  EXPECT_EQ(Trainer(o).step(), summary.end_step);
}

TEST(LearningRate, WarmsUpThenFollowsTheCosine) {
  TrainOptions o;
  o.lr = 1e-3;
  o.min_lr = 1e-4;
  o.warmup = 9;
  o.steps = 109;
  EXPECT_DOUBLE_EQ(learning_rate(o, 0), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(o, 8), 9e-4);
  EXPECT_DOUBLE_EQ(learning_rate(o, 9), 1e-3);
  EXPECT_NEAR(learning_rate(o, 59), 5.5e-4, 1e-12);
  EXPECT_DOUBLE_EQ(learning_rate(o, 109), 1e-4);
  o.schedule = "constant";
  EXPECT_DOUBLE_EQ(learning_rate(o, 80), 1e-3);
}

}  // namespace
}  // namespace ditkit
