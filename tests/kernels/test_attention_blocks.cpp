// The planning and attention building blocks against their CPU references, on awkward shapes;
// the *Cuda tests run the same comparisons on the GPU (and skip where there is none).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "ditkit_config.h"
#if DITKIT_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

#include "kernels/block_csr.h"
#include "kernels/block_pool.h"
#include "kernels/block_scores.h"
#include "kernels/block_select.h"
#include "kernels/block_sparse_attention.h"
#include "kernels/dense_attention.h"
#include "kernels/linear_attention.h"
#include "kernels/token_permute.h"

namespace ditkit {
namespace {

bool close(const at::Tensor& a, const at::Tensor& b, double tol) {
  return at::allclose(a.to(at::kCPU, at::kDouble), b.to(at::kCPU, at::kDouble), tol, tol);
}

// Softmax attention under a token mask [B, H, S, S], written directly in fp64: what block-sparse
// attention must equal. Fully masked rows give zeros and lse = -inf.
AttentionOutput masked_dense(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  at::Tensor qd = q.to(at::kDouble).transpose(1, 2), kd = k.to(at::kDouble).transpose(1, 2),
             vd = v.to(at::kDouble).transpose(1, 2);
  at::Tensor s = at::matmul(qd, kd.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(3)));
  s.masked_fill_(mask.logical_not(), -INFINITY);
  at::Tensor lse = at::logsumexp(s, -1, true);
  at::Tensor p = at::exp(s - lse).nan_to_num_(0.0);
  return {at::matmul(p, vd).transpose(1, 2), lse.squeeze(-1)};
}

at::Tensor token_mask_of(const at::Tensor& block_mask, int64_t S, BlockShape bs) {
  return block_mask.repeat_interleave(bs.q_block, 2).narrow(2, 0, S).repeat_interleave(bs.k_block, 3).narrow(3, 0, S);
}

// A random block map with some empty rows and some full rows.
at::Tensor random_block_mask(int64_t B, int64_t H, int64_t NQ, int64_t NK, double p, at::Device device = at::kCPU) {
  at::Tensor m = at::rand({B, H, NQ, NK}) < p;
  m.select(2, 0).select(1, 0).fill_(false);  // an empty row
  if (NQ > 1) m.select(2, NQ - 1).fill_(true);  // full rows, including the partial last query block
  return m.to(device);
}

struct AttnShape {
  int64_t B, S, H, D;
  BlockShape blocks;
};
// Partial last blocks, one block, S smaller than one block, B>1, H>1, head dim 64 and 128.
const AttnShape kAttnShapes[] = {{1, 100, 1, 64, {128, 64}},  {2, 300, 3, 64, {128, 64}}, {1, 256, 2, 128, {128, 128}},
                                 {2, 389, 2, 128, {128, 64}}, {1, 128, 1, 64, {128, 64}}};

TEST(BlockScores, MatchesReference) {
  at::Tensor qp = at::randn({2, 3, 4, 16}), kp = at::randn({2, 5, 4, 16});
  EXPECT_TRUE(close(block_scores(qp, kp, 0.25), block_scores_reference(qp, kp, 0.25), 1e-5));
}

TEST(BlockSelect, TopkKeepsExactlyKPerRowAndMatchesReference) {
  BlockGeometry g{1000, 128, 64};  // 8 x 16 blocks, partial last blocks
  at::Tensor scores = at::randn({2, 3, g.num_q_blocks(), g.num_k_blocks()});
  for (bool diag : {false, true}) {
    BlockSelection sel{5, 0.0, diag, diag ? 1 : 0};
    at::Tensor m = select_blocks(scores, g, sel);
    EXPECT_TRUE(m.sum(-1).eq(5).all().item<bool>());
    EXPECT_TRUE(at::equal(m, select_blocks_reference(scores, g, sel)));
    if (diag) {
      EXPECT_TRUE((m | forced_blocks(g, sel, at::kCPU).logical_not()).all().item<bool>());
    }
  }
  // k beyond the row keeps every block.
  EXPECT_TRUE(select_blocks(scores, g, {100, 0.0, false, 0}).all().item<bool>());
}

TEST(BlockSelect, DiagonalCoversTheQueryBlocksOwnTokens) {
  BlockGeometry g{300, 128, 64};  // query block 1 = tokens 128..255 = key blocks 2, 3
  at::Tensor f = forced_blocks(g, {1, 0.0, true, 0}, at::kCPU);
  EXPECT_TRUE(at::equal(f[1], at::tensor({0, 0, 1, 1, 0}).to(at::kBool)));
  EXPECT_TRUE(at::equal(f[2], at::tensor({0, 0, 0, 0, 1}).to(at::kBool)));
}

TEST(BlockSelect, MassMatchesReferenceAndFullMassKeepsAll) {
  BlockGeometry g{700, 128, 64};
  at::Tensor scores = at::randn({1, 2, g.num_q_blocks(), g.num_k_blocks()}) * 3;
  for (double mass : {0.3, 0.8, 0.95}) {
    BlockSelection sel{0, mass, true, 0};
    EXPECT_TRUE(at::equal(select_blocks(scores, g, sel), select_blocks_reference(scores, g, sel))) << mass;
  }
  EXPECT_TRUE(select_blocks(scores, g, {0, 1.0, false, 0}).all().item<bool>());
}

TEST(BlockCsr, MatchesReferenceAndRoundTrips) {
  at::Tensor m = random_block_mask(2, 3, 5, 7, 0.4);
  BlockCsr got = mask_to_csr(m), want = mask_to_csr_reference(m);
  ASSERT_TRUE(at::equal(got.row_offsets, want.row_offsets));
  int64_t nnz = want.col_indices.numel();
  EXPECT_TRUE(at::equal(got.col_indices.narrow(0, 0, nnz), want.col_indices));
  EXPECT_TRUE(at::equal(csr_to_mask(got), m));
  EXPECT_TRUE(at::equal(csr_to_mask(want), m));
  EXPECT_NEAR(csr_block_density(got).item<float>(), m.to(at::kFloat).mean().item<float>(), 1e-6);
}

// The CSR-producing selection against the reference selection turned into a CSR; `device`
// picks the CPU path or the GPU kernels.
void expect_selection_csr_matches(at::Device device) {
  BlockGeometry g{1000, 128, 64};
  at::Tensor scores = at::randn({2, 3, g.num_q_blocks(), g.num_k_blocks()});
  for (BlockSelection sel : {BlockSelection{5, 0.0, true, 1}, BlockSelection{3, 0.0, false, 0},
                             BlockSelection{100, 0.0, false, 0}, BlockSelection{0, 0.7, true, 0},
                             BlockSelection{0, 1.0, false, 2}}) {
    BlockCsr got = select_blocks_csr(scores.to(device), g, sel);
    BlockCsr want = mask_to_csr_reference(select_blocks_reference(scores, g, sel));
    ASSERT_TRUE(at::equal(got.row_offsets.cpu(), want.row_offsets)) << sel.top_k << " " << sel.mass;
    EXPECT_TRUE(at::equal(got.col_indices.cpu().narrow(0, 0, want.col_indices.numel()), want.col_indices));
  }
}

TEST(BlockSelect, CsrSelectionMatchesReference) { expect_selection_csr_matches(at::kCPU); }

TEST(TokenPermute, AxisOrderPutsFramesOfOnePositionTogether) {
  const int64_t F = 3, H = 2, W = 4;
  EXPECT_TRUE(at::equal(axis_order_permutation(F, H, W, "fhw"), at::arange(F * H * W)));
  at::Tensor perm = axis_order_permutation(F, H, W, "hwf");
  for (int64_t f = 0; f < F; ++f)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        EXPECT_EQ(perm[(y * W + x) * F + f].item<int64_t>(), f * H * W + y * W + x);
  EXPECT_THROW(axis_order_permutation(F, H, W, "ffw"), c10::Error);
}

TEST(TokenPermute, InverseRestoresAndMatchesReference) {
  at::Tensor x = at::randn({2, 60, 3, 8});
  for (at::Tensor perm : {axis_order_permutation(3, 4, 5, "whf"), at::stack({at::randperm(60), at::randperm(60),
                                                                             at::randperm(60)})}) {
    at::Tensor y = permute_tokens(x, perm);
    EXPECT_TRUE(at::equal(y, permute_tokens_reference(x, perm)));
    EXPECT_TRUE(at::equal(permute_tokens(y, invert_permutation(perm)), x));
  }
}

TEST(BlockSparseAttention, ReferenceEqualsMaskedDenseOnAwkwardShapes) {
  for (const AttnShape& s : kAttnShapes) {
    at::Tensor q = at::randn({s.B, s.S, s.H, s.D}), k = at::randn({s.B, s.S, s.H, s.D}),
               v = at::randn({s.B, s.S, s.H, s.D});
    const int64_t NQ = (s.S + s.blocks.q_block - 1) / s.blocks.q_block, NK = (s.S + s.blocks.k_block - 1) / s.blocks.k_block;
    at::Tensor mask = random_block_mask(s.B, s.H, NQ, NK, 0.5);
    AttentionOutput want = masked_dense(q, k, v, token_mask_of(mask, s.S, s.blocks));
    AttentionOutput ref = block_sparse_attention_reference(q, k, v, mask_to_csr(mask), s.blocks);
    AttentionOutput got = block_sparse_attention(q, k, v, mask_to_csr(mask), s.blocks);
    EXPECT_TRUE(close(ref.out, want.out, 1e-5)) << "S=" << s.S << " D=" << s.D;
    EXPECT_TRUE(close(got.out, want.out, 1e-4)) << "S=" << s.S << " D=" << s.D;
    // lse: equal where finite, -inf exactly on the empty rows.
    EXPECT_TRUE(at::equal(ref.lse.isinf(), want.lse.isinf()));
    EXPECT_TRUE(at::equal(got.lse.isinf(), want.lse.isinf()));
    at::Tensor finite = want.lse.isfinite();
    EXPECT_TRUE(close(ref.lse.masked_select(finite), want.lse.masked_select(finite), 1e-5));
    EXPECT_TRUE(close(got.lse.masked_select(finite), want.lse.masked_select(finite), 1e-4));
  }
}

TEST(BlockSparseAttention, StridedViewsAndBadMapsAreHandled) {
  at::Tensor base = at::randn({3, 1, 2, 200, 64});  // q, k, v as [B, H, S, D] storage
  at::Tensor q = base[0].transpose(1, 2), k = base[1].transpose(1, 2), v = base[2].transpose(1, 2);
  BlockCsr full = mask_to_csr(at::ones({1, 2, 2, 4}, at::kBool));
  EXPECT_TRUE(close(block_sparse_attention(q, k, v, full, {128, 64}).out, dense_attention(q, k, v).out, 1e-5));
  EXPECT_THROW(block_sparse_attention(q, k, v, full, {128, 128}), c10::Error);  // map made for 64-token key blocks
  EXPECT_FALSE(block_sparse_attention_uses_kernel(q, k, v, {128, 64}));         // the kernel is for the GPU
  EXPECT_THROW(full_attention_kernel(q, k, v), c10::Error);
}

TEST(DenseAttention, MatchesReferenceOnCpu) {
  for (const AttnShape& s : kAttnShapes) {
    at::Tensor q = at::randn({s.B, s.S, s.H, s.D}), k = at::randn({s.B, s.S, s.H, s.D}),
               v = at::randn({s.B, s.S, s.H, s.D});
    AttentionOutput got = dense_attention(q, k, v);
    AttentionOutput want = masked_dense(q, k, v, at::ones({s.B, s.H, s.S, s.S}, at::kBool));
    EXPECT_TRUE(close(got.out, want.out, 1e-4));
    EXPECT_TRUE(close(got.lse, want.lse, 1e-4));
  }
}

TEST(LinearAttention, MatchesReference) {
  at::Tensor q = at::randn({2, 37, 3, 16}), k = at::randn({2, 37, 3, 16}), v = at::randn({2, 37, 3, 16});
  EXPECT_TRUE(close(linear_attention(q, k, v), linear_attention_reference(q, k, v), 1e-5));
}

// ---- the GPU versions against the CPU references (run on the device) -------------------------

#define SKIP_WITHOUT_CUDA() \
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device"

TEST(AttentionBlocksCuda, PlanningBlocksMatchReferences) {
  SKIP_WITHOUT_CUDA();
  at::Tensor qp = at::randn({2, 8, 3, 64}), kp = at::randn({2, 16, 3, 64});
  EXPECT_TRUE(close(block_scores(qp.cuda(), kp.cuda(), 0.125), block_scores_reference(qp, kp, 0.125), 1e-4));
  BlockGeometry g{1000, 128, 64};
  at::Tensor scores = at::randn({2, 3, 8, 16});
  for (BlockSelection sel : {BlockSelection{5, 0.0, true, 1}, BlockSelection{0, 0.9, true, 0}})
    EXPECT_TRUE(at::equal(select_blocks(scores.cuda(), g, sel).cpu(), select_blocks_reference(scores, g, sel)));
  at::Tensor m = random_block_mask(2, 3, 5, 7, 0.4);
  BlockCsr got = mask_to_csr(m.cuda()), want = mask_to_csr_reference(m);
  EXPECT_TRUE(at::equal(got.row_offsets.cpu(), want.row_offsets));
  EXPECT_TRUE(at::equal(got.col_indices.cpu().narrow(0, 0, want.col_indices.numel()), want.col_indices));
  EXPECT_TRUE(at::equal(csr_to_mask(got).cpu(), m));
  expect_selection_csr_matches(at::kCUDA);
  // Wide rows (NK > one CTA's threads) and many rows: the 75,600-token shape's key blocks.
  BlockGeometry wide{75600, 128, 64};
  at::Tensor big = at::randn({1, 2, wide.num_q_blocks(), wide.num_k_blocks()});
  for (BlockSelection sel : {BlockSelection{118, 0.0, true, 0}, BlockSelection{0, 0.5, true, 0}}) {
    BlockCsr got = select_blocks_csr(big.cuda(), wide, sel);
    BlockCsr want = mask_to_csr_reference(select_blocks_reference(big, wide, sel));
    EXPECT_EQ(got.row_length, sel.top_k > 0 ? sel.top_k : -1);  // lets the attention kernel skip its row order
    ASSERT_TRUE(at::equal(got.row_offsets.cpu(), want.row_offsets));
    EXPECT_TRUE(at::equal(got.col_indices.cpu().narrow(0, 0, want.col_indices.numel()), want.col_indices));
  }
  at::Tensor x = at::randn({2, 60, 3, 8});
  at::Tensor perm = at::stack({at::randperm(60), at::randperm(60), at::randperm(60)});
  EXPECT_TRUE(at::equal(permute_tokens(x.cuda(), perm.cuda()).cpu(), permute_tokens_reference(x, perm)));
  EXPECT_TRUE(at::equal(invert_permutation(perm.cuda()).cpu(), invert_permutation(perm)));
}

// The score kernels: query and key counts that are not multiples of their tiles (64 x 64 for
// fp32 or head dims the tensor cores do not take, 32 x 128 on the tensor-core path), one block,
// head dims that are not a multiple of 32 or 16 (and one of several chunks), strided views, each
// element type; and mixed dtypes, which take the ATen path.
TEST(AttentionBlocksCuda, BlockScoresMatchReferenceOnAwkwardShapes) {
  SKIP_WITHOUT_CUDA();
  struct Case {
    int64_t B, NQ, NK, H, D;
  };
  for (const Case& c : {Case{1, 1, 1, 1, 8}, Case{2, 33, 70, 3, 5}, Case{2, 256, 256, 12, 128}, Case{1, 40, 7, 2, 64},
                        Case{1, 5, 9, 2, 200}, Case{1, 33, 130, 2, 48}, Case{2, 65, 257, 3, 16}}) {
    for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      at::Tensor qp = at::randn({c.B, c.NQ, c.H, c.D}).to(dtype), kp = at::randn({c.B, c.NK, c.H, c.D}).to(dtype);
      const double tol = dtype == at::kFloat ? 1e-4 : 1e-3;  // fp32 sums of rounded inputs
      at::Tensor got = block_scores(qp.cuda(), kp.cuda(), 0.125);
      ASSERT_EQ(got.scalar_type(), at::kFloat);
      EXPECT_TRUE(close(got, block_scores_reference(qp, kp, 0.125), tol))
          << dtype << " NQ=" << c.NQ << " NK=" << c.NK << " H=" << c.H << " D=" << c.D;
    }
  }
  at::Tensor qp = at::randn({2, 3, 9, 32}).transpose(1, 2), kp = at::randn({2, 3, 20, 32}).transpose(1, 2);
  EXPECT_TRUE(close(block_scores(qp.cuda(), kp.cuda(), 0.5), block_scores_reference(qp, kp, 0.5), 1e-4));
  at::Tensor qb = at::randn({2, 3, 40, 64}).to(at::kBFloat16).transpose(1, 2);  // the tensor cores, strided
  at::Tensor kb = at::randn({2, 3, 150, 64}).to(at::kBFloat16).transpose(1, 2);
  EXPECT_TRUE(close(block_scores(qb.cuda(), kb.cuda(), 0.5), block_scores_reference(qb, kb, 0.5), 1e-3));
  at::Tensor q16 = at::randn({1, 6, 2, 16}), k32 = at::randn({1, 4, 2, 16});
  EXPECT_TRUE(close(block_scores(q16.to(at::kHalf).cuda(), k32.cuda(), 1.0),
                    block_scores_reference(q16.to(at::kHalf), k32, 1.0), 1e-3));
}

