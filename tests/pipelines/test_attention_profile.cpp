// dit-profile's collection and report (pipelines/attention_profile.h) and its heat maps
// (pipelines/heatmap.h), on a tiny random Wan transformer; candidates' errors on random heads.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dit/atomic_file.h"
#include "dit/safetensors.h"
#include "dit/wan_transformer.h"
#include "pipelines/attention_profile.h"
#include "pipelines/heatmap.h"
#include "pipelines/png.h"
#include "sparse/attention_method.h"
#include "sparse/recipe_attention.h"
#include "tests/model_test_support.h"

namespace ditkit {
namespace {

namespace fs = std::filesystem;
using testing_support::throws_with;

TEST(AttentionProfile, StepsToProfile) {
  EXPECT_EQ(default_profile_steps(10), (std::vector<int>{0, 4, 9}));
  EXPECT_EQ(default_profile_steps(2), (std::vector<int>{0, 1}));
  EXPECT_EQ(default_profile_steps(1), (std::vector<int>{0}));
  EXPECT_EQ(check_profile_steps({5, 0, 5, 2}, 6), (std::vector<int>{0, 2, 5}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { check_profile_steps({0, 10}, 10); },
                                                 {"step 10", "past the last step", "10-step", "0..9"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { check_profile_steps({-1}, 10); }, {"step -1", "count from 0"}));
}

TEST(AttentionProfile, HeatColoursAndImage) {
  EXPECT_EQ(heat_colour(1.0), (std::array<uint8_t, 3>{253, 231, 37}));
  EXPECT_EQ(heat_colour(kHeatmapMinMass), (std::array<uint8_t, 3>{68, 1, 84}));
  EXPECT_EQ(heat_colour(0.0), heat_colour(kHeatmapMinMass));
  // A 2x3 grid of 4x8 maps, each all mass on its first key block.
  at::Tensor maps = at::zeros({2, 3, 4, 8});
  maps.select(3, 0).fill_(1.0);
  const at::Tensor image = draw_heatmap_grid(maps, "test grid", "L", "H");
  ASSERT_EQ(image.dim(), 3);
  EXPECT_EQ(image.size(2), 3);
  EXPECT_EQ(image.scalar_type(), at::kByte);
  // Each of the 6 tiles is 4x8 blocks scaled 12 times: one full-mass column of 4x12 pixels each,
  // plus the top of the colour bar.
  const at::Tensor yellow = (image == at::tensor({253, 231, 37}, at::kByte)).all(-1);
  EXPECT_GE(yellow.sum().item<int64_t>(), 6 * (4 * 12) * 12);
  // Large maps are pooled to at most kMaxTileCells cells a side: the image stays small.
  const at::Tensor big = draw_heatmap_grid(at::full({1, 1, 300, 600}, 1.0 / 600), "big", "L", "H");
  EXPECT_LT(big.size(1), 2 * kMaxTileCells + 200);
}

TEST(AttentionProfile, CandidatesAreSingleRules) {
  const std::vector<ProfileCandidate> c = parse_profile_candidates({"topk:k=4", "paro:order=wfh:k=4", "dense"});
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].name, "topk:k=4");
  EXPECT_EQ(c[0].rule.int_param("k"), 4);
  EXPECT_EQ(c[1].rule.method, "paro");
  EXPECT_EQ(parse_profile_candidates(default_profile_candidates()).size(), default_profile_candidates().size());
  EXPECT_TRUE(parse_profile_candidates({"none"}).empty());
  EXPECT_TRUE(throws_with<RecipeError>([] { parse_profile_candidates({"nosuch"}); }, {"unknown method 'nosuch'"}));
  EXPECT_TRUE(throws_with<RecipeError>([] { parse_profile_candidates({"topk:k=4,svg"}); },
                                       {"'topk:k=4,svg'", "not one method rule", "separate arguments"}));
  EXPECT_TRUE(throws_with<RecipeError>([] { parse_profile_candidates({"svg@layers<2"}); }, {"not one method rule"}));
}

// One attention call seen as RecipeAttention shows it to an observer, with dense as the run's method.
void observe_dense_call(AttentionProfiler& profiler, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const AttentionContext& ctx) {
  Plan dense;
  dense.dense = true;
  profiler.observe(q, k, ctx);
  profiler.observe_output(q, k, v, dense, execute_plan(q, k, v, dense), ctx);
}

TEST(AttentionProfile, CandidateErrorsShrinkAsTheyKeepMoreBlocks) {
  // 2x16x16 = 512 tokens: 4 query blocks of 128, 8 key blocks of 64. Without the diagonal forced,
  // topk:k=K keeps exactly K of 8 key blocks per query block, each set inside the next.
  at::manual_seed(0);
  const at::Tensor q = 2 * at::randn({2, 512, 3, 16}), k = at::randn({2, 512, 3, 16}), v = at::randn({2, 512, 3, 16});
  AttentionContext ctx;
  ctx.grid = LatentGrid{2, 16, 16};
  AttentionProfiler profiler({0}, BlockShape{128, 64},
                             parse_profile_candidates({"dense", "topk:k=1:diag=0", "topk:k=2:diag=0",
                                                       "topk:k=4:diag=0", "topk:k=8:diag=0", "topk:k=1000"}));
  observe_dense_call(profiler, q, k, v, ctx);
  ctx.step = 1;  // not a profiled step: nothing measured
  observe_dense_call(profiler, q, k, v, ctx);

  ASSERT_EQ(profiler.profiles().size(), 1u);
  const std::vector<HeadProfile>& heads = profiler.profiles()[0].heads;
  ASSERT_EQ(heads.size(), 3u);
  for (const HeadProfile& h : heads) {
    ASSERT_EQ(h.candidates.size(), 6u);
    EXPECT_LT(h.candidates[0].error, 1e-6);
    EXPECT_DOUBLE_EQ(h.candidates[0].density, 1.0);
    for (size_t c = 1; c < 4; ++c) {
      EXPECT_GE(h.candidates[c].error, h.candidates[c + 1].error) << "head " << h.head << " candidate " << c;
      EXPECT_DOUBLE_EQ(h.candidates[c].density, (1 << (c - 1)) / 8.0);
    }
    EXPECT_GT(h.candidates[1].error, h.candidates[3].error + 1e-3);
    EXPECT_LT(h.candidates[4].error, 1e-6);  // every block kept
    EXPECT_DOUBLE_EQ(h.candidates[4].density, 1.0);
    EXPECT_LT(h.candidates[5].error, 1e-6);
  }
}

WanConfig tiny_config() {
  WanConfig c;
  c.num_attention_heads = 2;
  c.attention_head_dim = 12;
  c.in_channels = c.out_channels = 4;
  c.text_dim = 16;
  c.freq_dim = 16;
  c.ffn_dim = 32;
  c.num_layers = 2;
  return c;
}

class AttentionProfileRun : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("ditkit-attention-profile-" + std::to_string(::getpid()))).string();
    remove_tree(dir_);
  }
  void TearDown() override { remove_tree(dir_); }
  std::string dir_;
};

