#include <cstdint>

#include "kernels/token_permute_cuda.h"

namespace ditkit::cuda {
namespace {

// A token row of one head is D contiguous elements: consecutive threads copy consecutive 16-byte
// vectors of it, so both the gathered reads and the writes are coalesced within a row. The index
// is read once per vector from L1; an expanded-index gather would instead read it per element.
__global__ void token_permute_kernel(TokenPermuteArgs a, int64_t vectors_per_row, int64_t total) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= total) return;
  const int64_t v = t % vectors_per_row;
  const int64_t row = t / vectors_per_row;
  const int64_t h = row % a.heads;
  const int64_t i = row / a.heads % a.tokens;
  const int64_t b = row / a.heads / a.tokens;
  const int64_t src = a.perm[a.per_head ? h * a.tokens + i : i];
  const char* x = static_cast<const char*>(a.x) + b * a.stride_b + src * a.stride_s + h * a.stride_h;
  reinterpret_cast<uint4*>(a.out)[t] = reinterpret_cast<const uint4*>(x)[v];
}

}  // namespace

cudaError_t launch_token_permute(const TokenPermuteArgs& a, cudaStream_t stream) {
  const int64_t vectors_per_row = a.row_bytes / 16;
  const int64_t total = a.batch * a.tokens * a.heads * vectors_per_row;
  if (total == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  token_permute_kernel<<<(total + kThreads - 1) / kThreads, kThreads, 0, stream>>>(a, vectors_per_row, total);
  return cudaGetLastError();
}

}  // namespace ditkit::cuda