// Top-k rows take the warp kernel: rows of every width it is built for, k from 1 to NK, forced
// blocks beyond k, and ties (few distinct scores), where the lower index must win as in the sort.
TEST(AttentionBlocksCuda, TopkRowsMatchReferenceOnTiesAndEveryRowWidth) {
  SKIP_WITHOUT_CUDA();
  for (int64_t tokens : {64, 100, 2000, 6000, 19000, 40000, 75600}) {
    BlockGeometry g{tokens, 128, 64};
    const int64_t NK = g.num_k_blocks();
    for (bool ties : {false, true}) {
      at::Tensor scores = at::randn({1, 2, g.num_q_blocks(), NK});
      if (ties) scores = at::randint(0, 3, scores.sizes()).to(at::kFloat);
      for (BlockSelection sel : {BlockSelection{1, 0.0, false, 0}, BlockSelection{NK, 0.0, true, 0},
                                 BlockSelection{NK / 2 + 1, 0.0, false, 0}, BlockSelection{13, 0.0, true, 0},
                                 BlockSelection{2, 0.0, true, 4}}) {
        BlockCsr got = select_blocks_csr(scores.cuda(), g, sel);
        BlockCsr want = mask_to_csr_reference(select_blocks_reference(scores, g, sel));
        ASSERT_TRUE(at::equal(got.row_offsets.cpu(), want.row_offsets)) << tokens << " k=" << sel.top_k;
        EXPECT_TRUE(at::equal(got.col_indices.cpu(), want.col_indices))
            << tokens << " k=" << sel.top_k << " first=" << sel.keep_first << " ties=" << ties;
      }
    }
  }
}

