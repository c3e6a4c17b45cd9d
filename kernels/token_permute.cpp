#include "kernels/token_permute.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>

#include "ditkit_config.h"
#if DITKIT_HAVE_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/token_permute_cuda.h"
#endif

namespace ditkit {

namespace {

void check_permute_args(const at::Tensor& x, const at::Tensor& perm) {
  TORCH_CHECK(x.dim() == 4, "permute_tokens: x must be [B, S, H, D], got ", x.sizes());
  TORCH_CHECK(perm.scalar_type() == at::kLong, "permute_tokens: permutation must be int64");
  TORCH_CHECK((perm.dim() == 1 && perm.size(0) == x.size(1)) ||
                  (perm.dim() == 2 && perm.size(0) == x.size(2) && perm.size(1) == x.size(1)),
              "permute_tokens: permutation ", perm.sizes(), " fits neither [S] nor [H, S] for x ", x.sizes());
}

#if DITKIT_HAVE_CUDA
// The vector kernel's conditions: 16-byte rows and strides, 16-byte aligned data.
bool permute_kernel_applies(const at::Tensor& x, const at::Tensor& perm) {
  const int64_t es = x.element_size();
  const auto aligned16 = [&](int64_t elements) { return (elements * es) % 16 == 0; };
  // The kernel has no backward: a gather autograd records must be ATen's.
  const bool records = c10::GradMode::is_enabled() && x.requires_grad();
  return !records && x.is_cuda() && perm.device() == x.device() && x.stride(3) == 1 && aligned16(x.size(3)) &&
         aligned16(x.stride(0)) && aligned16(x.stride(1)) && aligned16(x.stride(2)) &&
         reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
}

at::Tensor permute_tokens_cuda(const at::Tensor& x, const at::Tensor& perm_in) {
  at::Tensor perm = perm_in.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  const int64_t es = x.element_size();
  c10::cuda::CUDAGuard guard(x.device());
  const cuda::TokenPermuteArgs args{x.data_ptr(), out.data_ptr(), perm.data_ptr<int64_t>(), perm.dim() == 2,
                                    x.size(0), x.size(1), x.size(2), x.size(3) * es,
                                    x.stride(0) * es, x.stride(1) * es, x.stride(2) * es};
  const cudaError_t err = cuda::launch_token_permute(args, c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "permute_tokens: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}
#endif

}  // namespace

at::Tensor axis_order_permutation(int64_t frames, int64_t height, int64_t width, const std::string& order,
                                  at::Device device) {
  std::string sorted = order;
  std::sort(sorted.begin(), sorted.end());
  TORCH_CHECK(order.size() == 3 && sorted == "fhw", "axis order '", order,
              "' must list each of f, h, w once (e.g. fhw, hwf, wfh)");
  TORCH_CHECK(frames > 0 && height > 0 && width > 0, "axis_order_permutation: grid ", frames, "x", height, "x",
              width, " must be positive");
  auto axis = [](char c) { return c == 'f' ? 0 : c == 'h' ? 1 : 2; };
  return at::arange(frames * height * width, at::dtype(at::kLong).device(device))
      .view({frames, height, width})
      .permute({axis(order[0]), axis(order[1]), axis(order[2])})
      .reshape(-1);
}

at::Tensor tile_permutation(int64_t frames, int64_t height, int64_t width, int64_t tile_f, int64_t tile_h,
                            int64_t tile_w, at::Device device) {
  TORCH_CHECK(frames > 0 && height > 0 && width > 0, "tile_permutation: grid ", frames, "x", height, "x", width,
              " must be positive");
  TORCH_CHECK(tile_f > 0 && tile_h > 0 && tile_w > 0, "tile_permutation: tile ", tile_f, "x", tile_h, "x", tile_w,
              " must be positive");
  auto opts = at::dtype(at::kLong).device(device);
  const int64_t S = frames * height * width;
  const int64_t tiles_h = (height + tile_h - 1) / tile_h, tiles_w = (width + tile_w - 1) / tile_w;
  at::Tensor f = at::arange(frames, opts).div(tile_f, "floor").view({frames, 1, 1});
  at::Tensor h = at::arange(height, opts).div(tile_h, "floor").view({1, height, 1});
  at::Tensor w = at::arange(width, opts).div(tile_w, "floor").view({1, 1, width});
  at::Tensor tile = ((f * tiles_h + h) * tiles_w + w).reshape(-1);
  // Sorting by (tile, frame-major index) keeps each tile's tokens frame-major.
  return at::argsort(tile * S + at::arange(S, opts));
}

at::Tensor invert_permutation(const at::Tensor& perm) {
  at::Tensor positions = at::arange(perm.size(-1), perm.options()).expand(perm.sizes());
  return at::empty_like(perm).scatter_(-1, perm, positions);
}

at::Tensor permute_tokens(const at::Tensor& x, const at::Tensor& perm) {
  check_permute_args(x, perm);
#if DITKIT_HAVE_CUDA
  if (permute_kernel_applies(x, perm)) return permute_tokens_cuda(x, perm);
#endif
  if (perm.dim() == 1) return x.index_select(1, perm);
  // [H, S] -> index [B, S, H, D] for gather along S.
  at::Tensor index = perm.t().unsqueeze(0).unsqueeze(-1).expand(x.sizes());
  return x.gather(1, index);
}

at::Tensor permute_tokens_reference(const at::Tensor& x_in, const at::Tensor& perm_in) {
  check_permute_args(x_in, perm_in);
  at::Tensor x = x_in.to(at::kCPU).contiguous();
  at::Tensor perm = perm_in.to(at::kCPU).contiguous();
  at::Tensor out = at::empty_like(x);
  const int64_t B = x.size(0), S = x.size(1), H = x.size(2);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < S; ++i)
      for (int64_t h = 0; h < H; ++h) {
        int64_t src = perm.dim() == 1 ? perm[i].item<int64_t>() : perm[h][i].item<int64_t>();
        TORCH_CHECK(src >= 0 && src < S, "permute_tokens: index ", src, " out of range [0, ", S, ")");
        out[b][i][h].copy_(x[b][src][h]);
      }
  return out;
}

}  // namespace ditkit
