#include "kernels/block_sparse_attention.h"

#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <vector>

#include "ditkit_config.h"
#if DITKIT_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/block_sparse_attention_cuda.h"
#endif

namespace ditkit {

namespace {

double check_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const BlockCsr& csr,
                            BlockShape blocks, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "block_sparse_attention: q, k, v must share one [B, S, H, D] shape, got ", q.sizes(), " ", k.sizes(),
              " ", v.sizes());
  TORCH_CHECK(blocks.q_block > 0 && blocks.k_block > 0, "block_sparse_attention: block sizes must be positive");
  const int64_t S = q.size(1);
  TORCH_CHECK(csr.batch == q.size(0) && csr.heads == q.size(2) &&
                  csr.num_q_blocks == (S + blocks.q_block - 1) / blocks.q_block &&
                  csr.num_k_blocks == (S + blocks.k_block - 1) / blocks.k_block,
              "block_sparse_attention: block map [", csr.batch, ", ", csr.heads, ", ", csr.num_q_blocks, ", ",
              csr.num_k_blocks, "] does not fit q ", q.sizes(), " in blocks of ", blocks.q_block, "x", blocks.k_block);
  return scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
}

// Expands a block map [..., NQ, NK] to tokens [..., S, S].
at::Tensor token_mask(const at::Tensor& block_mask, int64_t S, BlockShape blocks) {
  return block_mask.repeat_interleave(blocks.q_block, -2)
      .narrow(-2, 0, S)
      .repeat_interleave(blocks.k_block, -1)
      .narrow(-1, 0, S);
}

#if DITKIT_HAVE_CUDA
// The Hopper kernel's arguments for these inputs, or nothing when it does not take them
// (another device, dtype, head dim or block shape, unaligned rows). Pointers are filled in later.
std::optional<cuda::BlockSparseAttentionArgs> kernel_args(const at::Tensor& q, const at::Tensor& k,
                                                          const at::Tensor& v, BlockShape blocks) {
  const auto dtype = q.scalar_type();
  if (!q.is_cuda() || (dtype != at::kBFloat16 && dtype != at::kHalf) || k.scalar_type() != dtype ||
      v.scalar_type() != dtype || k.device() != q.device() || v.device() != q.device() || blocks.q_block != 128 ||
      q.stride(3) != 1 || k.stride(3) != 1 || v.stride(3) != 1)
    return std::nullopt;
  c10::cuda::CUDAGuard guard(q.device());
  if (!cuda::block_sparse_attention_kernel_available()) return std::nullopt;
  cuda::BlockSparseAttentionArgs a{};
  a.dtype = dtype == at::kBFloat16 ? cuda::AttentionDtype::kBFloat16 : cuda::AttentionDtype::kFloat16;
  a.q = q.data_ptr();
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  for (int i = 0; i < 3; ++i) {
    a.q_strides[i] = q.stride(i);
    a.k_strides[i] = k.stride(i);
    a.v_strides[i] = v.stride(i);
  }
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  a.out_strides[0] = S * H * D, a.out_strides[1] = H * D, a.out_strides[2] = D;  // a fresh contiguous output
  a.batch = B, a.tokens = S, a.heads = H, a.head_dim = D, a.k_block = blocks.k_block;
  if (!cuda::block_sparse_attention_kernel_supports(a)) return std::nullopt;
  return a;
}

// Launches the kernel with the block map (or none) already in `a`; allocates the output and LSE.
AttentionOutput run_kernel(cuda::BlockSparseAttentionArgs& a, const at::Tensor& q, double scale) {
  at::Tensor out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor lse = at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(at::kFloat));
  a.out = out.data_ptr();
  a.lse = lse.data_ptr<float>();
  a.scale = static_cast<float>(scale);
  cudaError_t err = cuda::launch_block_sparse_attention(a, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "block_sparse_attention: CUDA launch failed: ", cudaGetErrorString(err));
  return {out, lse};
}

// run_kernel with the block map: its rows, and the order CTAs take them in (index order when
// every row has one length, which the CSR knows for top-k rows).
AttentionOutput run_sparse_kernel(cuda::BlockSparseAttentionArgs& a, const at::Tensor& q, const BlockCsr& csr,
                                  double scale) {
  TORCH_CHECK(csr.row_offsets.device() == q.device() && csr.col_indices.device() == q.device(),
              "block_sparse_attention: the block map must be on q's device ", q.device());
  c10::cuda::CUDAGuard guard(q.device());
  at::Tensor offsets = csr.row_offsets.to(at::kInt).contiguous(), cols = csr.col_indices.to(at::kInt).contiguous();
  at::Tensor order = csr.row_length >= 0 ? at::Tensor() : rows_longest_first(offsets);
  a.row_offsets = offsets.data_ptr<int32_t>();
  a.col_indices = cols.data_ptr<int32_t>();
  a.row_order = order.defined() ? order.data_ptr<int32_t>() : nullptr;
  return run_kernel(a, q, scale);
}
#endif

}  // namespace

