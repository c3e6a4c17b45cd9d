#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cmath>

#include "kernels/block_select_cuda.h"

namespace ditkit::cuda {
namespace {

constexpr int kThreads = 256;
using BlockScan = cub::BlockScan<int, kThreads>;
using BlockReduce = cub::BlockReduce<double, kThreads>;

// Writes the kept columns of one row (flags in shared memory) in ascending order from `out`,
// scanning the row in chunks of kThreads. Returns the count (valid in every thread).
__device__ int write_kept_columns(const uint8_t* flags, int64_t nk, int32_t* out, BlockScan::TempStorage& scan) {
  __shared__ int chunk_total;
  int base = 0;
  for (int64_t c = 0; c < nk; c += kThreads) {
    const int64_t j = c + threadIdx.x;
    const int kept = j < nk ? flags[j] : 0;
    int pos, total;
    BlockScan(scan).ExclusiveSum(kept, pos, total);
    if (kept) out[base + pos] = static_cast<int32_t>(j);
    if (threadIdx.x == 0) chunk_total = total;
    __syncthreads();
    base += chunk_total;
    __syncthreads();
  }
  return base;
}

__global__ void select_blocks_kernel(SelectArgs a) {
  extern __shared__ unsigned char smem[];
  const int64_t nk = a.num_k_blocks;
  double* value = reinterpret_cast<double*>(smem);  // [nk] ranking value
  double* p = value + nk;                           // [nk] mass share (mass mode)
  uint8_t* flags = reinterpret_cast<uint8_t*>(p + nk);
  __shared__ BlockScan::TempStorage scan;
  __shared__ BlockReduce::TempStorage reduce;
  __shared__ double shared_max, shared_sum;

  const int64_t r = blockIdx.x;
  const float* s = a.scores + r * nk;
  const uint8_t* forced = a.forced + (r % a.num_q_blocks) * nk;
  const bool top_k_mode = a.top_k > 0;
  const int64_t last_size = a.tokens % a.k_block;
  for (int64_t j = threadIdx.x; j < nk; j += kThreads) {
    if (top_k_mode) {
      value[j] = forced[j] ? INFINITY : static_cast<double>(s[j]);
    } else {
      const double n = (j == nk - 1 && last_size) ? last_size : a.k_block;
      value[j] = static_cast<double>(s[j]) + log(n);
    }
  }
  __syncthreads();

  if (!top_k_mode) {
    double m = -INFINITY;
    for (int64_t j = threadIdx.x; j < nk; j += kThreads) m = fmax(m, value[j]);
    m = BlockReduce(reduce).Reduce(m, [](double x, double y) { return fmax(x, y); });
    if (threadIdx.x == 0) shared_max = m;
    __syncthreads();
    double sum = 0;
    for (int64_t j = threadIdx.x; j < nk; j += kThreads) {
      p[j] = exp(value[j] - shared_max);
      sum += p[j];
    }
    sum = BlockReduce(reduce).Sum(sum);
    if (threadIdx.x == 0) shared_sum = sum;
    __syncthreads();
    for (int64_t j = threadIdx.x; j < nk; j += kThreads) p[j] /= shared_sum;
    __syncthreads();
  }

  // A block's rank: how many blocks sort before it (higher value, or equal value and lower index).
  for (int64_t j = threadIdx.x; j < nk; j += kThreads) {
    const double v = value[j];
    int64_t rank = 0;
    double before = 0;
    for (int64_t i = 0; i < nk; ++i) {
      const bool ahead = value[i] > v || (value[i] == v && i < j);
      rank += ahead;
      if (!top_k_mode && ahead) before += p[i];
    }
    flags[j] = top_k_mode ? rank < a.top_k : (before < a.mass || forced[j]);
  }
  __syncthreads();

  if (top_k_mode) {
    write_kept_columns(flags, nk, a.cols + r * min(a.top_k, nk), scan);
    return;
  }
  int count = 0;
  for (int64_t j = threadIdx.x; j < nk; j += kThreads) {
    a.keep[r * nk + j] = flags[j];
    count += flags[j];
  }
  __shared__ cub::BlockReduce<int, kThreads>::TempStorage reduce_int;
  count = cub::BlockReduce<int, kThreads>(reduce_int).Sum(count);
  if (threadIdx.x == 0) a.counts[r] = count;
}

__global__ void compact_rows_kernel(const uint8_t* keep, const int32_t* offsets, int64_t nk, int32_t* cols) {
  __shared__ BlockScan::TempStorage scan;
  const int64_t r = blockIdx.x;
  write_kept_columns(keep + r * nk, nk, cols + offsets[r], scan);
}

}  // namespace

cudaError_t launch_select_blocks(const SelectArgs& a, cudaStream_t stream) {
  if (a.rows == 0 || a.num_k_blocks == 0) return cudaSuccess;
  if (a.num_k_blocks > kMaxSelectBlocks || a.rows > 0x7fffffff) return cudaErrorInvalidValue;
  const size_t smem = a.num_k_blocks * (2 * sizeof(double) + 1);
  if (smem > 48 * 1024) {
    cudaError_t err = cudaFuncSetAttribute(select_blocks_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  select_blocks_kernel<<<static_cast<unsigned>(a.rows), kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

cudaError_t launch_compact_rows(const uint8_t* keep, const int32_t* offsets, int64_t rows, int64_t nk, int32_t* cols,
                                cudaStream_t stream) {
  if (rows == 0 || nk == 0) return cudaSuccess;
  if (rows > 0x7fffffff) return cudaErrorInvalidValue;
  compact_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(keep, offsets, nk, cols);
  return cudaGetLastError();
}

}  // namespace ditkit::cuda
