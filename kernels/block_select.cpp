#include "kernels/block_select.h"

#include <ATen/ATen.h>

#include "ditkit_config.h"
#if DITKIT_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/block_select_cuda.h"
#endif

#include <algorithm>
#include <cmath>
#include <numeric>

namespace ditkit {

namespace {

void check_select_args(const at::Tensor& scores, const BlockGeometry& g, const BlockSelection& s) {
  TORCH_CHECK(scores.dim() == 4, "select_blocks: scores must be [B, H, NQ, NK]");
  TORCH_CHECK(scores.size(2) == g.num_q_blocks() && scores.size(3) == g.num_k_blocks(), "select_blocks: scores ",
              scores.sizes(), " do not match ", g.tokens, " tokens in blocks of ", g.q_block, "x", g.k_block);
  TORCH_CHECK(s.top_k > 0 || (s.mass > 0 && s.mass <= 1), "select_blocks: need top_k > 0 or mass in (0, 1], got top_k=",
              s.top_k, " mass=", s.mass);
  TORCH_CHECK(s.keep_first >= 0, "select_blocks: keep_first must be >= 0");
}

}  // namespace

at::Tensor key_block_sizes(const BlockGeometry& g, at::Device device) {
  // Built on the device: a host-to-device copy would synchronise (and break graph capture).
  at::Tensor n = at::full({g.num_k_blocks()}, static_cast<double>(g.k_block), at::dtype(at::kDouble).device(device));
  if (g.tokens % g.k_block) n.narrow(0, g.num_k_blocks() - 1, 1).fill_(static_cast<double>(g.tokens % g.k_block));
  return n;
}

at::Tensor forced_blocks(const BlockGeometry& g, const BlockSelection& s, at::Device device) {
  const int64_t NQ = g.num_q_blocks(), NK = g.num_k_blocks();
  auto opts = at::dtype(at::kLong).device(device);
  at::Tensor j = at::arange(NK, opts).view({1, NK});
  at::Tensor forced = (j < s.keep_first).expand({NQ, NK});
  if (s.keep_diagonal) {
    at::Tensor i = at::arange(NQ, opts).view({NQ, 1});
    // Key block j overlaps query block i's tokens [i·qb, (i+1)·qb).
    forced = forced | ((j * g.k_block < (i + 1) * g.q_block) & ((j + 1) * g.k_block > i * g.q_block));
  }
  return forced.contiguous();
}

at::Tensor select_blocks(const at::Tensor& scores_in, const BlockGeometry& g, const BlockSelection& s) {
  check_select_args(scores_in, g, s);
  at::Tensor forced = forced_blocks(g, s, scores_in.device());
  at::Tensor scores = scores_in.to(at::kFloat);
  if (s.top_k > 0) {
    // Forced blocks win every comparison, so they are part of the k.
    at::Tensor ranked = scores.masked_fill(forced, std::numeric_limits<float>::infinity());
    at::Tensor idx = std::get<1>(ranked.topk(std::min(s.top_k, g.num_k_blocks()), -1));
    return at::zeros(scores.sizes(), scores.options().dtype(at::kBool)).scatter_(-1, idx, true);
  }
  at::Tensor logits = scores.to(at::kDouble) + key_block_sizes(g, scores.device()).log();
  at::Tensor p = at::softmax(logits, -1);
  auto [sorted, order] = p.sort(-1, /*descending=*/true);
  // Keep a block while the mass before it is still short of the target.
  at::Tensor keep_sorted = (sorted.cumsum(-1) - sorted) < s.mass;
  at::Tensor keep = at::zeros_like(keep_sorted).scatter_(-1, order, keep_sorted);
  return keep | forced;
}

BlockCsr select_blocks_csr(const at::Tensor& scores, const BlockGeometry& g, const BlockSelection& s) {
  check_select_args(scores, g, s);
#if DITKIT_HAVE_CUDA
  if (scores.is_cuda() && g.num_k_blocks() <= cuda::kMaxSelectBlocks) {
    c10::cuda::CUDAGuard guard(scores.device());
    const int64_t B = scores.size(0), H = scores.size(1), NQ = g.num_q_blocks(), NK = g.num_k_blocks();
    BlockCsr csr{{}, {}, B, H, NQ, NK};
    const int64_t R = csr.rows();
    at::Tensor flat = scores.to(at::kFloat).contiguous();
    auto int_opts = scores.options().dtype(at::kInt);
    cuda::SelectArgs args{flat.data_ptr<float>(), R, NQ, NK, g.tokens, g.q_block, g.k_block, s.top_k, s.mass,
                          s.keep_first, s.keep_diagonal, nullptr, nullptr, nullptr, nullptr};
    auto stream = c10::cuda::getCurrentCUDAStream();
    if (s.top_k > 0) {
      const int64_t k = std::min(s.top_k, NK);
      csr.row_offsets = at::empty({R + 1}, int_opts);
      csr.col_indices = at::empty({R * k}, int_opts);
      csr.row_length = k;
      args.offsets = csr.row_offsets.data_ptr<int32_t>();
      args.cols = csr.col_indices.data_ptr<int32_t>();
      cudaError_t err = cuda::launch_select_blocks(args, stream);
      TORCH_CHECK(err == cudaSuccess, "select_blocks_csr: CUDA launch failed: ", cudaGetErrorString(err));
      return csr;
    }
    at::Tensor keep = at::empty({B, H, NQ, NK}, scores.options().dtype(at::kByte));
    at::Tensor counts = at::empty({R}, int_opts);
    args.keep = keep.data_ptr<uint8_t>();
    args.counts = counts.data_ptr<int32_t>();
    cudaError_t err = cuda::launch_select_blocks(args, stream);
    TORCH_CHECK(err == cudaSuccess, "select_blocks_csr: CUDA launch failed: ", cudaGetErrorString(err));
    return mask_to_csr(keep.to(at::kBool));
  }
#endif
  return mask_to_csr(select_blocks(scores, g, s));
}

at::Tensor select_blocks_reference(const at::Tensor& scores_in, const BlockGeometry& g, const BlockSelection& s) {
  check_select_args(scores_in, g, s);
  at::Tensor scores = scores_in.to(at::kCPU, at::kDouble).contiguous();
  const int64_t B = scores.size(0), H = scores.size(1), NQ = scores.size(2), NK = scores.size(3);
  at::Tensor forced = forced_blocks(g, s, at::kCPU);
  auto fa = forced.accessor<bool, 2>();
  at::Tensor out = at::zeros({B, H, NQ, NK}, at::kBool);
  auto sa = scores.accessor<double, 4>();
  auto oa = out.accessor<bool, 4>();
  std::vector<int64_t> order(NK);
  std::vector<double> value(NK);
  std::vector<float> key(NK);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < NQ; ++i) {
        for (int64_t j = 0; j < NK; ++j) {
          double n = j == NK - 1 && g.tokens % g.k_block ? g.tokens % g.k_block : g.k_block;
          value[j] = s.top_k > 0 ? (fa[i][j] ? INFINITY : sa[b][h][i][j]) : sa[b][h][i][j] + std::log(n);
          // Ranked as the kernel ranks: on the value rounded to float (its radix sort's 32-bit
          // keys), ties to the lower index. Log-masses closer than float's precision are equal;
          // ranking them in fp64 failed 3 of 40 runs of a 1,182-block test (AttentionBlocksCuda).
          key[j] = static_cast<float>(value[j]);
        }
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return key[x] > key[y]; });
        if (s.top_k > 0) {
          for (int64_t r = 0; r < std::min(s.top_k, NK); ++r) oa[b][h][i][order[r]] = true;
          continue;
        }
        double mx = value[order[0]], total = 0, before = 0;
        for (int64_t j = 0; j < NK; ++j) total += std::exp(value[j] - mx);
        for (int64_t r = 0; r < NK && before < s.mass; ++r) {
          oa[b][h][i][order[r]] = true;
          before += std::exp(value[order[r]] - mx) / total;
        }
        for (int64_t j = 0; j < NK; ++j) oa[b][h][i][j] = oa[b][h][i][j] || fa[i][j];
      }
  return out;
}

}  // namespace ditkit