at::Tensor rows_longest_first(const at::Tensor& row_offsets) {
  TORCH_CHECK(row_offsets.dim() == 1 && row_offsets.numel() >= 1,
              "rows_longest_first: row_offsets must be 1-D with rows + 1 entries, got ", row_offsets.sizes());
  const int64_t rows = row_offsets.numel() - 1;
  at::Tensor offsets = row_offsets.to(at::kInt).contiguous();
#if DITKIT_HAVE_CUDA
  if (offsets.is_cuda()) {
    c10::cuda::CUDAGuard guard(offsets.device());
    at::Tensor order = at::empty({rows}, offsets.options());
    cudaError_t err = cuda::launch_longest_first_order(offsets.data_ptr<int32_t>(), rows, order.data_ptr<int32_t>(),
                                                       c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "rows_longest_first: CUDA launch failed: ", cudaGetErrorString(err));
    return order;
  }
#endif
  return at::argsort(offsets.narrow(0, 1, rows) - offsets.narrow(0, 0, rows), /*stable=*/true, /*dim=*/0,
                     /*descending=*/true)
      .to(at::kInt);
}

bool block_sparse_attention_uses_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        BlockShape blocks) {
#if DITKIT_HAVE_CUDA
  return kernel_args(q, k, v, blocks).has_value();
#else
  return false;
#endif
}

AttentionOutput block_sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const BlockCsr& csr, BlockShape blocks, double scale) {
  scale = check_attention_args(q, k, v, csr, blocks, scale);
#if DITKIT_HAVE_CUDA
  if (auto args = kernel_args(q, k, v, blocks)) return run_sparse_kernel(*args, q, csr, scale);
#endif
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2);
  at::Tensor mask = csr_to_mask(csr);
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({B, H, S}, q.options().dtype(at::kFloat));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      at::Tensor qh = q.select(0, b).select(1, h).to(at::kFloat);  // [S, D]
      at::Tensor kh = k.select(0, b).select(1, h).to(at::kFloat);
      at::Tensor vh = v.select(0, b).select(1, h).to(at::kFloat);
      at::Tensor scores = at::matmul(qh, kh.t()).mul_(scale);
      scores.masked_fill_(token_mask(mask[b][h], S, blocks).logical_not(), -INFINITY);
      at::Tensor row_lse = at::logsumexp(scores, -1, /*keepdim=*/true);
      // Empty rows: lse = -inf makes exp(-inf - -inf) NaN; their weights are zero instead.
      at::Tensor p = at::exp(scores - row_lse).nan_to_num_(0.0);
      out.select(0, b).select(1, h).copy_(at::matmul(p, vh));
      lse[b][h].copy_(row_lse.squeeze(-1));
    }
  return {out, lse};
}

bool block_sparse_attention_fuses_linear(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         BlockShape blocks) {
  return q.dim() == 4 && q.size(3) == 128 && block_sparse_attention_uses_kernel(q, k, v, blocks);
}