TEST(AttentionBlocksCuda, AttentionMatchesReferences) {
  SKIP_WITHOUT_CUDA();
  for (const AttnShape& s : kAttnShapes) {
    at::Tensor q = at::randn({s.B, s.S, s.H, s.D}), k = at::randn({s.B, s.S, s.H, s.D}),
               v = at::randn({s.B, s.S, s.H, s.D});
    const int64_t NQ = (s.S + s.blocks.q_block - 1) / s.blocks.q_block, NK = (s.S + s.blocks.k_block - 1) / s.blocks.k_block;
    at::Tensor mask = random_block_mask(s.B, s.H, NQ, NK, 0.5);
    AttentionOutput want = block_sparse_attention_reference(q, k, v, mask_to_csr(mask), s.blocks);
    AttentionOutput got = block_sparse_attention(q.cuda(), k.cuda(), v.cuda(), mask_to_csr(mask.cuda()), s.blocks);
    EXPECT_TRUE(close(got.out, want.out, 2e-3)) << "S=" << s.S << " D=" << s.D;
    EXPECT_TRUE(at::equal(got.lse.cpu().isinf(), want.lse.isinf()));
    // Dense: cuDNN in bf16 (a bf16 tolerance) and the efficient kernel in fp32.
    AttentionOutput dense_ref = masked_dense(q, k, v, at::ones({s.B, s.H, s.S, s.S}, at::kBool));
    at::Tensor qb = q.cuda().to(at::kBFloat16), kb = k.cuda().to(at::kBFloat16), vb = v.cuda().to(at::kBFloat16);
    EXPECT_STREQ(dense_attention_backend(qb), "cudnn");
    AttentionOutput cudnn = dense_attention(qb, kb, vb);
    EXPECT_TRUE(close(cudnn.out, dense_ref.out, 3e-2)) << "cudnn S=" << s.S << " D=" << s.D;
    EXPECT_TRUE(close(cudnn.lse, dense_ref.lse, 3e-2));
    AttentionOutput eff = dense_attention(q.cuda(), k.cuda(), v.cuda());
    EXPECT_TRUE(close(eff.out, dense_ref.out, 2e-3));
    EXPECT_TRUE(close(eff.lse, dense_ref.lse, 2e-3));
  }
  at::Tensor q = at::randn({2, 37, 3, 16}), k = at::randn({2, 37, 3, 16}), v = at::randn({2, 37, 3, 16});
  EXPECT_TRUE(close(linear_attention(q.cuda(), k.cuda(), v.cuda()), linear_attention_reference(q, k, v), 1e-4));
}

