#include "kernels/complement_linear_attention.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "ditkit_config.h"
#include "kernels/linear_attention.h"
#if DITKIT_HAVE_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/complement_linear_attention_cuda.h"
#endif

namespace ditkit {

namespace {

void check_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const BlockCsr& csr,
                BlockShape blocks) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "complement_linear_attention: q, k, v must share one [B, S, H, D] shape, got ", q.sizes(), " ",
              k.sizes(), " ", v.sizes());
  TORCH_CHECK(blocks.q_block > 0 && blocks.k_block > 0, "complement_linear_attention: block sizes must be positive");
  const int64_t S = q.size(1);
  TORCH_CHECK(csr.batch == q.size(0) && csr.heads == q.size(2) &&
                  csr.num_q_blocks == (S + blocks.q_block - 1) / blocks.q_block &&
                  csr.num_k_blocks == (S + blocks.k_block - 1) / blocks.k_block,
              "complement_linear_attention: block map [", csr.batch, ", ", csr.heads, ", ", csr.num_q_blocks, ", ",
              csr.num_k_blocks, "] does not fit q ", q.sizes(), " in blocks of ", blocks.q_block, "x",
              blocks.k_block);
}

// x [B, S, H, D] -> [B, N, block, H, D], zero tokens appended up to N·block. Zero feature rows add
// nothing to a summary, so the padding is exact for keys; padded query rows are cut off after.
at::Tensor split_blocks(const at::Tensor& x, int64_t block) {
  const int64_t S = x.size(1), N = (S + block - 1) / block;
  at::Tensor padded = N * block == S ? x : at::constant_pad_nd(x, {0, 0, 0, 0, 0, N * block - S});
  return padded.reshape({x.size(0), N, block, x.size(2), x.size(3)});
}

#if DITKIT_HAVE_CUDA
// The kernels' arguments for these inputs, or nothing where they do not take them. The
// intermediate tensors' pointers are filled in later.
std::optional<cuda::ComplementLinearArgs> kernel_args(const at::Tensor& out, const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& v, BlockShape blocks,
                                                      const at::Tensor& projection) {
  const auto dtype = q.scalar_type();
  const auto like_q = [&](const at::Tensor& x) {
    return x.device() == q.device() && x.scalar_type() == dtype && x.sizes() == q.sizes();
  };
  if (!q.is_cuda() || (dtype != at::kHalf && dtype != at::kBFloat16) || !like_q(k) || !like_q(v) || !like_q(out) ||
      !projection.defined() || projection.device() != q.device() || blocks.q_block != 128)
    return std::nullopt;
  if (c10::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad() ||
                                      out.requires_grad() || projection.requires_grad()))
    return std::nullopt;
  const int64_t es = q.element_size();
  const auto rows_aligned = [&](const at::Tensor& x) {
    return x.stride(3) == 1 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 && x.stride(0) * es % 16 == 0 &&
           x.stride(1) * es % 16 == 0 && x.stride(2) * es % 16 == 0;
  };
  if (!rows_aligned(q) || !rows_aligned(k) || !rows_aligned(v) || !rows_aligned(out)) return std::nullopt;
  // bf16 and fp16 tensor cores (the .cu's compute_80 PTX).
  if (at::cuda::getDeviceProperties(q.device().index())->major < 8) return std::nullopt;
  cuda::ComplementLinearArgs a{};
  a.type = dtype == at::kBFloat16 ? cuda::ElementType::kBF16 : cuda::ElementType::kF16;
  a.batch = q.size(0), a.tokens = q.size(1), a.heads = q.size(2), a.head_dim = q.size(3), a.k_block = blocks.k_block;
  a.q = q.data_ptr();
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  a.out = out.data_ptr();
  for (int i = 0; i < 3; ++i) {
    a.q_strides[i] = q.stride(i) * es;
    a.k_strides[i] = k.stride(i) * es;
    a.v_strides[i] = v.stride(i) * es;
    a.out_strides[i] = out.stride(i) * es;
  }
  if (!cuda::complement_linear_kernels_support(a)) return std::nullopt;
  return a;
}

void check_launch(cudaError_t err, const char* kernel) {
  TORCH_CHECK(err == cudaSuccess, "add_projected_complement_linear_attention: CUDA launch of ", kernel,
              " failed: ", cudaGetErrorString(err));
}

// W in q's dtype: a fresh tensor, contiguous and aligned whatever the weight's layout.
at::Tensor kernel_projection(const at::Tensor& q, const at::Tensor& projection) {
  return at::empty(projection.sizes(), q.options()).copy_(projection);
}

