#include "kernels/block_scores.h"

#include <ATen/ATen.h>

#include "ditkit_config.h"
#if DITKIT_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/block_scores_cuda.h"
#include "kernels/cuda_element_type.h"
#endif

namespace ditkit {

namespace {

void check_scores_args(const at::Tensor& qp, const at::Tensor& kp) {
  TORCH_CHECK(qp.dim() == 4 && kp.dim() == 4, "block_scores: pooled q and k must be [B, N, H, D]");
  TORCH_CHECK(qp.size(0) == kp.size(0) && qp.size(2) == kp.size(2) && qp.size(3) == kp.size(3),
              "block_scores: q ", qp.sizes(), " and k ", kp.sizes(), " differ in batch, heads or head dim");
}

#if DITKIT_HAVE_CUDA
// The kernel reads the pooled [B, N, H, D] tensors where they are; other dtypes and mixed
// dtypes take the ATen path.
bool block_scores_kernel_applies(const at::Tensor& qp, const at::Tensor& kp) {
  return qp.is_cuda() && kp.device() == qp.device() && qp.scalar_type() == kp.scalar_type() &&
         cuda::element_type_of(qp.scalar_type());
}

at::Tensor block_scores_cuda(const at::Tensor& qp_in, const at::Tensor& kp_in, double scale) {
  at::Tensor qp = qp_in.stride(3) == 1 ? qp_in : qp_in.contiguous();
  at::Tensor kp = kp_in.stride(3) == 1 ? kp_in : kp_in.contiguous();
  const int64_t B = qp.size(0), NQ = qp.size(1), H = qp.size(2), NK = kp.size(1);
  at::Tensor out = at::empty({B, H, NQ, NK}, qp.options().dtype(at::kFloat));
  c10::cuda::CUDAGuard guard(qp.device());
  cuda::BlockScoresArgs args{qp.data_ptr(),
                             kp.data_ptr(),
                             out.data_ptr<float>(),
                             *cuda::element_type_of(qp.scalar_type()),
                             B, H, qp.size(3), NQ, NK,
                             qp.stride(0), qp.stride(1), qp.stride(2),
                             kp.stride(0), kp.stride(1), kp.stride(2),
                             static_cast<float>(scale)};
  cudaError_t err = cuda::launch_block_scores(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "block_scores: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}
#endif

}  // namespace

at::Tensor block_scores(const at::Tensor& q_pooled, const at::Tensor& k_pooled, double scale) {
  check_scores_args(q_pooled, k_pooled);
#if DITKIT_HAVE_CUDA
  if (block_scores_kernel_applies(q_pooled, k_pooled)) return block_scores_cuda(q_pooled, k_pooled, scale);
#endif
  at::Tensor q = q_pooled.transpose(1, 2).to(at::kFloat);  // [B, H, NQ, D]
  at::Tensor k = k_pooled.transpose(1, 2).to(at::kFloat);  // [B, H, NK, D]
  return at::matmul(q, k.transpose(-1, -2)).mul_(scale);
}

at::Tensor block_scores_reference(const at::Tensor& q_pooled, const at::Tensor& k_pooled, double scale) {
  check_scores_args(q_pooled, k_pooled);
  at::Tensor q = q_pooled.to(at::kCPU, at::kDouble).contiguous();
  at::Tensor k = k_pooled.to(at::kCPU, at::kDouble).contiguous();
  const int64_t B = q.size(0), NQ = q.size(1), NK = k.size(1), H = q.size(2), D = q.size(3);
  at::Tensor out = at::empty({B, H, NQ, NK}, at::kDouble);
  auto qa = q.accessor<double, 4>();
  auto ka = k.accessor<double, 4>();
  auto oa = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < NQ; ++i)
        for (int64_t j = 0; j < NK; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qa[b][i][h][d] * ka[b][j][h][d];
          oa[b][h][i][j] = dot * scale;
        }
  return out;
}

}  // namespace ditkit
