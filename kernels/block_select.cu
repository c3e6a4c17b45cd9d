#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cmath>

#include "kernels/block_select_cuda.h"

namespace ditkit::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpRowsPerCta = kThreads / 32;  // top-k rows: one warp each
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

// Float bits made monotonic as unsigned integers (larger float, larger key).
__device__ inline uint32_t orderable(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ inline bool is_forced(const SelectArgs& a, int64_t i, int64_t j) {
  return j < a.keep_first ||
         (a.keep_diagonal && j * a.k_block < (i + 1) * a.q_block && (j + 1) * a.k_block > i * a.q_block);
}

// Mass rows, one CTA a row: sort the row's blocks by log-mass log(n_j) + score_j in shared memory
// (a block-wide radix sort; radix sorting is stable, so equal values keep the lower index first,
// as the CPU reference does), then keep the prefix whose mass stays short of the target, plus the
// forced blocks.
template <int kItems>
__global__ void __launch_bounds__(kThreads) select_mass_kernel(SelectArgs a) {
  using BlockSort = cub::BlockRadixSort<uint32_t, kThreads, kItems, int>;
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

  const int64_t nk = a.num_k_blocks, r = blockIdx.x, i = r % a.num_q_blocks;
  const float* s = a.scores + r * nk;
  const int64_t last_size = a.tokens % a.k_block;

  uint32_t keys[kItems];
  int index[kItems];
  double local_max = -INFINITY;
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    const int64_t j = threadIdx.x * kItems + t;
    index[t] = static_cast<int>(j);
    keys[t] = 0;  // padding sorts last
    if (j >= nk) continue;
    flags[j] = 0;
    const double n = (j == nk - 1 && last_size) ? last_size : a.k_block;
    p[j] = static_cast<double>(s[j]) + log(n);  // log-mass for now
    local_max = fmax(local_max, p[j]);
    keys[t] = orderable(static_cast<float>(p[j]));
  }
  const double m = BlockReduce(temp.reduce).Reduce(local_max, [](double x, double y) { return fmax(x, y); });
  if (threadIdx.x == 0) shared_max = m;
  __syncthreads();
  double sum = 0;
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    const int64_t j = threadIdx.x * kItems + t;
    if (j < nk) sum += (p[j] = exp(p[j] - shared_max));
  }
  sum = BlockReduce(temp.reduce).Sum(sum);
  if (threadIdx.x == 0) shared_sum = sum;
  __syncthreads();

  BlockSort(temp.sort).SortDescending(keys, index);  // blocked: thread t holds ranks t·kItems ...
  __syncthreads();

  double share[kItems], mine = 0;
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    share[t] = index[t] < nk ? p[index[t]] / shared_sum : 0.0;
    mine += share[t];
  }
  double before;
  BlockScan(temp.scan).ExclusiveSum(mine, before);
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    if (index[t] < nk) flags[index[t]] = before < a.mass || is_forced(a, i, index[t]);
    before += share[t];
  }
  __syncthreads();

  int count = 0;
  for (int64_t j = threadIdx.x; j < nk; j += kThreads) {
    a.keep[r * nk + j] = flags[j];
    count += flags[j];
  }
  __shared__ cub::BlockReduce<int, kThreads>::TempStorage reduce_int;
  count = cub::BlockReduce<int, kThreads>(reduce_int).Sum(count);
  if (threadIdx.x == 0) a.counts[r] = count;
}

