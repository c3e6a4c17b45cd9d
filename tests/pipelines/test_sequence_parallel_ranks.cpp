// Sequence parallelism across real processes on the CPU. launch_ranks (what dit-gen --gpus uses)
// starts this test binary again as each rank, filtered to one SequenceParallelRank test; the
// ranks meet at a FileStore in a temporary folder, talk through ProcessGroupGloo and write what
// they computed there, and the SequenceParallelRanks tests compare it with one process.
// Run alone (no DITKIT_SEQPAR_TEST_DIR), the SequenceParallelRank tests skip.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <string>

#include "dit/atomic_file.h"
#include "dit/safetensors.h"
#include "dit/sequence_parallel.h"
#include "dit/wan_transformer.h"
#include "ditkit_config.h"
#include "pipelines/rank_launcher.h"
#include "pipelines/sampler.h"
#include "pipelines/text_to_video.h"
#include "sparse/attention_method.h"
#include "sparse/recipe_attention.h"
#include "tests/model_test_support.h"

namespace fs = std::filesystem;

namespace ditkit {
namespace {

using testing_support::relative_error;
using testing_support::throws_with;

const char* const kDirVariable = "DITKIT_SEQPAR_TEST_DIR";
const std::string kWanTiny = std::string(DITKIT_TEST_DATA) + "/wan_tiny";

// Sets environment variables for one scope and puts back what was there.
class ScopedEnvironment {
 public:
  // nullptr: unset.
  explicit ScopedEnvironment(std::initializer_list<std::pair<std::string, const char*>> values) {
    for (const auto& [name, value] : values) {
      const char* old = std::getenv(name.c_str());
      saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
      value ? ::setenv(name.c_str(), value, 1) : ::unsetenv(name.c_str());
    }
  }
  ~ScopedEnvironment() {
    for (const auto& [name, value] : saved_) value ? ::setenv(name.c_str(), value->c_str(), 1) : ::unsetenv(name.c_str());
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

// ---------------------------------------------------------------------------------------------
// The launcher on its own, with shell commands as ranks.

TEST(RankLauncher, RanksGetTheirPlaceAndMulticastOff) {
  const LaunchResult result = launch_ranks(
      {"/bin/sh", "-c",
       "test \"$NCCL_NVLS_ENABLE\" = 0 && test \"$TORCH_SYMM_MEM_DISABLE_MULTICAST\" = 1 && "
       "test \"$NVSHMEM_DISABLE_NVLS\" = 1 && test \"$WORLD_SIZE\" = 3 && test \"$LOCAL_RANK\" = \"$RANK\" && "
       "test \"$MASTER_ADDR\" = 127.0.0.1 && test \"$MASTER_PORT\" -gt 0"},
      3);
  EXPECT_TRUE(result.ok) << result.failure;
}

TEST(RankLauncher, AFailingRankStopsTheOthersAndIsNamed) {
  const auto t0 = std::chrono::steady_clock::now();
  const LaunchResult result =
      launch_ranks({"/bin/sh", "-c", "if [ \"$RANK\" = 1 ]; then exit 3; fi; exec sleep 60"}, 3, 5);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.failed_rank, 1);
  EXPECT_EQ(result.failure, "rank 1 exited with status 3");
  EXPECT_LT(seconds, 20) << "the sleeping ranks were not stopped";

  const LaunchResult killed = launch_ranks({"/bin/sh", "-c", "if [ \"$RANK\" = 0 ]; then kill -9 $$; fi; exec sleep 60"}, 2, 5);
  EXPECT_EQ(killed.failed_rank, 0);
  EXPECT_NE(killed.failure.find("rank 0 was killed by signal 9"), std::string::npos) << killed.failure;
}

TEST(RankLauncher, AProgramThatCannotStartIsAnError) {
  EXPECT_TRUE(throws_with<std::runtime_error>([] { launch_ranks({"/nonexistent/dit-gen"}, 2); },
                                              {"cannot start rank 0", "/nonexistent/dit-gen"}));
}

TEST(RankLauncher, PlaceFromTheEnvironment) {
  {
    ScopedEnvironment env({{"RANK", nullptr}, {"WORLD_SIZE", nullptr}});
    EXPECT_FALSE(rank_place_from_environment().has_value());
  }
  {
    ScopedEnvironment env({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", nullptr}, {"MASTER_ADDR", "10.0.0.1"},
                           {"MASTER_PORT", "1234"}});
    const std::optional<RankPlace> place = rank_place_from_environment();
    ASSERT_TRUE(place.has_value());
    EXPECT_EQ(place->rank, 1);
    EXPECT_EQ(place->world, 2);
    EXPECT_EQ(place->local_rank, 1);
    EXPECT_EQ(place->master_addr, "10.0.0.1");
    EXPECT_EQ(place->master_port, 1234);
  }
  {
    ScopedEnvironment env({{"RANK", "2"}, {"WORLD_SIZE", "2"}});
    EXPECT_TRUE(throws_with<std::invalid_argument>([] { rank_place_from_environment(); }, {"RANK=2", "WORLD_SIZE=2"}));
  }
  {
    ScopedEnvironment env({{"RANK", "0"}, {"WORLD_SIZE", "two"}});
    EXPECT_TRUE(throws_with<std::invalid_argument>([] { rank_place_from_environment(); }, {"WORLD_SIZE='two'"}));
  }
  {
    ScopedEnvironment env({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}});
    EXPECT_TRUE(throws_with<std::invalid_argument>([] { rank_place_from_environment(); }, {"MASTER_PORT='70000'"}));
  }
}

#if DITKIT_HAVE_GLOO

// ---------------------------------------------------------------------------------------------
// The ranks' side: what each computes, written to the folder the comparing test made.

struct RankSetup {
  fs::path dir;
  RankPlace place;
};

std::optional<RankSetup> rank_setup() {
  const char* dir = std::getenv(kDirVariable);
  std::optional<RankPlace> place = rank_place_from_environment();
  if (!dir || !place) return std::nullopt;
  return RankSetup{dir, *place};
}

SequenceParallel join(const RankSetup& s) {
  return SequenceParallel::connect_file((s.dir / "store").string(), s.place.rank, s.place.world, at::kCPU);
}

// The inputs every run below uses: an odd token count (3x5x9 = 135), so 2 ranks pad one token.
std::map<std::string, at::Tensor> make_inputs() {
  at::manual_seed(11);
  return {{"latents", at::randn({2, 4, 3, 10, 18})},
          {"timestep", at::tensor({700.0f, 300.0f})},
          {"context", at::randn({2, 7, 16})},
          {"uncond", at::randn({1, 7, 16})}};
}

SamplingOptions sampling_options() {
  SamplingOptions o;
  o.steps = 3;
  o.guidance = 4.0;
  o.seed = 5;
  return o;
}

// Everything the comparison needs from one run: the forward dense (fp32 and bf16) and with svg,
// three sampling steps with guidance, and the shipped-model pipeline's frames (rank 0 only
// decodes).
std::map<std::string, at::Tensor> compute(const std::map<std::string, at::Tensor>& in, const fs::path& shipped,
                                          const SequenceParallel* sp) {
  const WanTransformer model = WanTransformer::load(kWanTiny, at::kCPU, at::kFloat);
  std::map<std::string, at::Tensor> out;
  const at::Tensor &latents = in.at("latents"), &timestep = in.at("timestep"), &context = in.at("context");
  out["dense"] = model.forward(latents, timestep, context, nullptr, 0, 1, sp);
  const WanTransformer bf16 = WanTransformer::load(kWanTiny, at::kCPU, at::kBFloat16);
  out["dense_bf16"] = bf16.forward(latents, timestep, context, nullptr, 0, 1, sp).to(at::kFloat);
  RecipeAttention svg(parse_recipe("svg", attention_method_specs()));
  out["svg"] = model.forward(latents, timestep, context, &svg, 0, 1, sp);
  out["sampled"] = sample(model, {1, 4, 3, 10, 18}, context.narrow(0, 0, 1), in.at("uncond"), sampling_options(),
                          nullptr, {}, sp);
  TextToVideo pipeline = TextToVideo::load(shipped.string(), at::kCPU, at::kFloat);
  TextToVideoOptions o = pipeline.default_options();
  o.prompt = "a red circle moves left";
  const at::Tensor frames = pipeline.generate(o, nullptr, {}, sp);
  if (frames.defined()) out["frames"] = frames;
  return out;
}

TEST(SequenceParallelRank, Compute) {
  const std::optional<RankSetup> s = rank_setup();
  if (!s) GTEST_SKIP() << "a rank of SequenceParallelRanks.*, started by it";
  const SequenceParallel sp = join(*s);
  SafetensorsFile inputs((s->dir / "inputs.safetensors").string());
  std::map<std::string, at::Tensor> in;
  for (const std::string& key : inputs.keys()) in[key] = inputs.get(key).clone();
  std::map<std::string, at::Tensor> out = compute(in, s->dir / "shipped", &sp);
  EXPECT_EQ(out.count("frames"), s->place.rank == 0 ? 1u : 0u) << "only rank 0 decodes";
  save_safetensors((s->dir / ("rank" + std::to_string(s->place.rank) + ".safetensors")).string(), out);
}

TEST(SequenceParallelRank, HeadsThatDoNotDivide) {
  const std::optional<RankSetup> s = rank_setup();
  if (!s) GTEST_SKIP() << "a rank of SequenceParallelRanks.*, started by it";
  const SequenceParallel sp = join(*s);
  const WanTransformer model = WanTransformer::load(kWanTiny, at::kCPU, at::kFloat);
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] { model.forward(at::zeros({1, 4, 1, 4, 4}), at::zeros({1}), at::zeros({1, 3, 16}), nullptr, 0, 1, &sp); },
      {"over 3 ranks", "2 attention heads do not divide by 3"}));
}

