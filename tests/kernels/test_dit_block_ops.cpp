// The DiT block's fused ops: the ATen references against the formulas in fp64 (CPU), and the
// CUDA kernels against the references on awkward row widths, batch broadcasting and strided
// modulation vectors (skipped without a GPU).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/dit_block_ops.h"

namespace ditkit {
namespace {

double max_abs(const at::Tensor& a) { return a.abs().max().item<double>(); }
double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return max_abs(a.to(at::kCPU, at::kDouble) - b.to(at::kCPU, at::kDouble));
}

// The modulation vectors as the DiT block makes them: strided [B, 1, C] chunks of one [B, 6, C].
std::vector<at::Tensor> modulation(int64_t B, int64_t C, at::Device device) {
  return (at::randn({B, 6, C}, at::kFloat) * 0.5).to(device).chunk(6, 1);
}

// cos/sin [1, S, 1, D/2] of real angles, fp32.
std::pair<at::Tensor, at::Tensor> rope_table(int64_t S, int64_t D, at::Device device) {
  at::Tensor angles = at::outer(at::arange(S, at::kDouble), at::rand({D / 2}, at::kDouble) * 2.0).view({1, S, 1, D / 2});
  return {angles.cos().to(device, at::kFloat), angles.sin().to(device, at::kFloat)};
}

TEST(DitBlockOps, ReferencesFollowTheFormulas) {
  at::manual_seed(0);
  const int64_t B = 2, S = 5, H = 3, D = 4, C = H * D;
  at::Tensor x = at::randn({B, S, C}, at::kDouble), y = at::randn({B, S, C}, at::kDouble);
  auto m = modulation(B, C, at::kCPU);
  at::Tensor w = at::randn({C}, at::kFloat), bias = at::randn({C}, at::kFloat);

  at::Tensor mean = x.mean(-1, true), var = (x - mean).square().mean(-1, true);
  at::Tensor ln = (x - mean) / (var + 1e-6).sqrt();
  at::Tensor expect = (ln * w.to(at::kDouble) + bias.to(at::kDouble)) * (1 + m[1].to(at::kDouble)) + m[0].to(at::kDouble);
  EXPECT_LT(max_diff(modulated_layer_norm_reference(x.to(at::kFloat), w, bias, m[1], m[0], 1e-6), expect), 1e-5);
  EXPECT_LT(max_diff(gated_residual_reference(x.to(at::kFloat), y.to(at::kFloat), m[2]),
                     x + y * m[2].to(at::kDouble)),
            1e-5);

  auto [cos, sin] = rope_table(S, D, at::kCPU);
  at::Tensor wq = at::randn({C}, at::kFloat);
  at::Tensor normed = (x / (x.square().mean(-1, true) + 1e-6).sqrt() * wq.to(at::kDouble)).view({B, S, H, D});
  at::Tensor rotated = normed.clone();
  for (int64_t i = 0; i < D / 2; ++i) {
    at::Tensor c = cos.select(3, i).to(at::kDouble), s = sin.select(3, i).to(at::kDouble);
    at::Tensor x1 = normed.select(3, 2 * i), x2 = normed.select(3, 2 * i + 1);
    rotated.select(3, 2 * i).copy_(x1 * c - x2 * s);
    rotated.select(3, 2 * i + 1).copy_(x1 * s + x2 * c);
  }
  EXPECT_LT(max_diff(rms_norm_rope_reference(x.to(at::kFloat), wq, 1e-6, H, cos, sin), rotated), 1e-5);
  EXPECT_LT(max_diff(rms_norm_rope_reference(x.to(at::kFloat), wq, 1e-6, H, {}, {}), normed), 1e-5);

  at::Tensor lw = at::randn({7, C}, at::kDouble), lb = at::randn({7}, at::kDouble);
  at::Tensor pre = at::matmul(x, lw.t()) + lb;
  at::Tensor gelu = 0.5 * pre * (1 + at::tanh(std::sqrt(2.0 / M_PI) * (pre + 0.044715 * pre.pow(3))));
  EXPECT_LT(max_diff(linear_gelu_tanh(x.to(at::kFloat), lw.to(at::kFloat), lb.to(at::kFloat)), gelu), 1e-4);

  // On the CPU every op is its reference.
  const at::Tensor xf = x.to(at::kFloat);
  EXPECT_FALSE(modulated_layer_norm_fuses(xf, {}, {}, m[1], m[0]));
  EXPECT_FALSE(gated_residual_fuses(xf, y.to(at::kFloat), m[2]));
  EXPECT_FALSE(rms_norm_rope_fuses(xf, wq, H, cos, sin));
}

// One bf16/fp16 rounding step of the largest value: what two roundings that differ once may give.
double rounding_tolerance(const at::Tensor& ref) {
  const double ulp = ref.scalar_type() == at::kFloat ? 1e-6 : ref.scalar_type() == at::kHalf ? 1.0 / 1024 : 1.0 / 128;
  return ulp * std::max(1.0, max_abs(ref.to(at::kFloat)));
}

struct RowCase {
  int64_t B, S, C, heads;
  at::ScalarType type;
};

// Widths: Wan 1.3B and 14B rows; a warp per row holding 1, 2, 4 and 8 vectors a lane, some
// lanes idle; a CTA per row (fp32 1536, 3072, 5120); one vector; row counts that leave warps of
// the last CTA idle; one token; one batch entry.
const RowCase kRowCases[] = {
    {2, 37, 1536, 12, at::kBFloat16}, {1, 3, 5120, 40, at::kBFloat16}, {2, 9, 1544, 2, at::kBFloat16},
    {3, 4, 8, 2, at::kBFloat16},      {2, 11, 24, 2, at::kFloat},     {2, 5, 40, 4, at::kHalf},
    {2, 1, 64, 4, at::kBFloat16},     {1, 17, 3072, 24, at::kHalf},   {1, 5, 512, 4, at::kBFloat16},
    {2, 3, 1024, 8, at::kHalf},       {2, 7, 1536, 12, at::kFloat},
};

TEST(DitBlockOpsCuda, FusedRowsMatchTheReferences) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Device gpu(at::kCUDA);
  at::manual_seed(1);
  for (const RowCase& c : kRowCases) {
    SCOPED_TRACE(testing::Message() << c.B << "x" << c.S << "x" << c.C << " heads " << c.heads << " " << c.type);
    at::Tensor x = (at::randn({c.B, c.S, c.C}) * 3 + 1).to(gpu, c.type);
    at::Tensor y = at::randn({c.B, c.S, c.C}).to(gpu, c.type);
    auto m = modulation(c.B, c.C, gpu);
    at::Tensor w = at::randn({c.C}).to(gpu), b = at::randn({c.C}).to(gpu);

    // The kernels, not the fallback, must be what is compared below.
    const int64_t D = c.C / c.heads;
    auto [cos, sin] = rope_table(c.S, D, gpu);
    at::Tensor wq = (at::rand({c.C}) + 0.5).to(gpu, c.type);
    EXPECT_TRUE(modulated_layer_norm_fuses(x, {}, {}, m[1], m[0]));
    EXPECT_TRUE(modulated_layer_norm_fuses(x, w, b, m[1].narrow(0, 0, 1), m[0].narrow(0, 0, 1)));
    EXPECT_TRUE(gated_residual_fuses(x, y, m[2]));
    EXPECT_TRUE(gated_residual_fuses(x, y, {}));
    // RoPE's vectors must hold whole pairs of one head: head_dim a multiple of the 16-byte vector.
    EXPECT_EQ(rms_norm_rope_fuses(x, wq, c.heads, cos, sin), D % (16 / int64_t(x.element_size())) == 0);

    at::Tensor ref = modulated_layer_norm_reference(x, {}, {}, m[1], m[0], 1e-6);
    EXPECT_LE(max_diff(modulated_layer_norm(x, {}, {}, m[1], m[0], 1e-6), ref), rounding_tolerance(ref));
    ref = modulated_layer_norm_reference(x, w, b, {}, {}, 1e-6);
    EXPECT_LE(max_diff(modulated_layer_norm(x, w, b, {}, {}, 1e-6), ref), rounding_tolerance(ref));
    at::Tensor one_scale = m[1].narrow(0, 0, 1), one_shift = m[0].narrow(0, 0, 1);  // broadcast over B
    ref = modulated_layer_norm_reference(x, w, b, one_scale, one_shift, 1e-6);
    EXPECT_LE(max_diff(modulated_layer_norm(x, w, b, one_scale, one_shift, 1e-6), ref), rounding_tolerance(ref));

    ref = gated_residual_reference(x, y, m[2]);
    EXPECT_LE(max_diff(gated_residual(x, y, m[2]), ref), rounding_tolerance(ref));
    ref = gated_residual_reference(x, y, {});
    EXPECT_LE(max_diff(gated_residual(x, y, {}), ref), rounding_tolerance(ref));

    ref = rms_norm_rope_reference(x, wq, 1e-6, c.heads, cos, sin);
    at::Tensor got = rms_norm_rope(x, wq, 1e-6, c.heads, cos, sin);
    EXPECT_EQ(got.sizes(), ref.sizes());
    EXPECT_LE(max_diff(got, ref), 2 * rounding_tolerance(ref));
    ref = rms_norm_rope_reference(x, wq, 1e-6, c.heads, {}, {});
    EXPECT_LE(max_diff(rms_norm_rope(x, wq, 1e-6, c.heads, {}, {}), ref), 2 * rounding_tolerance(ref));
  }
}