// ‖got − want‖ / ‖want‖ in fp64 on the CPU.
double relative_error(const at::Tensor& got, const at::Tensor& want) {
  at::Tensor g = got.to(at::kCPU, at::kDouble), w = want.to(at::kCPU, at::kDouble);
  return (g - w).norm().item<double>() / std::max(w.norm().item<double>(), 1e-30);
}

bool on_hopper() {
#if DITKIT_HAVE_CUDA
  return at::hasCUDA() && at::cuda::getCurrentDeviceProperties()->major == 9;
#else
  return false;
#endif
}

// Row offsets for rows of the given lengths (in blocks).
at::Tensor offsets_of(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> offsets{0};
  for (int64_t n : lengths) offsets.push_back(offsets.back() + n);
  return at::tensor(offsets, at::kLong);
}

// Awkward row-length lists: none, one row, empty rows, all equal, random, and rows longer than
// the GPU's 4,095 length bins.
std::vector<std::vector<int64_t>> row_length_cases() {
  std::vector<std::vector<int64_t>> cases{{}, {7}, {0, 0, 3, 0}, std::vector<int64_t>(6144, 13)};
  at::Tensor random = at::randint(0, 300, {6007}, at::kLong);
  cases.emplace_back(random.data_ptr<int64_t>(), random.data_ptr<int64_t>() + random.numel());
  cases.push_back({4095, 5000, 4094, 0, 9000, 4096, 1});
  return cases;
}

