// Sequence parallelism in one process: the partition math (shard sizes, padding, global
// positions), and a real c10d group of world size 1 (Gloo over a FileStore), through which every
// collective is an identity and the sharded forward must equal the plain one exactly. The real
// 2-rank runs are in tests/pipelines/test_sequence_parallel_ranks.cpp.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "dit/atomic_file.h"
#include "dit/sequence_parallel.h"
#include "dit/wan_transformer.h"
#include "ditkit_config.h"
#include "sparse/attention_method.h"
#include "sparse/recipe_attention.h"
#include "tests/model_test_support.h"

namespace ditkit {
namespace {

using testing_support::throws_with;

TEST(SequencePartition, ShardsOfTheDesignShapes) {
  // Wan 1.3B / 14B at 480p: 32,760 tokens.
  for (int64_t r = 0; r < 2; ++r) {
    const SequencePartition p = SequencePartition::of(32760, 2, r);
    EXPECT_EQ(p.shard, 16380);
    EXPECT_EQ(p.padded(), 32760);
    EXPECT_EQ(p.begin(), 16380 * r);
    EXPECT_EQ(p.valid(), 16380);
  }
  EXPECT_EQ(SequencePartition::of(32760, 4, 3).shard, 8190);
  // 14B at 720p: 75,600 tokens.
  EXPECT_EQ(SequencePartition::of(75600, 4, 0).shard, 18900);
  EXPECT_EQ(SequencePartition::of(75600, 8, 7).valid(), 9450);
  // 16 ranks: 2,048 a rank, the last holding 2,040 real tokens and 8 of padding.
  const SequencePartition last = SequencePartition::of(32760, 16, 15);
  EXPECT_EQ(last.shard, 2048);
  EXPECT_EQ(last.padded(), 32768);
  EXPECT_EQ(last.begin(), 30720);
  EXPECT_EQ(last.valid(), 2040);
}

TEST(SequencePartition, EveryTokenOnExactlyOneRankAndPaddingOnlyAtTheEnd) {
  for (int64_t tokens : {1, 2, 3, 5, 7, 45, 128, 135, 1000, 32760})
    for (int64_t world : {1, 2, 3, 4, 5, 7, 8, 16}) {
      int64_t next = 0, padding = 0;
      for (int64_t rank = 0; rank < world; ++rank) {
        const SequencePartition p = SequencePartition::of(tokens, world, rank);
        EXPECT_EQ(p.shard, (tokens + world - 1) / world);
        if (p.valid() > 0) {
          EXPECT_EQ(p.begin(), next) << tokens << " tokens, rank " << rank << " of " << world;
        }
        if (p.valid() < p.shard) {
          padding += p.shard - p.valid();
        } else {
          EXPECT_EQ(padding, 0) << "a full shard after a padded one";
        }
        next += p.valid();
      }
      EXPECT_EQ(next, tokens);
      EXPECT_EQ(padding, SequencePartition::of(tokens, world, 0).padded() - tokens);
      EXPECT_LT(padding, world);
    }
  // A rank can hold nothing but padding: 5 tokens over 4 ranks of 2.
  EXPECT_EQ(SequencePartition::of(5, 4, 2).valid(), 1);
  EXPECT_EQ(SequencePartition::of(5, 4, 3).valid(), 0);
}

TEST(SequencePartition, TakeIsTheShardAtItsGlobalPositionsPaddedWithZeros) {
  const int64_t S = 45;
  // Rows are global positions, as in the rotary tables: [1, S, 1, 2].
  const at::Tensor table = at::arange(S, at::kFloat).view({1, S, 1, 1}).expand({1, S, 1, 2}).contiguous() + 1;
  for (int64_t world : {1, 2, 4, 7}) {
    std::vector<at::Tensor> shards;
    for (int64_t rank = 0; rank < world; ++rank) {
      const SequencePartition p = SequencePartition::of(S, world, rank);
      const at::Tensor shard = p.take(table, 1);
      ASSERT_EQ(shard.sizes(), (std::vector<int64_t>{1, p.shard, 1, 2}));
      if (p.valid() > 0) {
        EXPECT_TRUE(at::equal(shard.narrow(1, 0, p.valid()), table.narrow(1, p.begin(), p.valid())));
      }
      EXPECT_EQ(shard.narrow(1, p.valid(), p.shard - p.valid()).abs().sum().item<float>(), 0.0f);
      shards.push_back(shard);
    }
    const at::Tensor joined = at::cat(shards, 1);
    EXPECT_TRUE(at::equal(joined.narrow(1, 0, S), table)) << world << " ranks";
  }
  // Negative dims count from the end, and the token count is checked.
  EXPECT_EQ(SequencePartition::of(S, 2, 1).take(table, -3).size(1), 23);
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { SequencePartition::of(S, 2, 0).take(table, 0); },
                                                 {"should hold the 45 tokens"}));
}