// ---------------------------------------------------------------------------------------------
// The comparing side.

class SequenceParallelRanks : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ditkit-seqpar-ranks-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    remove_tree(dir_.string());
    fs::create_directories(dir_);
  }
  void TearDown() override { remove_tree(dir_.string()); }

  // Runs SequenceParallelRank.<test> on `world` ranks: this binary, started as dit-gen starts its
  // ranks.
  LaunchResult run_ranks(const std::string& test, int world) const {
    ScopedEnvironment env({{kDirVariable, dir_.c_str()}});
    return launch_ranks({fs::read_symlink("/proc/self/exe").string(), "--gtest_filter=SequenceParallelRank." + test},
                        world);
  }

  fs::path dir_;
};

TEST_F(SequenceParallelRanks, TwoCpuRanksMatchOneProcess) {
  const std::map<std::string, at::Tensor> in = make_inputs();
  save_safetensors((dir_ / "inputs.safetensors").string(), in);
  testing_support::write_tiny_shipped_model((dir_ / "shipped").string());

  const LaunchResult result = run_ranks("Compute", 2);
  ASSERT_TRUE(result.ok) << result.failure;
  const std::map<std::string, at::Tensor> one = compute(in, dir_ / "shipped", nullptr);
  SafetensorsFile rank0((dir_ / "rank0.safetensors").string()), rank1((dir_ / "rank1.safetensors").string());
  for (const char* key : {"dense", "dense_bf16", "svg", "sampled"}) {
    // Every rank ends with the whole output, the same to the bit.
    EXPECT_TRUE(at::equal(rank0.get(key), rank1.get(key))) << key;
    // Against one process: the same arithmetic, but matrix products over a shard of the rows
    // may block their sums differently, so rounding: fp32's, or bf16's for the bf16 model.
    const double err = relative_error(rank0.get(key), one.at(key));
    std::cout << key << ": 2 ranks vs 1 process, max relative error " << err << "\n";
    EXPECT_LE(err, std::string(key) == "dense_bf16" ? 1e-2 : 1e-5) << key;
  }
  const at::Tensor frames = rank0.get("frames"), expected = one.at("frames");
  ASSERT_EQ(frames.sizes(), expected.sizes());
  const int max_diff = (frames.to(at::kInt) - expected.to(at::kInt)).abs().max().item<int>();
  std::cout << "frames: 2 ranks vs 1 process, max difference " << max_diff << " levels\n";
  EXPECT_LE(max_diff, 1);
}

TEST_F(SequenceParallelRanks, HeadsThatDoNotDivideOverTheRanksAreAClearError) {
  const LaunchResult result = run_ranks("HeadsThatDoNotDivide", 3);  // wan_tiny has 2 heads
  EXPECT_TRUE(result.ok) << result.failure;
}

#endif  // DITKIT_HAVE_GLOO

}  // namespace
}  // namespace ditkit