TEST_F(AttentionProfileRun, ObservesChosenStepsAndWritesTheReport) {
  const WanTransformer model = WanTransformer::random(tiny_config(), 1, at::kCPU, at::kFloat);
  RecipeAttention attention(load_recipe("dense", attention_method_specs()));
  AttentionProfiler profiler({1, 2}, BlockShape{128, 64}, parse_profile_candidates({"dense", "topk:k=1:diag=0"}));
  attention.set_observer(&profiler);
  // Latents 4x8x16 patch to a 4x4x8 grid: 128 tokens, one query block and two key blocks.
  at::manual_seed(0);
  const at::Tensor latents = at::randn({2, 4, 4, 8, 16}), context = at::randn({2, 5, 16});
  for (int step = 0; step < 3; ++step)
    model.forward(latents, at::full({2}, 900.0 - 100 * step), context, &attention, step, 3);

  ASSERT_EQ(profiler.profiles().size(), 2u);
  const StepProfile& p = profiler.profiles()[0];
  EXPECT_EQ(p.step, 1);
  EXPECT_DOUBLE_EQ(p.timestep, 800.0);
  EXPECT_EQ(p.grid.tokens(), 128);
  ASSERT_EQ(p.block_maps.size(), 2u);
  EXPECT_EQ(p.block_maps[0].sizes(), (at::IntArrayRef{2, 1, 2}));
  EXPECT_TRUE(at::allclose(p.block_maps[1].sum(-1), at::ones({2, 1}), 1e-5, 1e-5));
  ASSERT_EQ(p.heads.size(), 4u);
  EXPECT_EQ(p.heads[3].layer, 1);
  EXPECT_EQ(p.heads[3].head, 1);
  for (const HeadProfile& h : p.heads) {
    EXPECT_GT(h.density[0], 0.0);
    EXPECT_LE(h.density[0], h.density[2]);
    EXPECT_LE(h.density[2], 1.0);
  }

  const ProfileRun run{"tiny", "a prompt", 7, 3, 5.0, 3.0, 4, 16, 32};
  write_attention_profile(dir_ + "/report", run, profiler);
  std::ifstream in(dir_ + "/report/profile.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["prompt"], "a prompt");
  EXPECT_EQ(j["seed"], 7);
  EXPECT_EQ(j["k_block"], 64);
  EXPECT_EQ(j["profiled_steps"], (std::vector<int>{1, 2}));
  ASSERT_EQ(j["profiles"].size(), 2u);
  EXPECT_EQ(j["profiles"][1]["step"], 2);
  EXPECT_EQ(j["profiles"][0]["grid"]["tokens"], 128);
  ASSERT_EQ(j["profiles"][0]["heads"].size(), 4u);
  const nlohmann::json& head = j["profiles"][0]["heads"][3];
  EXPECT_EQ(head["class"], to_string(p.heads[3].head_class));
  EXPECT_NEAR(head["density"]["90"].get<double>(), p.heads[3].density[0], 1e-6);
  EXPECT_NEAR(head["spatial_share"].get<double>(), p.heads[3].spatial_share, 1e-6);
  for (const nlohmann::json& step : j["profiles"])
    for (const nlohmann::json& h : step["heads"]) {
      ASSERT_EQ(h["candidates"].size(), 2u);
      EXPECT_NEAR(h["candidates"]["dense"]["error"].get<double>(), 0.0, 1e-6);
      EXPECT_EQ(h["candidates"]["dense"]["density"], 1.0);
      EXPECT_GT(h["candidates"]["topk:k=1:diag=0"]["error"].get<double>(), 0.0);  // one of two key blocks
      EXPECT_EQ(h["candidates"]["topk:k=1:diag=0"]["density"], 0.5);
    }
  EXPECT_EQ(j["candidates"][1]["name"], "topk:k=1:diag=0");
  EXPECT_EQ(j["candidates"][1]["recipe"], to_string(profiler.candidates()[1].rule));
  EXPECT_GT(read_png(dir_ + "/report/" + j["profiles"][1]["candidates_image"].get<std::string>()).size(0), 0);

  const at::Tensor image = read_png(dir_ + "/report/" + j["profiles"][0]["image"].get<std::string>());
  EXPECT_GT(image.size(0), 0);
  EXPECT_TRUE(fs::exists(dir_ + "/report/step_002.png"));
  SafetensorsCheckpoint maps = open_safetensors(dir_ + "/report/block_maps.safetensors");
  EXPECT_TRUE(at::equal(maps.get("step_1"), at::stack(p.block_maps)));
  std::ifstream md_in(dir_ + "/report/summary.md");
  std::stringstream md;
  md << md_in.rdbuf();
  EXPECT_NE(md.str().find("## Step 2"), std::string::npos);
  EXPECT_NE(md.str().find("| 1 | 1 | " + std::string(to_string(p.heads[3].head_class)) + " |"), std::string::npos);
  EXPECT_NE(md.str().find("| `topk:k=1:diag=0` |"), std::string::npos);
  EXPECT_NE(md.str().find("(step_002_candidates.png)"), std::string::npos);
}

TEST_F(AttentionProfileRun, OutputFolderProblemsAreNamed) {
  std::ofstream(dir_ + ".file") << "x";
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { prepare_profile_folder(dir_ + ".file"); },
                                              {dir_ + ".file", "not a folder"}));
  EXPECT_TRUE(throws_with<std::runtime_error>([&] { prepare_profile_folder(dir_ + ".file/sub"); },
                                              {"cannot create folder", dir_ + ".file/sub"}));
  fs::remove(dir_ + ".file");
  prepare_profile_folder(dir_ + "/a/b");
  EXPECT_TRUE(fs::is_directory(dir_ + "/a/b"));
}

}  // namespace
}  // namespace ditkit