TEST(BlockCsr, RowsLongestFirstIsAStableDescendingOrderOnCpu) {
  at::Tensor order = rows_longest_first(offsets_of({2, 5, 0, 5, 3}));
  EXPECT_EQ(order.scalar_type(), at::kInt);
  EXPECT_TRUE(at::equal(order, at::tensor({1, 3, 4, 0, 2}, at::kInt)));
  EXPECT_EQ(rows_longest_first(offsets_of({})).numel(), 0);
  EXPECT_THROW(rows_longest_first(at::zeros({0}, at::kLong)), c10::Error);
}

TEST(AttentionBlocksCuda, RowsLongestFirstMatchesTheCpuOrder) {
  SKIP_WITHOUT_CUDA();
  for (const std::vector<int64_t>& lengths : row_length_cases()) {
    at::Tensor offsets = offsets_of(lengths);
    const int64_t rows = int64_t(lengths.size());
    at::Tensor got = rows_longest_first(offsets.cuda());
    ASSERT_EQ(got.scalar_type(), at::kInt);
    ASSERT_EQ(got.numel(), rows);
    at::Tensor order = got.cpu().to(at::kLong);
    EXPECT_TRUE(at::equal(std::get<0>(order.sort()), at::arange(rows, at::kLong))) << rows << " rows";
    // The CPU's stable order, where rows of 4,095 blocks or more count as equal.
    at::Tensor len = (offsets.narrow(0, 1, rows) - offsets.narrow(0, 0, rows)).clamp_max(4095);
    EXPECT_TRUE(at::equal(order, rows_longest_first(offsets_of(std::vector<int64_t>(
                                         len.data_ptr<int64_t>(), len.data_ptr<int64_t>() + rows))).to(at::kLong)))
        << rows << " rows";
  }
}