// The per-block summaries [h_j·Wᵀ; z_j] ([h_j; z_j] with an undefined `w`) [B, H, NK, D + 1, D]
// in q's dtype, and k's block means into `k_means` where it is defined (the Hopper kernel only).
at::Tensor block_summaries(cuda::ComplementLinearArgs& args, const at::Tensor& q, const at::Tensor& w,
                           const at::Tensor& k_means = {}) {
  const int64_t B = q.size(0), H = q.size(2), D = q.size(3);
  const int64_t NK = (q.size(1) + args.k_block - 1) / args.k_block;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  args.projection = w.defined() ? w.data_ptr() : nullptr;
  at::Tensor summaries = at::empty({B, H, NK, D + 1, D}, q.options());
  args.summaries = summaries.data_ptr();
  args.k_means = k_means.defined() ? k_means.data_ptr() : nullptr;
  if (cuda::block_summaries_sm90_support(args))
    check_launch(cuda::launch_block_summaries_sm90(args, stream), "block_summaries_sm90");
  else
    check_launch(cuda::launch_block_summaries(args, stream), "block_summaries");
  args.k_means = nullptr;
  return summaries;
}

// The CUDA path's first three stages: the summaries (as above, unless given), the complement's
// 0/1 map and the GEMM that sums them; returns the complement sums [B, H, NQ, D + 1, D] in q's
// dtype.
at::Tensor complement_sums(cuda::ComplementLinearArgs& args, const at::Tensor& q, const BlockCsr& critical,
                           const at::Tensor& w, at::Tensor summaries, const std::function<void(const char*)>& done) {
  TORCH_CHECK(critical.row_offsets.device() == q.device() && critical.col_indices.device() == q.device(),
              "add_projected_complement_linear_attention: the block map must be on q's device ", q.device());
  const int64_t B = q.size(0), H = q.size(2), D = q.size(3);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t NQ = critical.num_q_blocks, NK = critical.num_k_blocks;
  if (!summaries.defined()) {
    summaries = block_summaries(args, q, w);
    done("summaries");
  }
  TORCH_CHECK(summaries.sizes() == at::IntArrayRef({B, H, NK, D + 1, D}) &&
                  summaries.scalar_type() == q.scalar_type() && summaries.device() == q.device() &&
                  summaries.is_contiguous(),
              "sparse_linear_attention: the summaries given must be contiguous [", B, ", ", H, ", ", NK, ", ", D + 1,
              ", ", D, "] in q's dtype on q's device, got ", summaries.sizes(), " ", summaries.scalar_type());
  // The complement's 0/1 map in q's dtype (exact), straight from the CSR in one launch.
  const at::Tensor offsets = critical.row_offsets.to(at::kInt).contiguous();
  const at::Tensor cols = critical.col_indices.to(at::kInt).contiguous();
  at::Tensor complement = at::empty({B, H, NQ, NK}, q.options());
  check_launch(cuda::launch_complement_map(offsets.data_ptr<int32_t>(), cols.data_ptr<int32_t>(), critical.rows(), NK,
                                           args.type, complement.data_ptr(), stream),
               "complement_map");
  done("complement map");
  at::Tensor sums = at::matmul(complement, summaries.view({B, H, NK, (D + 1) * D})).view({B, H, NQ, D + 1, D});
  done("complement GEMM");
  return sums;
}
#endif

}  // namespace

bool projected_complement_linear_attention_uses_kernel(const at::Tensor& out, const at::Tensor& q, const at::Tensor& k,
                                                       const at::Tensor& v, BlockShape blocks,
                                                       const at::Tensor& projection) {
#if DITKIT_HAVE_CUDA
  return kernel_args(out, q, k, v, blocks, projection).has_value();
#else
  return false;
#endif
}

