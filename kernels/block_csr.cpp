#include "kernels/block_csr.h"

#include <ATen/ATen.h>

#include "ditkit_config.h"
#if DITKIT_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/block_select_cuda.h"
#endif

namespace ditkit {

namespace {

void check_mask(const at::Tensor& mask) {
  TORCH_CHECK(mask.dim() == 4 && mask.scalar_type() == at::kBool, "block CSR: mask must be bool [B, H, NQ, NK], got ",
              mask.scalar_type(), " ", mask.sizes());
  TORCH_CHECK(mask.numel() < std::numeric_limits<int32_t>::max(), "block CSR: ", mask.numel(),
              " blocks overflow int32 offsets");
}

}  // namespace

BlockCsr mask_to_csr(const at::Tensor& mask) {
  check_mask(mask);
  BlockCsr csr{{}, {}, mask.size(0), mask.size(1), mask.size(2), mask.size(3)};
  const int64_t R = csr.rows(), NK = csr.num_k_blocks;
  auto long_opts = at::dtype(at::kLong).device(mask.device());
  at::Tensor m = mask.reshape({R, NK});
  at::Tensor counts = m.sum(-1);  // int64 [R]
  at::Tensor offsets = at::zeros({R + 1}, long_opts);
  offsets.narrow(0, 1, R).copy_(counts.cumsum(0));
#if DITKIT_HAVE_CUDA
  if (mask.is_cuda()) {
    c10::cuda::CUDAGuard guard(mask.device());
    csr.row_offsets = offsets.to(at::kInt);
    csr.col_indices = at::zeros({R * NK}, csr.row_offsets.options());
    at::Tensor keep = m.contiguous().view(at::kByte);
    cudaError_t err = cuda::launch_compact_rows(keep.data_ptr<uint8_t>(), csr.row_offsets.data_ptr<int32_t>(), R, NK,
                                                csr.col_indices.data_ptr<int32_t>(), c10::cuda::getCurrentCUDAStream());
    TORCH_CHECK(err == cudaSuccess, "mask_to_csr: CUDA launch failed: ", cudaGetErrorString(err));
    return csr;
  }
#endif
  // Each kept column goes to its row's offset plus the number of kept columns before it (a
  // running count, so columns stay ascending with no sort); the rest go to one spare slot.
  at::Tensor rank = m.cumsum(-1) - 1;
  at::Tensor dest = at::where(m, offsets.narrow(0, 0, R).view({R, 1}) + rank, R * NK);
  at::Tensor cols = at::arange(NK, long_opts).expand({R, NK});
  at::Tensor packed = at::zeros({R * NK + 1}, long_opts).scatter_(0, dest.reshape(-1), cols.reshape(-1));
  csr.row_offsets = offsets.to(at::kInt);
  csr.col_indices = packed.narrow(0, 0, R * NK).to(at::kInt);
  return csr;
}

at::Tensor csr_to_mask(const BlockCsr& csr) {
  const int64_t R = csr.rows(), NK = csr.num_k_blocks;
  auto long_opts = at::dtype(at::kLong).device(csr.row_offsets.device());
  const int64_t capacity = csr.col_indices.numel();
  at::Tensor entry = at::arange(capacity, long_opts);
  at::Tensor offsets = csr.row_offsets.to(at::kLong);
  // Row of each entry: the last offset <= entry.
  at::Tensor row = at::searchsorted(offsets, entry, /*out_int32=*/false, /*right=*/true) - 1;
  at::Tensor valid = entry < offsets.narrow(0, R, 1);
  at::Tensor flat = at::where(valid, row * NK + csr.col_indices.to(at::kLong), R * NK);
  at::Tensor mask = at::zeros({R * NK + 1}, long_opts.dtype(at::kBool)).index_fill_(0, flat, true);
  return mask.narrow(0, 0, R * NK).view({csr.batch, csr.heads, csr.num_q_blocks, NK});
}

BlockCsr mask_to_csr_reference(const at::Tensor& mask_in) {
  check_mask(mask_in);
  at::Tensor mask = mask_in.to(at::kCPU).contiguous();
  BlockCsr csr{{}, {}, mask.size(0), mask.size(1), mask.size(2), mask.size(3)};
  const int64_t R = csr.rows(), NK = csr.num_k_blocks;
  const bool* m = mask.data_ptr<bool>();
  std::vector<int32_t> offsets{0}, cols;
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t j = 0; j < NK; ++j)
      if (m[r * NK + j]) cols.push_back(static_cast<int32_t>(j));
    offsets.push_back(static_cast<int32_t>(cols.size()));
  }
  csr.row_offsets = at::tensor(offsets, at::kInt);
  csr.col_indices = at::tensor(cols, at::kInt).reshape({static_cast<int64_t>(cols.size())});
  return csr;
}

at::Tensor csr_block_density(const BlockCsr& csr) {
  double total = static_cast<double>(csr.rows() * csr.num_k_blocks);
  return csr.row_offsets.narrow(0, csr.rows(), 1).squeeze(0).to(at::kFloat) / std::max(total, 1.0);
}

}  // namespace ditkit
