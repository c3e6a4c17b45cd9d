#include "kernels/block_pool.h"

#include <ATen/ATen.h>

#include "ditkit_config.h"
#if DITKIT_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/block_pool_cuda.h"
#include "kernels/cuda_element_type.h"
#endif

namespace ditkit {

namespace {

void check_pool_args(const at::Tensor& x, int64_t block) {
  TORCH_CHECK(x.dim() == 4, "block_mean_pool: x must be [B, S, H, D], got ", x.dim(), " dimensions");
  TORCH_CHECK(block > 0, "block_mean_pool: block size must be positive, got ", block);
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "block_mean_pool: x must be floating point, got ",
              x.scalar_type());
}

#if DITKIT_HAVE_CUDA
at::Tensor block_mean_pool_cuda(const at::Tensor& x_in, int64_t block) {
  const auto type = cuda::element_type_of(x_in.scalar_type());
  TORCH_CHECK(type, "block_mean_pool: CUDA path takes f32, f16 or bf16, got ", x_in.scalar_type());
  // Strided views are read in place; only a non-unit stride on D forces a copy.
  at::Tensor x = x_in.stride(3) == 1 ? x_in : x_in.contiguous();
  const int64_t B = x.size(0), S = x.size(1), H = x.size(2), D = x.size(3);
  const int64_t nb = (S + block - 1) / block;
  at::Tensor out = at::empty({B, nb, H, D}, x.options());
  c10::cuda::CUDAGuard guard(x.device());
  cuda::BlockPoolArgs args{x.data_ptr(), out.data_ptr(), *type, B, S, H, D,
                           x.stride(0), x.stride(1), x.stride(2), block};
  cudaError_t err = cuda::launch_block_mean_pool(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "block_mean_pool: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}
#endif

}  // namespace

at::Tensor block_mean_pool_reference(const at::Tensor& x, int64_t block) {
  check_pool_args(x, block);
  at::Tensor xd = x.to(at::kCPU, at::kDouble);
  const int64_t S = x.size(1);
  const int64_t nb = (S + block - 1) / block;
  std::vector<at::Tensor> means;
  means.reserve(nb);
  for (int64_t j = 0; j < nb; ++j) {
    int64_t len = std::min(block, S - j * block);
    means.push_back(xd.narrow(1, j * block, len).mean(1));
  }
  if (nb == 0) return at::empty({x.size(0), 0, x.size(2), x.size(3)}, x.options().device(at::kCPU));
  return at::stack(means, 1).to(x.scalar_type());
}

at::Tensor block_mean_pool(const at::Tensor& x, int64_t block) {
  check_pool_args(x, block);
  if (x.is_cuda()) {
#if DITKIT_HAVE_CUDA
    return block_mean_pool_cuda(x, block);
#else
    TORCH_CHECK(false, "block_mean_pool: this build of ditkit has no CUDA kernels (configured without nvcc)");
#endif
  }
  return block_mean_pool_reference(x, block);
}

}  // namespace ditkit