TEST(AttentionBlocksCuda, HopperKernelMatchesReferenceOnAwkwardShapes) {
  SKIP_WITHOUT_CUDA();
  for (at::ScalarType dtype : {at::kBFloat16, at::kHalf})
    for (const AttnShape& s : kAttnShapes) {
      at::Tensor q = at::randn({s.B, s.S, s.H, s.D}).to(dtype), k = at::randn({s.B, s.S, s.H, s.D}).to(dtype),
                 v = at::randn({s.B, s.S, s.H, s.D}).to(dtype);
      const int64_t NQ = (s.S + 127) / 128, NK = (s.S + s.blocks.k_block - 1) / s.blocks.k_block;
      at::Tensor mask = random_block_mask(s.B, s.H, NQ, NK, 0.4);  // row (0, 0, 0) empty, last rows full
      at::Tensor qc = q.cuda(), kc = k.cuda(), vc = v.cuda();
      if (on_hopper()) {
        EXPECT_TRUE(block_sparse_attention_uses_kernel(qc, kc, vc, s.blocks));
      }
      AttentionOutput want = block_sparse_attention_reference(q, k, v, mask_to_csr(mask), s.blocks);
      AttentionOutput got = block_sparse_attention(qc, kc, vc, mask_to_csr(mask.cuda()), s.blocks);
      ASSERT_EQ(got.out.scalar_type(), dtype);
      EXPECT_LT(relative_error(got.out, want.out), 1e-2) << "S=" << s.S << " D=" << s.D << " kb=" << s.blocks.k_block;
      EXPECT_FALSE(got.out.isnan().any().item<bool>());
      EXPECT_TRUE(at::equal(got.lse.cpu().isinf(), want.lse.isinf()));
      at::Tensor finite = want.lse.isfinite();
      EXPECT_TRUE(close(got.lse.cpu().masked_select(finite), want.lse.masked_select(finite), 2e-3));
      // The empty row's outputs are zeros.
      at::Tensor empty_rows = got.out[0].narrow(0, 0, std::min<int64_t>(128, s.S)).select(1, 0);
      EXPECT_EQ(empty_rows.abs().max().item<float>(), 0.f);
    }
}

