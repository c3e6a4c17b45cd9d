#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cmath>

#include "kernels/block_select_cuda.h"

namespace ditkit::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kIndexBits = 11;  // kMaxSelectBlocks = 2^11
static_assert(kMaxSelectBlocks == 1 << kIndexBits, "index bits must cover every key block");
using BlockScanInt = cub::BlockScan<int, kThreads>;

// Writes the kept columns of one row (flags in shared memory) in ascending order from `out`,
// scanning the row in chunks of kThreads.
__device__ void write_kept_columns(const uint8_t* flags, int64_t nk, int32_t* out) {
  __shared__ BlockScanInt::TempStorage scan;
  __shared__ int chunk_total;
  int base = 0;
  for (int64_t c = 0; c < nk; c += kThreads) {
    const int64_t j = c + threadIdx.x;
    const int kept = j < nk ? flags[j] : 0;
    int pos, total;
    BlockScanInt(scan).ExclusiveSum(kept, pos, total);
    if (kept) out[base + pos] = static_cast<int32_t>(j);
    if (threadIdx.x == 0) chunk_total = total;
    __syncthreads();
    base += chunk_total;
    __syncthreads();
  }
}

// A sort key that orders by value, then by lower index first: float bits made monotonic in the
// high bits, the complemented index in the low kIndexBits.
__device__ inline uint64_t sort_key(float v, int64_t j) {
  uint32_t u = __float_as_uint(v);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<uint64_t>(u) << kIndexBits) | static_cast<uint64_t>((1 << kIndexBits) - 1 - j);
}

__device__ inline int64_t key_index(uint64_t key) { return (1 << kIndexBits) - 1 - static_cast<int64_t>(key & ((1 << kIndexBits) - 1)); }

// One CTA per row: sort the row's blocks by value in shared memory (a block-wide radix sort),
// then keep the first k, or the prefix whose mass stays short of the target, plus forced blocks.
template <int kItems>
__global__ void __launch_bounds__(kThreads) select_blocks_kernel(SelectArgs a) {
  using BlockSort = cub::BlockRadixSort<uint64_t, kThreads, kItems>;
  using BlockReduce = cub::BlockReduce<double, kThreads>;
  using BlockScan = cub::BlockScan<double, kThreads>;
  __shared__ union {
    typename BlockSort::TempStorage sort;
    typename BlockReduce::TempStorage reduce;
    typename BlockScan::TempStorage scan;
  } temp;
  __shared__ double p[kThreads * kItems];
  __shared__ uint8_t flags[kThreads * kItems];
  __shared__ double shared_max, shared_sum;

  const int64_t nk = a.num_k_blocks, r = blockIdx.x;
  const float* s = a.scores + r * nk;
  const uint8_t* forced = a.forced + (r % a.num_q_blocks) * nk;
  const bool top_k_mode = a.top_k > 0;
  const int64_t last_size = a.tokens % a.k_block;

  // Ranking value: top-k ranks forced blocks first; mass ranks by n_j·exp(score_j).
  uint64_t keys[kItems];
  double local_max = -INFINITY;
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int64_t j = threadIdx.x * kItems + i;
    keys[i] = 0;  // padding sorts last
    if (j >= nk) continue;
    flags[j] = 0;
    float v;
    if (top_k_mode) {
      v = forced[j] ? INFINITY : s[j];
    } else {
      const double n = (j == nk - 1 && last_size) ? last_size : a.k_block;
      p[j] = static_cast<double>(s[j]) + log(n);  // log-mass for now
      local_max = fmax(local_max, p[j]);
      v = static_cast<float>(p[j]);
    }
    keys[i] = sort_key(v, j);
  }
  if (!top_k_mode) {
    const double m = BlockReduce(temp.reduce).Reduce(local_max, [](double x, double y) { return fmax(x, y); });
    if (threadIdx.x == 0) shared_max = m;
    __syncthreads();
    double sum = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      const int64_t j = threadIdx.x * kItems + i;
      if (j < nk) sum += (p[j] = exp(p[j] - shared_max));
    }
    sum = BlockReduce(temp.reduce).Sum(sum);
    if (threadIdx.x == 0) shared_sum = sum;
  }
  __syncthreads();

  BlockSort(temp.sort).SortDescending(keys);  // blocked: thread t holds ranks t·kItems ...
  __syncthreads();

  if (top_k_mode) {
#pragma unroll
    for (int i = 0; i < kItems; ++i)
      if (threadIdx.x * kItems + i < a.top_k && keys[i]) flags[key_index(keys[i])] = 1;
  } else {
    double share[kItems], mine = 0;
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      share[i] = keys[i] ? p[key_index(keys[i])] / shared_sum : 0.0;
      mine += share[i];
    }
    double before;
    BlockScan(temp.scan).ExclusiveSum(mine, before);
#pragma unroll
    for (int i = 0; i < kItems; ++i) {
      if (keys[i]) {
        const int64_t j = key_index(keys[i]);
        flags[j] = before < a.mass || forced[j];
      }
      before += share[i];
    }
  }
  __syncthreads();

  if (top_k_mode) {
    write_kept_columns(flags, nk, a.cols + r * min(a.top_k, nk));
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
  const int64_t r = blockIdx.x;
  write_kept_columns(keep + r * nk, nk, cols + offsets[r]);
}

}  // namespace

cudaError_t launch_select_blocks(const SelectArgs& a, cudaStream_t stream) {
  if (a.rows == 0 || a.num_k_blocks == 0) return cudaSuccess;
  if (a.num_k_blocks > kMaxSelectBlocks || a.rows > 0x7fffffff) return cudaErrorInvalidValue;
  const auto grid = static_cast<unsigned>(a.rows);
  if (a.num_k_blocks <= kThreads * 2)
    select_blocks_kernel<2><<<grid, kThreads, 0, stream>>>(a);
  else if (a.num_k_blocks <= kThreads * 4)
    select_blocks_kernel<4><<<grid, kThreads, 0, stream>>>(a);
  else
    select_blocks_kernel<8><<<grid, kThreads, 0, stream>>>(a);
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