void add_projected_complement_linear_attention(at::Tensor& out, const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, const BlockCsr& critical, BlockShape blocks,
                                               const at::Tensor& projection,
                                               const std::function<void(const char* stage)>& after_stage) {
  check_args(q, k, v, critical, blocks);
  const int64_t D = q.size(3);
  TORCH_CHECK(out.sizes() == q.sizes(), "add_projected_complement_linear_attention: out ", out.sizes(),
              " must have q's shape ", q.sizes());
  TORCH_CHECK(projection.dim() == 2 && projection.size(0) == D && projection.size(1) == D,
              "add_projected_complement_linear_attention: projection must be [", D, ", ", D, "], got ",
              projection.sizes());
#if DITKIT_HAVE_CUDA
  if (auto args = kernel_args(out, q, k, v, blocks, projection)) {
    c10::cuda::CUDAGuard guard(q.device());
    const auto done = [&](const char* stage) {
      if (after_stage) after_stage(stage);
    };
    const at::Tensor sums = complement_sums(*args, q, critical, kernel_projection(q, projection), {}, done);
    args->complement_sums = sums.data_ptr();
    check_launch(cuda::launch_linear_combine(*args, c10::cuda::getCurrentCUDAStream()), "linear_combine");
    done("combine");
    return;
  }
#endif
  const at::Tensor wt = projection.t().to(q.scalar_type());
  at::Tensor linear = complement_linear_attention(q, k, v, critical, blocks);
  // One GEMM adds the projected branch onto out in its epilogue (fp32 accumulation).
  out = at::addmm(out.reshape({-1, D}), linear.reshape({-1, D}), wt).view(out.sizes());
}

bool sparse_linear_attention_fuses(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, BlockShape blocks,
                                   const at::Tensor& projection) {
  // The output the kernel writes is fresh and shaped like q: q stands in for it.
  return projected_complement_linear_attention_uses_kernel(q, q, k, v, blocks, projection) &&
         block_sparse_attention_fuses_linear(q, k, v, blocks);
}

std::optional<KeyBlockSummaries> fused_key_block_summaries(const at::Tensor& q, const at::Tensor& k,
                                                           const at::Tensor& v, BlockShape blocks,
                                                           const at::Tensor& projection) {
#if DITKIT_HAVE_CUDA
  auto args = kernel_args(q, q, k, v, blocks, projection);
  if (!args || !block_sparse_attention_fuses_linear(q, k, v, blocks) || !cuda::block_summaries_sm90_support(*args))
    return std::nullopt;
  c10::cuda::CUDAGuard guard(q.device());
  const int64_t NK = (k.size(1) + blocks.k_block - 1) / blocks.k_block;
  KeyBlockSummaries r;
  r.k_means = at::empty({k.size(0), NK, k.size(2), k.size(3)}, k.options());
  r.summaries = block_summaries(*args, q, at::Tensor(), r.k_means);
  return r;
#else
  return std::nullopt;
#endif
}

AttentionOutput sparse_linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const BlockCsr& critical, BlockShape blocks, const at::Tensor& projection,
                                        bool fused, const std::function<void(const char* stage)>& after_stage,
                                        const at::Tensor& summaries) {
#if DITKIT_HAVE_CUDA
  // The output the kernel writes is fresh and shaped like q: q stands in for it.
  auto args = fused ? kernel_args(q, q, k, v, blocks, projection) : std::nullopt;
  if (args && block_sparse_attention_fuses_linear(q, k, v, blocks)) {
    check_args(q, k, v, critical, blocks);
    c10::cuda::CUDAGuard guard(q.device());
    const auto done = [&](const char* stage) {
      if (after_stage) after_stage(stage);
    };
    // The kernel projects φ(Q)H_c once per row, so the summaries stay unprojected.
    const at::Tensor sums = complement_sums(*args, q, critical, at::Tensor(), summaries, done);
    AttentionOutput r =
        block_sparse_attention_with_linear(q, k, v, critical, blocks, sums, kernel_projection(q, projection));
    done("attention + combine");
    return r;
  }
#endif
  TORCH_CHECK(!summaries.defined(),
              "sparse_linear_attention: summaries were given, but the fused path does not take these inputs");
  AttentionOutput r = block_sparse_attention(q, k, v, critical, blocks);
  if (after_stage && projected_complement_linear_attention_uses_kernel(r.out, q, k, v, blocks, projection))
    after_stage("attention");
  add_projected_complement_linear_attention(r.out, q, k, v, critical, blocks, projection, after_stage);
  return r;
}