TEST(AttentionBlocksCuda, HopperKernelTakesStridedViewsAndMatchesCudnnAtDensityOne) {
  SKIP_WITHOUT_CUDA();
  const int64_t B = 2, S = 1000, H = 3, D = 128;
  at::Tensor qkv = at::randn({B, S, 3, H, D}, at::TensorOptions(at::kCUDA).dtype(at::kBFloat16));
  at::Tensor q = qkv.select(2, 0), k = qkv.select(2, 1), v = qkv.select(2, 2);  // a fused projection's views
  for (int64_t kb : {64, 128}) {
    const BlockShape blocks{128, kb};
    if (on_hopper()) {
      EXPECT_TRUE(block_sparse_attention_uses_kernel(q, k, v, blocks));
    }
    BlockCsr full = mask_to_csr(at::ones({B, H, (S + 127) / 128, (S + kb - 1) / kb}, at::TensorOptions(at::kCUDA).dtype(at::kBool)));
    AttentionOutput got = block_sparse_attention(q, k, v, full, blocks);
    AttentionOutput cudnn = dense_attention(q, k, v);
    EXPECT_LT(relative_error(got.out, cudnn.out), 1e-2) << "kb=" << kb;
    EXPECT_TRUE(close(got.lse, cudnn.lse, 2e-2));
  }
  // Dense through the kernel with no block map (the `dense` method's path on Hopper).
  if (on_hopper()) {
    AttentionOutput full = full_attention_kernel(q, k, v), cudnn = dense_attention(q, k, v);
    EXPECT_LT(relative_error(full.out, cudnn.out), 1e-2);
    EXPECT_TRUE(close(full.lse, cudnn.lse, 2e-2));
    at::Tensor qh = q.to(at::kHalf), kh = k.to(at::kHalf), vh = v.to(at::kHalf);
    EXPECT_LT(relative_error(full_attention_kernel(qh, kh, vh).out, dense_attention(qh, kh, vh).out), 1e-2);
  } else {
    EXPECT_THROW(full_attention_kernel(q, k, v), c10::Error);
  }
}