// Top-k rows, one warp a row: lane l holds blocks l, l + 32, ... as the ranking value's orderable
// bits (forced blocks rank as +inf, so they count toward k). The k-th largest key T is found bit
// by bit from the top (keep a bit when at least k keys reach the prefix with it set: up to 32
// warp-wide counts, whatever k is); the row keeps every key above T and, of the keys equal to T,
// the lowest-index ones, as the stable sort does. The search stops at a prefix that exactly k keys
// reach: those are the row's blocks, so T is taken as that prefix, with no key below it and every
// key equal to it kept; with distinct scores it can stop well before the last bit.
template <int kItems>
__global__ void __launch_bounds__(kThreads) select_top_k_warp_kernel(SelectArgs a) {
  const int lane = threadIdx.x % 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerCta + threadIdx.x / 32;
  if (r >= a.rows) return;
  const int64_t nk = a.num_k_blocks, i = r % a.num_q_blocks;
  const int k = static_cast<int>(min(a.top_k, nk));
  const float* s = a.scores + r * nk;
  uint32_t key[kItems];
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    const int64_t j = t * 32 + lane;
    key[t] = j < nk ? orderable(is_forced(a, i, j) ? INFINITY : s[j]) : 0;
  }
  const auto valid = [&](int t) { return t * 32 + lane < nk; };
  const auto count_at_least = [&](uint32_t bound) {
    int c = 0;
#pragma unroll
    for (int t = 0; t < kItems; ++t) c += valid(t) && key[t] >= bound;
    return static_cast<int>(__reduce_add_sync(0xffffffffu, static_cast<unsigned>(c)));
  };
  uint32_t threshold = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const int reach = count_at_least(threshold | 1u << bit);
    if (reach < k) continue;
    threshold |= 1u << bit;
    if (reach == k) break;
  }
  int above = 0;
#pragma unroll
  for (int t = 0; t < kItems; ++t) above += valid(t) && key[t] > threshold;
  const int ties_kept = k - static_cast<int>(__reduce_add_sync(0xffffffffu, static_cast<unsigned>(above)));

  if (lane == 0) {
    a.offsets[r] = static_cast<int32_t>(r * k);
    if (r == a.rows - 1) a.offsets[a.rows] = static_cast<int32_t>(a.rows * k);
  }
  // Ascending columns: block t·32 + lane goes after every kept block of a lower t or lane.
  const unsigned lower_lanes = (1u << lane) - 1;
  int32_t* out = a.cols + r * k;
  int base = 0, ties_seen = 0;
#pragma unroll
  for (int t = 0; t < kItems; ++t) {
    const bool tie = valid(t) && key[t] == threshold;
    const unsigned ties = __ballot_sync(0xffffffffu, tie);
    const bool kept = (valid(t) && key[t] > threshold) || (tie && ties_seen + __popc(ties & lower_lanes) < ties_kept);
    ties_seen += __popc(ties);
    const unsigned lanes = __ballot_sync(0xffffffffu, kept);
    if (kept) out[base + __popc(lanes & lower_lanes)] = static_cast<int32_t>(t * 32 + lane);
    base += __popc(lanes);
  }
}

template <int kItems>
void launch_top_k_warp(const SelectArgs& a, cudaStream_t stream) {
  const auto grid = static_cast<unsigned>((a.rows + kWarpRowsPerCta - 1) / kWarpRowsPerCta);
  select_top_k_warp_kernel<kItems><<<grid, kThreads, 0, stream>>>(a);
}

__global__ void compact_rows_kernel(const uint8_t* keep, const int32_t* offsets, int64_t nk, int32_t* cols) {
  const int64_t r = blockIdx.x;
  write_kept_columns(keep + r * nk, nk, cols + offsets[r]);
}

}  // namespace

cudaError_t launch_select_blocks(const SelectArgs& a, cudaStream_t stream) {
  if (a.rows == 0 || a.num_k_blocks == 0) return cudaSuccess;
  if (a.num_k_blocks > kMaxSelectBlocks || a.rows > 0x7fffffff) return cudaErrorInvalidValue;
  if (a.top_k > 0) {
    const int64_t nk = a.num_k_blocks;
    if (nk <= 64) launch_top_k_warp<2>(a, stream);
    else if (nk <= 128) launch_top_k_warp<4>(a, stream);
    else if (nk <= 256) launch_top_k_warp<8>(a, stream);
    else if (nk <= 512) launch_top_k_warp<16>(a, stream);
    else if (nk <= 1024) launch_top_k_warp<32>(a, stream);
    else launch_top_k_warp<64>(a, stream);
    return cudaGetLastError();
  }
  const auto grid = static_cast<unsigned>(a.rows);
  if (a.num_k_blocks <= kThreads * 2)
    select_mass_kernel<2><<<grid, kThreads, 0, stream>>>(a);
  else if (a.num_k_blocks <= kThreads * 4)
    select_mass_kernel<4><<<grid, kThreads, 0, stream>>>(a);
  else
    select_mass_kernel<8><<<grid, kThreads, 0, stream>>>(a);
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