TEST(DitBlockOpsCuda, StridedInputsAndAutogradTakeTheReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Device gpu(at::kCUDA);
  at::manual_seed(2);
  at::Tensor wide = at::randn({2, 7, 2 * 64}).to(gpu, at::kBFloat16);
  at::Tensor x = wide.narrow(2, 0, 64);  // rows not contiguous
  auto m = modulation(2, 64, gpu);
  EXPECT_FALSE(modulated_layer_norm_fuses(x, {}, {}, m[1], m[0]));
  EXPECT_TRUE(at::equal(modulated_layer_norm(x, {}, {}, m[1], m[0], 1e-6),
                        modulated_layer_norm_reference(x, {}, {}, m[1], m[0], 1e-6)));

  at::Tensor leaf = at::randn({2, 7, 64}, at::TensorOptions().device(gpu)).requires_grad_(true);
  EXPECT_FALSE(modulated_layer_norm_fuses(leaf, {}, {}, m[1], m[0]));
  EXPECT_FALSE(gated_residual_fuses(leaf, leaf, m[2]));
  at::Tensor out = gated_residual(modulated_layer_norm(leaf, {}, {}, m[1], m[0], 1e-6), leaf, m[2]);
  out.sum().backward();
  ASSERT_TRUE(leaf.grad().defined());
  EXPECT_TRUE(at::isfinite(leaf.grad()).all().item<bool>());
}

TEST(DitBlockOpsCuda, LinearGeluMatchesTheReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Device gpu(at::kCUDA);
  at::manual_seed(3);
  for (at::ScalarType type : {at::kBFloat16, at::kFloat}) {
    at::Tensor x = at::randn({2, 37, 64}).to(gpu, type), w = (at::randn({96, 64}) * 0.2).to(gpu, type);
    at::Tensor b = at::randn({96}).to(gpu, type);
    at::Tensor ref = linear_gelu_tanh_reference(x, w, b);
    at::Tensor got = linear_gelu_tanh(x, w, b);
    EXPECT_EQ(got.sizes(), ref.sizes());
    EXPECT_LE(max_diff(got, ref), 2 * rounding_tolerance(ref) + (type == at::kFloat ? 1e-3 : 0.0));
  }
}

}  // namespace
}  // namespace ditkit