AttentionOutput block_sparse_attention_with_linear(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   const BlockCsr& csr, BlockShape blocks,
                                                   const at::Tensor& complement_sums, const at::Tensor& projection,
                                                   double scale) {
  scale = check_attention_args(q, k, v, csr, blocks, scale);
  const int64_t D = q.size(3);
  const std::vector<int64_t> sums_shape{csr.batch, csr.heads, csr.num_q_blocks, D + 1, D};
  TORCH_CHECK(complement_sums.sizes() == at::IntArrayRef(sums_shape) && complement_sums.is_contiguous() &&
                  complement_sums.scalar_type() == q.scalar_type() && complement_sums.device() == q.device(),
              "block_sparse_attention_with_linear: complement sums must be contiguous ", q.scalar_type(), " ",
              at::IntArrayRef(sums_shape), " on ", q.device(), ", got ", complement_sums.scalar_type(), " ",
              complement_sums.sizes(), " on ", complement_sums.device());
  TORCH_CHECK(projection.dim() == 2 && projection.size(0) == D && projection.size(1) == D &&
                  projection.is_contiguous() && projection.scalar_type() == q.scalar_type() &&
                  projection.device() == q.device(),
              "block_sparse_attention_with_linear: the projection must be contiguous ", q.scalar_type(), " [", D, ", ",
              D, "] on ", q.device(), ", got ", projection.scalar_type(), " ", projection.sizes(), " on ",
              projection.device());
#if DITKIT_HAVE_CUDA
  if (auto args = kernel_args(q, k, v, blocks); args && D == 128) {
    args->complement_sums = complement_sums.data_ptr();
    args->projection = projection.data_ptr();
    if (cuda::block_sparse_attention_kernel_supports(*args)) return run_sparse_kernel(*args, q, csr, scale);
  }
#endif
  TORCH_CHECK(false, "block_sparse_attention_with_linear: the kernel does not fuse the linear branch for these "
                     "inputs (", q.device(), ", ", q.scalar_type(), ", head dim ", D,
              "); check block_sparse_attention_fuses_linear first");
}

AttentionOutput block_sparse_attention_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                const BlockCsr& csr, BlockShape blocks, double scale) {
  scale = check_attention_args(q, k, v, csr, blocks, scale);
  at::Tensor mask = token_mask(csr_to_mask(csr), q.size(1), blocks);  // [B, H, S, S]
  at::Tensor out = at::scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask,
                                                    0.0, false, scale);
  return {out.transpose(1, 2), {}};
}

AttentionOutput full_attention_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "full_attention_kernel: q, k, v must share one [B, S, H, D] shape, got ", q.sizes(), " ", k.sizes(), " ",
              v.sizes());
#if DITKIT_HAVE_CUDA
  if (auto args = kernel_args(q, k, v, {128, 128})) {
    c10::cuda::CUDAGuard guard(q.device());
    return run_kernel(*args, q, scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(q.size(3))));
  }
#endif
  TORCH_CHECK(false, "full_attention_kernel: the kernel does not take these inputs (", q.device(), ", ",
              q.scalar_type(), ", head dim ", q.size(3), "); check block_sparse_attention_uses_kernel first");
}

AttentionOutput block_sparse_attention_reference(const at::Tensor& q_in, const at::Tensor& k_in,
                                                 const at::Tensor& v_in, const BlockCsr& csr_in, BlockShape blocks,
                                                 double scale) {
  scale = check_attention_args(q_in, k_in, v_in, csr_in, blocks, scale);
  at::Tensor q = q_in.to(at::kCPU, at::kDouble), k = k_in.to(at::kCPU, at::kDouble),
             v = v_in.to(at::kCPU, at::kDouble);
  at::Tensor offsets = csr_in.row_offsets.to(at::kCPU, at::kLong), cols = csr_in.col_indices.to(at::kCPU, at::kLong);
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t NQ = csr_in.num_q_blocks;
  at::Tensor out = at::zeros({B, S, H, D}, at::kDouble);
  at::Tensor lse = at::full({B, H, S}, -INFINITY, at::kDouble);
  auto off = offsets.accessor<int64_t, 1>();
  auto col = cols.accessor<int64_t, 1>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < NQ; ++i) {
        const int64_t r = (b * H + h) * NQ + i;
        std::vector<int64_t> keys;
        for (int64_t e = off[r]; e < off[r + 1]; ++e)
          for (int64_t t = col[e] * blocks.k_block; t < std::min(S, (col[e] + 1) * blocks.k_block); ++t)
            keys.push_back(t);
        if (keys.empty()) continue;
        const int64_t s0 = i * blocks.q_block, len = std::min(blocks.q_block, S - s0);
        at::Tensor idx = at::tensor(keys, at::kLong);
        at::Tensor qi = q[b].narrow(0, s0, len).select(1, h);             // [len, D]
        at::Tensor kj = k[b].select(1, h).index_select(0, idx);           // [n, D]
        at::Tensor vj = v[b].select(1, h).index_select(0, idx);
        at::Tensor scores = at::matmul(qi, kj.t()) * scale;
        at::Tensor row_lse = at::logsumexp(scores, -1, true);
        out[b].narrow(0, s0, len).select(1, h).copy_(at::matmul(at::exp(scores - row_lse), vj));
        lse[b][h].narrow(0, s0, len).copy_(row_lse.squeeze(-1));
      }
  return {out.to(q_in.scalar_type()), lse.to(at::kFloat)};
}

}  // namespace ditkit