at::Tensor complement_linear_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const BlockCsr& critical, BlockShape blocks) {
  check_args(q, k, v, critical, blocks);
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t NQ = critical.num_q_blocks, NK = critical.num_k_blocks;
  const at::ScalarType dtype = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  // On the GPU, half and bfloat16 inputs keep their dtype through the GEMMs (fp32 accumulation)
  // and the feature map (softmax accumulates in fp32 and rounds once): the branch is memory-bound,
  // and fp32 operands would double its traffic and leave the tensor cores idle.
  const bool low_precision = q.is_cuda() && (q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16);
  const at::ScalarType gemm_dtype = low_precision ? q.scalar_type() : dtype;

  // x in a new contiguous layout and dtype, in one copy (to() could keep a permuted layout).
  auto relaid = [](const at::Tensor& x, at::ScalarType type) {
    return at::empty(x.sizes(), x.options().dtype(type)).copy_(x);
  };
  // Blocks as GEMM batches, [B, H, N, block, D].
  auto blocked = [&](const at::Tensor& x, int64_t block) {
    return relaid(split_blocks(x, block).permute({0, 3, 1, 2, 4}), gemm_dtype);
  };
  // The feature map before the blocking, so that padded tokens are zero features, not φ(0).
  auto features = [&](const at::Tensor& x, int64_t block) {
    return blocked(softmax_feature_map(x, gemm_dtype), block);
  };
  at::Tensor fk = features(k, blocks.k_block);                                  // [B, H, NK, kb, D]
  at::Tensor h = at::matmul(fk.transpose(-1, -2), blocked(v, blocks.k_block));  // [B, H, NK, D, D]
  at::Tensor z = fk.sum({3}, /*keepdim=*/false, dtype).to(gemm_dtype);          // [B, H, NK, D]
  fk.reset();

  // Complement sums: one 0/1 GEMM each over the stacked summaries.
  at::Tensor complement = csr_to_mask(critical).logical_not().to(gemm_dtype);  // [B, H, NQ, NK]
  at::Tensor hc = at::matmul(complement, h.view({B, H, NK, D * D})).view({B, H, NQ, D, D});
  at::Tensor zc = at::matmul(complement, z).unsqueeze(-1);  // [B, H, NQ, D, 1]
  h.reset();

  at::Tensor fq = features(q, blocks.q_block);  // [B, H, NQ, qb, D]
  at::Tensor num = at::matmul(fq, hc);
  at::Tensor den = at::matmul(fq, zc);
  // φ > 0, so den is 0 exactly where the complement is empty, and num is 0 there too.
  at::Tensor out = num / at::where(den > 0, den, at::ones_like(den));  // [B, H, NQ, qb, D]
  return relaid(out.permute({0, 2, 3, 1, 4}), q.scalar_type()).view({B, NQ * blocks.q_block, H, D}).narrow(1, 0, S);
}

at::Tensor complement_linear_attention_reference(const at::Tensor& q_in, const at::Tensor& k_in,
                                                 const at::Tensor& v_in, const BlockCsr& critical,
                                                 BlockShape blocks) {
  check_args(q_in, k_in, v_in, critical, blocks);
  at::Tensor fq = softmax_feature_map(q_in.to(at::kCPU), at::kDouble).contiguous();
  at::Tensor fk = softmax_feature_map(k_in.to(at::kCPU), at::kDouble).contiguous();
  at::Tensor v = v_in.to(at::kCPU, at::kDouble).contiguous();
  at::Tensor offsets = critical.row_offsets.to(at::kCPU, at::kLong), cols = critical.col_indices.to(at::kCPU, at::kLong);
  auto off = offsets.accessor<int64_t, 1>();
  auto col = cols.accessor<int64_t, 1>();
  const int64_t B = fq.size(0), S = fq.size(1), H = fq.size(2), D = fq.size(3);
  const int64_t NQ = critical.num_q_blocks, NK = critical.num_k_blocks;
  at::Tensor out = at::zeros({B, S, H, D}, at::kDouble);
  auto qa = fq.accessor<double, 4>();
  auto ka = fk.accessor<double, 4>();
  auto va = v.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < NQ; ++i) {
        const int64_t r = (b * H + h) * NQ + i;
        std::vector<bool> is_critical(NK, false);
        for (int64_t e = off[r]; e < off[r + 1]; ++e) is_critical[col[e]] = true;
        for (int64_t t = i * blocks.q_block; t < std::min(S, (i + 1) * blocks.q_block); ++t) {
          double den = 0;
          for (int64_t j = 0; j < NK; ++j) {
            if (is_critical[j]) continue;
            for (int64_t s = j * blocks.k_block; s < std::min(S, (j + 1) * blocks.k_block); ++s) {
              double w = 0;
              for (int64_t d = 0; d < D; ++d) w += qa[b][t][h][d] * ka[b][s][h][d];
              den += w;
              for (int64_t e = 0; e < D; ++e) oa[b][t][h][e] += w * va[b][s][h][e];
            }
          }
          if (den > 0)
            for (int64_t e = 0; e < D; ++e) oa[b][t][h][e] /= den;
        }
      }
  return out.to(q_in.scalar_type());
}

}  // namespace ditkit
