// dit-ab's comparison (pipelines/ab_compare.h) and its charts (pipelines/charts.h), on a tiny
// random shipped model.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dit/atomic_file.h"
#include "ditkit_config.h"
#include "pipelines/ab_compare.h"
#include "pipelines/charts.h"
#include "pipelines/png.h"
#include "pipelines/shape_clips.h"
#include "tests/model_test_support.h"

namespace fs = std::filesystem;

namespace ditkit {
namespace {

using testing_support::throws_with;

TEST(Charts, DrawPngsOfTheChartSize) {
  const at::Tensor line = draw_line_chart({30.5, INFINITY, 28.0, 31.25}, {"PSNR", "FRAME", "DB"});
  EXPECT_EQ(line.sizes(), (std::vector<int64_t>{kChartHeight, kChartWidth, 3}));
  EXPECT_EQ(line.scalar_type(), at::kByte);
  const at::Tensor bars = draw_bar_chart({0.1, 0.0, 0.3}, {"ERROR", "LAYER", ""});
  EXPECT_EQ(bars.sizes(), (std::vector<int64_t>{kChartHeight, kChartWidth, 3}));
  // The series colour is drawn: bars fill a good part of the plot, the line at least its dots.
  auto series_pixels = [](const at::Tensor& image) {
    return (image == at::tensor({31, 119, 180}, at::kByte)).all(-1).sum().item<int64_t>();
  };
  EXPECT_GT(series_pixels(bars), 10000);
  EXPECT_GT(series_pixels(line), 4 * 20);
  // One value, or nothing finite, still draws; PNG round trip keeps the size.
  EXPECT_EQ(decode_png(encode_png(draw_line_chart({INFINITY}, {"A", "B", "C"}))).sizes(), line.sizes());
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { draw_bar_chart({-1.0}, {}); }, {">= 0"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { draw_line_chart({}, {}); }, {"no values"}));
}

class AbCompare : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (fs::temp_directory_path() / ("ditkit-ab-" + std::to_string(::getpid()))).string();
    remove_tree(root_);
    fs::create_directories(root_ + "/out");
    testing_support::write_tiny_shipped_model(root_ + "/model", testing_support::tiny_index(), caption_vocabulary());
  }
  void TearDown() override { remove_tree(root_); }

  // 128x128, 8 frames: 2x16x16 = 512 tokens after the codec and the DiT's patches, so 4 query
  // blocks and 8 key blocks, room for a sparse recipe to leave blocks out.
  AbOptions options(TextToVideo& pipeline, const std::string& recipe) const {
    AbOptions o;
    o.recipe = recipe;
    o.prompts = {"A red circle moves slowly left on a blue background."};  // a caption: adherence is checked
    o.generation = pipeline.default_options();
    o.generation.width = o.generation.height = 128;
    o.adherence = true;
    return o;
  }

  std::string root_;
};

TEST_F(AbCompare, DenseAgainstDenseIsIdentical) {
  TextToVideo pipeline = TextToVideo::load(root_ + "/model", at::kCPU, at::kFloat);
  std::vector<std::string> lines;
  const std::vector<PromptComparison> r =
      compare_recipe_to_dense(pipeline, options(pipeline, "dense"), [&](const std::string& l) { lines.push_back(l); });
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(at::equal(r[0].dense_frames, r[0].recipe_frames));
  EXPECT_TRUE(std::isinf(r[0].metrics.mean_psnr));
  EXPECT_NEAR(r[0].metrics.mean_ssim, 1.0, 1e-12);
  ASSERT_EQ(r[0].layers.size(), 2u);  // the tiny model's layers
  for (const LayerComparison& l : r[0].layers) {
    EXPECT_EQ(l.relative_error, 0.0);
    EXPECT_EQ(l.density, 1.0);
    EXPECT_EQ(l.step_error.size(), 2u);  // its steps
  }
  EXPECT_GT(r[0].dense_time.denoise, 0.0);
  EXPECT_GT(r[0].recipe_time.denoise, 0.0);
  EXPECT_EQ(lines.size(), 3u);  // dense run, recipe run, the numbers
}

TEST_F(AbCompare, SparseRecipeCostsQualityAndWritesTheReport) {
  TextToVideo pipeline = TextToVideo::load(root_ + "/model", at::kCPU, at::kFloat);
  const std::vector<PromptComparison> r = compare_recipe_to_dense(pipeline, options(pipeline, "topk:k=2"));
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(std::isfinite(r[0].metrics.mean_psnr));
  EXPECT_LT(r[0].metrics.mean_ssim, 1.0);
  EXPECT_EQ(r[0].metrics.psnr.size(), 8u);
  for (const LayerComparison& l : r[0].layers) {
    EXPECT_GT(l.relative_error, 0.0);
    EXPECT_LT(l.density, 1.0);
    EXPECT_GT(l.density, 0.0);
  }
  EXPECT_LT(r[0].mean_density, 1.0);
  EXPECT_EQ(r[0].adherence.checked, bool(DITKIT_HAVE_OPENCV)) << r[0].adherence.note;
  if (!DITKIT_HAVE_OPENCV) {
    EXPECT_NE(r[0].adherence.note.find("OpenCV"), std::string::npos);
  }

  const std::string out = root_ + "/out";
  write_ab_report(out, AbRun{"tiny", "topk:k=2", "cpu", 0, 2, 3.0, 2.0, 8, 128, 128, 16}, r);
  for (const char* name : {"report.json", "report.html", "psnr_00.png", "layer_error_00.png", "side_by_side_00.y4m"})
    EXPECT_TRUE(fs::is_regular_file(out + "/" + name)) << name;
  EXPECT_EQ(fs::is_regular_file(out + "/side_by_side_00.mp4"), bool(DITKIT_HAVE_FFMPEG));
  EXPECT_EQ(read_png(out + "/psnr_00.png").sizes(), (std::vector<int64_t>{kChartHeight, kChartWidth, 3}));
  std::ifstream in(out + "/report.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["recipe"], "topk:k=2");
  EXPECT_EQ(j["prompts"][0]["layers"].size(), 2u);
  EXPECT_EQ(j["prompts"][0]["psnr"].size(), 8u);
  EXPECT_GT(j["prompts"][0]["mean_attention_error"].get<double>(), 0.0);
  EXPECT_TRUE(j["prompts"][0]["time"]["recipe"].contains("decode"));
}

TEST_F(AbCompare, BadInputsSayWhatIsWrong) {
  TextToVideo pipeline = TextToVideo::load(root_ + "/model", at::kCPU, at::kFloat);
  EXPECT_THROW(compare_recipe_to_dense(pipeline, options(pipeline, "nosuchmethod")), std::invalid_argument);
  AbOptions small = options(pipeline, "dense");
  small.generation.width = small.generation.height = 8;
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { compare_recipe_to_dense(pipeline, small); },
                                                 {"8x8", "at least 11x11"}));
  AbOptions none = options(pipeline, "dense");
  none.prompts.clear();
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { compare_recipe_to_dense(pipeline, none); }, {"no prompt"}));
}

}  // namespace
}  // namespace ditkit