// One row (b, h, query block) of block-sparse attention in fp64 on the CPU: the long-sequence
// check compares sampled rows, since the whole oracle would take hours there.
AttentionOutput reference_row(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                              BlockShape blocks, int64_t b, int64_t h, int64_t i) {
  const int64_t S = q.size(1), s0 = i * blocks.q_block, len = std::min(blocks.q_block, S - s0);
  at::Tensor keep = mask[b][h][i].repeat_interleave(blocks.k_block).narrow(0, 0, S);
  at::Tensor idx = keep.nonzero().squeeze(1);
  at::Tensor qi = q[b].narrow(0, s0, len).select(1, h).to(at::kDouble);
  at::Tensor kj = k[b].select(1, h).index_select(0, idx).to(at::kDouble), vj = v[b].select(1, h).index_select(0, idx).to(at::kDouble);
  if (idx.numel() == 0) return {at::zeros_like(qi), at::full({len}, -INFINITY, at::kDouble)};
  at::Tensor scores = at::matmul(qi, kj.t()) / std::sqrt(static_cast<double>(q.size(3)));
  at::Tensor lse = at::logsumexp(scores, -1, true);
  return {at::matmul(at::exp(scores - lse), vj), lse.squeeze(-1)};
}

TEST(BlockSparseKernelLongSequences, SampledRowsMatchReference) {
  SKIP_WITHOUT_CUDA();
  if (!on_hopper()) GTEST_SKIP() << "the kernel runs on Hopper GPUs";
  // The Wan2.1 shapes: 1.3B (32,760 tokens, 12 heads) and 14B (75,600 tokens, 40 heads).
  const AttnShape shapes[] = {{2, 32760, 12, 128, {128, 64}}, {1, 75600, 40, 64, {128, 128}}, {1, 75600, 40, 128, {128, 64}}};
  for (const AttnShape& s : shapes) {
    auto opts = at::TensorOptions(at::kCUDA).dtype(at::kBFloat16);
    at::Tensor q = at::randn({s.B, s.S, s.H, s.D}, opts), k = at::randn({s.B, s.S, s.H, s.D}, opts),
               v = at::randn({s.B, s.S, s.H, s.D}, opts);
    const int64_t NQ = (s.S + 127) / 128, NK = (s.S + s.blocks.k_block - 1) / s.blocks.k_block;
    at::Tensor mask = random_block_mask(s.B, s.H, NQ, NK, 0.1);
    ASSERT_TRUE(block_sparse_attention_uses_kernel(q, k, v, s.blocks));
    AttentionOutput got = block_sparse_attention(q, k, v, mask_to_csr(mask.cuda()), s.blocks);
    at::Tensor qh = q.cpu(), kh = k.cpu(), vh = v.cpu(), out = got.out.cpu(), lse = got.lse.cpu();
    // The empty row, a full row (the partial last query block) and random ones.
    std::vector<std::array<int64_t, 3>> rows = {{0, 0, 0}, {s.B - 1, s.H - 1, NQ - 1}};
    for (int n = 0; n < 4; ++n)
      rows.push_back({at::randint(s.B, {1}).item<int64_t>(), at::randint(s.H, {1}).item<int64_t>(),
                      at::randint(NQ, {1}).item<int64_t>()});
    for (const auto& [b, h, i] : rows) {
      AttentionOutput want = reference_row(qh, kh, vh, mask, s.blocks, b, h, i);
      const int64_t s0 = i * 128, len = want.out.size(0);
      at::Tensor got_out = out[b].narrow(0, s0, len).select(1, h), got_lse = lse[b][h].narrow(0, s0, len);
      if (want.lse.isinf().all().item<bool>()) {
        EXPECT_EQ(got_out.abs().max().item<float>(), 0.f);
        EXPECT_TRUE(got_lse.isinf().all().item<bool>());
        continue;
      }
      EXPECT_LT(relative_error(got_out, want.out), 1e-2) << "S=" << s.S << " row " << b << "," << h << "," << i;
      EXPECT_TRUE(close(got_lse, want.lse, 2e-3)) << "S=" << s.S << " row " << b << "," << h << "," << i;
    }
  }
}

}  // namespace
}  // namespace ditkit