TEST(SequencePartition, RefusesImpossiblePlaces) {
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { SequencePartition::of(0, 2, 0); }, {"tokens >= 1"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { SequencePartition::of(10, 2, 2); }, {"rank 2", "world 2"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { SequencePartition::of(10, 0, 0); }, {"world 0"}));
}

TEST(SequenceParallel, MulticastStaysOff) {
  set_multicast_off_environment();
  EXPECT_STREQ(std::getenv("NCCL_NVLS_ENABLE"), "0");
  EXPECT_STREQ(std::getenv("TORCH_SYMM_MEM_DISABLE_MULTICAST"), "1");
  EXPECT_STREQ(std::getenv("NVSHMEM_DISABLE_NVLS"), "1");
}

#if DITKIT_HAVE_GLOO

// A Gloo group of one rank on a FileStore in a fresh temporary file.
class OneRank : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::filesystem::temp_directory_path() / ("ditkit-seqpar-store-" + std::to_string(::getpid()) + "-" +
                                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove(store_);
  }
  void TearDown() override { std::filesystem::remove(store_); }
  SequenceParallel group() const { return SequenceParallel::connect_file(store_.string(), 0, 1, at::kCPU); }

  std::filesystem::path store_;
};

TEST_F(OneRank, CollectivesAreIdentities) {
  const SequenceParallel sp = group();
  EXPECT_EQ(sp.rank(), 0);
  EXPECT_EQ(sp.world(), 1);
  const SequencePartition p = sp.partition(45);
  const at::Tensor q = at::randn({2, 45, 4, 8}), k = at::randn({2, 45, 4, 8});
  const std::vector<at::Tensor> heads = sp.to_head_shards({q, k}, p);
  ASSERT_EQ(heads.size(), 2u);
  EXPECT_TRUE(at::equal(heads[0], q));
  EXPECT_TRUE(at::equal(heads[1], k));
  // A strided view (the attention output often is one) comes back as the same values.
  const at::Tensor out = at::randn({2, 4, 45, 8}).transpose(1, 2);
  EXPECT_TRUE(at::equal(sp.to_sequence_shard(out, p), out));
  const at::Tensor x = at::randn({2, 45, 16});
  EXPECT_TRUE(at::equal(sp.gather_sequence(x, p), x));
  sp.barrier();
}

TEST_F(OneRank, ShapesThatDoNotFitAreRefused) {
  const SequenceParallel sp = group();
  const SequencePartition p = sp.partition(45);
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { sp.to_head_shards({at::zeros({1, 44, 2, 4})}, p); },
                                                 {"[1, 45, 2, 4]", "[1, 44, 2, 4]"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { sp.to_sequence_shard(at::zeros({1, 44, 2, 4}), p); },
                                                 {"[B, 45, H / N, D]"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { sp.gather_sequence(at::zeros({1, 44, 2}), p); },
                                                 {"[B, 45, C]"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { SequenceParallel::connect_file("/nonexistent", 1, 1, at::kCPU); },
                                                 {"rank 1 of world size 1"}));
}

// World size 1 runs every all-to-all and the gather, yet must not change a single value: the
// sharded forward equals the plain one exactly, dense and with svg (which classifies heads and
// permutes tokens per head), at an odd token count.
TEST_F(OneRank, ForwardEqualsThePlainForwardExactly) {
  const SequenceParallel sp = group();
  const WanTransformer model = WanTransformer::load(std::string(DITKIT_TEST_DATA) + "/wan_tiny", at::kCPU, at::kFloat);
  const at::Tensor latents = at::randn({2, 4, 3, 10, 18});  // grid 3x5x9 = 135 tokens
  const at::Tensor timestep = at::tensor({700.0f, 300.0f});
  const at::Tensor context = at::randn({2, 7, 16});
  EXPECT_TRUE(at::equal(model.forward(latents, timestep, context, nullptr, 0, 1, &sp),
                        model.forward(latents, timestep, context)));
  RecipeAttention plain(parse_recipe("svg", attention_method_specs()));
  RecipeAttention sharded(parse_recipe("svg", attention_method_specs()));
  EXPECT_TRUE(at::equal(model.forward(latents, timestep, context, &sharded, 0, 1, &sp),
                        model.forward(latents, timestep, context, &plain)));
}

#endif  // DITKIT_HAVE_GLOO

}  // namespace
}  // namespace ditkit
