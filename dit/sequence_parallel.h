// Ulysses-style sequence parallelism for the DiT (DeepSpeed-Ulysses' idea): every rank holds a
// contiguous shard of the video tokens with all heads; around self-attention an all-to-all turns
// that into the whole sequence for H/N of the heads and back, so attention (and every sparse
// plan) sees the global token grid, while projections, cross-attention and the FFN run on the
// shard. Collectives go through LibTorch's distributed engine, c10d: ProcessGroupNCCL for ranks
// on GPUs, ProcessGroupGloo for ranks on the CPU (tests). docs/multi_gpu.md has the design.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ditkit {

// How S tokens split over N ranks: each rank holds `shard` = ceil(S / N) consecutive tokens, and
// the last ranks are padded at the end up to N · shard. Because all padding sits after the last
// real token, the all-to-all's full sequence is the real one followed by padding, which is cut
// off before attention and added back after: padded tokens never reach a real token's attention,
// so no mask is needed and results do not change. (Wan2.1-1.3B at 480p has S = 32,760: 16,380 a
// rank on 2 ranks, 8,190 on 4; 14B at 720p has 75,600: 18,900 on 4; 32,760 on 5 ranks pads 0,
// on 7 ranks 4,680 each with 0 padding, on 16 ranks 2,048 each with 8 padding tokens.)
struct SequencePartition {
  int64_t tokens = 0;  // S, the real tokens
  int64_t world = 1;   // N
  int64_t rank = 0;
  int64_t shard = 0;  // tokens per rank, padding included

  // Throws std::invalid_argument unless tokens >= 1 and 0 <= rank < world.
  static SequencePartition of(int64_t tokens, int64_t world, int64_t rank);

  int64_t padded() const { return shard * world; }
  int64_t begin() const { return rank * shard; }  // this rank's first global token position
  // Real tokens in this rank's shard (the rest, at its end, is padding; 0 when S < N · shard
  // leaves a rank nothing but padding).
  int64_t valid() const;

  // x's slice of this rank's tokens along `dim` (where x has `tokens` entries), zero-padded at
  // the end to `shard`: the shard of the activations, or of RoPE tables, whose rows are global
  // positions, so a shard rotates by its tokens' global positions.
  at::Tensor take(const at::Tensor& x, int64_t dim) const;
};

class SequenceParallel {
 public:
  // Joins a group of `world` ranks that meet at a c10d TCPStore on master_addr:master_port
  // (rank 0 serves it), as torchrun or launch_ranks (pipelines/rank_launcher.h) set them. A CUDA
  // device makes a ProcessGroupNCCL (the process's current device is set to it, and NVLink
  // multicast is switched off first: set_multicast_off_environment()); the CPU a
  // ProcessGroupGloo. Throws std::runtime_error when this build lacks that backend.
  static SequenceParallel connect(const std::string& master_addr, int master_port, int rank, int world,
                                  at::Device device);
  // The same, meeting at a c10d FileStore (a file all ranks can reach; for tests: no ports).
  static SequenceParallel connect_file(const std::string& store_path, int rank, int world, at::Device device);

  int rank() const;
  int world() const;
  at::Device device() const;

  SequencePartition partition(int64_t tokens) const { return SequencePartition::of(tokens, world(), rank()); }

  // Each rank attends with heads / world heads: throws std::invalid_argument naming both when
  // they do not divide.
  void check_heads(int64_t heads) const;

  // Sequence shards -> head shards, several tensors in one all-to-all: each [B, shard, H, D]
  // (this rank's tokens, all heads) becomes [B, S, H / N, D] (every real token, this rank's
  // heads: rank r gets heads [r·H/N, (r+1)·H/N)), padding dropped. Same dtype and device for all.
  std::vector<at::Tensor> to_head_shards(const std::vector<at::Tensor>& shards, const SequencePartition& p) const;

  // The way back: [B, S, H / N, D] -> [B, shard, H, D] (padding rows zero).
  at::Tensor to_sequence_shard(const at::Tensor& heads, const SequencePartition& p) const;

  // Every rank's shard [B, shard, C] -> the whole sequence [B, S, C] on every rank.
  at::Tensor gather_sequence(const at::Tensor& shard, const SequencePartition& p) const;

  // Waits until every rank has reached this call.
  void barrier() const;

 private:
  struct Group;  // the c10d store and backend, in sequence_parallel.cpp
  explicit SequenceParallel(std::shared_ptr<Group> group) : group_(std::move(group)) {}
  std::shared_ptr<Group> group_;
};

// The environment variables that keep NVLink multicast off in NCCL, PyTorch's symmetric memory
// and NVSHMEM: on the shared multi-GPU hosts a program that uses it can take the host's GPUs out
// of service for everyone. Every process ditkit starts carries them.
const std::vector<std::pair<std::string, std::string>>& multicast_off_environment();
// Sets them in this process (overwriting), before any communicator exists.
void set_multicast_off_environment();

}  // namespace ditkit
