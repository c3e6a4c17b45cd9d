// The only file that includes c10d's backend headers. LibTorch's CMake targets define the macros
// that unlock them (USE_DISTRIBUTED, USE_C10D_GLOO, USE_C10D_NCCL); what may be missing is Gloo's
// and NCCL's own headers, which ditkit_config.h reports (dit/CMakeLists.txt, cmake/Dependencies.cmake).
#include "dit/sequence_parallel.h"

#include <ATen/ATen.h>
#include <ATen/WrapDimUtils.h>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>
#include <stdexcept>

#include "dit/config_json.h"
#include "ditkit_config.h"
#if DITKIT_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if DITKIT_HAVE_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace ditkit {

using cfg::shape_str;

SequencePartition SequencePartition::of(int64_t tokens, int64_t world, int64_t rank) {
  if (tokens < 1 || world < 1 || rank < 0 || rank >= world)
    throw std::invalid_argument("sequence partition: needs tokens >= 1 and 0 <= rank < world, got tokens " +
                                std::to_string(tokens) + ", rank " + std::to_string(rank) + ", world " +
                                std::to_string(world));
  return {tokens, world, rank, (tokens + world - 1) / world};
}

int64_t SequencePartition::valid() const { return std::max<int64_t>(0, std::min(shard, tokens - begin())); }

at::Tensor SequencePartition::take(const at::Tensor& x, int64_t dim) const {
  dim = c10::maybe_wrap_dim(dim, x.dim());
  if (x.size(dim) != tokens)
    throw std::invalid_argument("sequence partition: dimension " + std::to_string(dim) + " of " +
                                shape_str(x.sizes()) + " should hold the " + std::to_string(tokens) + " tokens");
  const int64_t n = valid();
  at::Tensor mine = x.narrow(dim, std::min(begin(), tokens), n);
  if (n == shard) return mine;
  std::vector<int64_t> padding = x.sizes().vec();
  padding[size_t(dim)] = shard - n;
  return at::cat({mine, at::zeros(padding, x.options())}, dim);
}

// ---------------------------------------------------------------------------------------------

struct SequenceParallel::Group {
  int rank, world;
  at::Device device;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;  // declared after the store: destroyed before it

  ~Group() {
    // NCCL wants its communicators destroyed explicitly at a normal exit; Gloo's is a no-op.
    if (backend) backend->shutdown();
  }

  // Equal splits over dim 0: block r of `send` goes to rank r, block r of `recv` came from rank r.
  void all_to_all(at::Tensor& recv, at::Tensor& send) const {
    std::vector<int64_t> equal_splits;
    backend->alltoall_base(recv, send, equal_splits, equal_splits)->wait();
  }
};

namespace {

// Overall time limit for meeting at the store and for one collective: loading a 14B model's
// weights on every rank can keep the slowest rank minutes behind the first.
constexpr std::chrono::minutes kTimeout{30};

c10::intrusive_ptr<c10d::Backend> make_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
                                               at::Device device) {
  if (device.is_cuda()) {
#if DITKIT_HAVE_NCCL
    set_multicast_off_environment();
    c10::cuda::set_device(device.has_index() ? device.index() : c10::cuda::current_device());
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = kTimeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
#else
    throw std::runtime_error("sequence parallelism on " + device.str() +
                             ": this build of ditkit has no NCCL (built without CUDA or without nccl.h)");
#endif
  }
  if (device.is_cpu()) {
#if DITKIT_HAVE_GLOO
    auto options = c10d::ProcessGroupGloo::Options::create(kTimeout);
    // CPU ranks are for tests, all on one host: the loopback interface needs no name lookup.
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
#else
    throw std::runtime_error(
        "sequence parallelism on the CPU: this build of ditkit has no Gloo (the gloo headers, Debian "
        "libgloo-dev, were not found at configure time)");
#endif
  }
  throw std::runtime_error("sequence parallelism: no backend for device " + device.str());
}

void check_world(int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world)
    throw std::invalid_argument("sequence parallelism: rank " + std::to_string(rank) + " of world size " +
                                std::to_string(world) + " is not a rank of that world");
}

}  // namespace

SequenceParallel SequenceParallel::connect(const std::string& master_addr, int master_port, int rank, int world,
                                           at::Device device) {
  check_world(rank, world);
  if (master_port < 1 || master_port > 65535)
    throw std::invalid_argument("sequence parallelism: master port " + std::to_string(master_port) +
                                " is not a TCP port");
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(master_port);
  options.isServer = rank == 0;
  options.numWorkers = static_cast<size_t>(world);
  options.waitWorkers = true;
  options.timeout = kTimeout;
  auto store = c10::make_intrusive<c10d::TCPStore>(master_addr, options);
  auto group = std::make_shared<Group>(Group{rank, world, device, store, make_backend(store, rank, world, device)});
  return SequenceParallel(std::move(group));
}

SequenceParallel SequenceParallel::connect_file(const std::string& store_path, int rank, int world,
                                                at::Device device) {
  check_world(rank, world);
  auto store = c10::make_intrusive<c10d::FileStore>(store_path, world);
  store->setTimeout(kTimeout);
  auto group = std::make_shared<Group>(Group{rank, world, device, store, make_backend(store, rank, world, device)});
  return SequenceParallel(std::move(group));
}

int SequenceParallel::rank() const { return group_->rank; }
int SequenceParallel::world() const { return group_->world; }
at::Device SequenceParallel::device() const { return group_->device; }

void SequenceParallel::check_heads(int64_t heads) const {
  if (heads % world() != 0)
    throw std::invalid_argument("sequence parallelism over " + std::to_string(world()) + " ranks: the model's " +
                                std::to_string(heads) + " attention heads do not divide by " +
                                std::to_string(world()) + " (each rank attends with heads / ranks of them); " +
                                "use a rank count that divides " + std::to_string(heads));
}

std::vector<at::Tensor> SequenceParallel::to_head_shards(const std::vector<at::Tensor>& shards,
                                                         const SequencePartition& p) const {
  if (shards.empty()) return {};
  const int64_t N = world(), B = shards[0].size(0), H = shards[0].size(2), D = shards[0].size(3);
  check_heads(H);
  const int64_t h = H / N;
  std::vector<at::Tensor> blocks;
  for (const at::Tensor& x : shards) {
    if (x.dim() != 4 || x.size(0) != B || x.size(1) != p.shard || x.size(2) != H || x.size(3) != D)
      throw std::invalid_argument("to_head_shards: every shard must be [" + std::to_string(B) + ", " +
                                  std::to_string(p.shard) + ", " + std::to_string(H) + ", " + std::to_string(D) +
                                  "], got " + shape_str(x.sizes()));
    blocks.push_back(x.reshape({B, p.shard, N, h, D}).permute({2, 0, 1, 3, 4}));  // [N, B, shard, h, D]
  }
  // [N, T, B, shard, h, D]: block r, the heads of rank r for every tensor, goes to rank r.
  at::Tensor send = at::stack(blocks, 1).contiguous();
  at::Tensor recv = at::empty_like(send);
  group_->all_to_all(recv, send);
  // Block r of recv is rank r's tokens, so in rank order the blocks are the padded sequence.
  std::vector<at::Tensor> out;
  for (int64_t t = 0; t < int64_t(shards.size()); ++t)
    out.push_back(
        recv.select(1, t).permute({1, 0, 2, 3, 4}).reshape({B, p.padded(), h, D}).narrow(1, 0, p.tokens));
  return out;
}

at::Tensor SequenceParallel::to_sequence_shard(const at::Tensor& heads, const SequencePartition& p) const {
  if (heads.dim() != 4 || heads.size(1) != p.tokens)
    throw std::invalid_argument("to_sequence_shard: expected [B, " + std::to_string(p.tokens) + ", H / N, D], got " +
                                shape_str(heads.sizes()));
  const int64_t N = world(), B = heads.size(0), h = heads.size(2), D = heads.size(3);
  at::Tensor full = heads;
  if (p.padded() > p.tokens)
    full = at::cat({heads, at::zeros({B, p.padded() - p.tokens, h, D}, heads.options())}, 1);
  // [N, B, shard, h, D]: block r, rank r's tokens of this rank's heads, goes to rank r.
  at::Tensor send = full.reshape({B, N, p.shard, h, D}).permute({1, 0, 2, 3, 4}).contiguous();
  at::Tensor recv = at::empty_like(send);
  group_->all_to_all(recv, send);
  // Block r of recv holds the heads of rank r, so in rank order they are all heads.
  return recv.permute({1, 2, 0, 3, 4}).reshape({B, p.shard, N * h, D});
}

at::Tensor SequenceParallel::gather_sequence(const at::Tensor& shard, const SequencePartition& p) const {
  if (shard.dim() != 3 || shard.size(1) != p.shard)
    throw std::invalid_argument("gather_sequence: expected [B, " + std::to_string(p.shard) + ", C], got " +
                                shape_str(shard.sizes()));
  const int64_t B = shard.size(0), C = shard.size(2);
  at::Tensor send = shard.contiguous();
  // The ranks' shards one after another along dim 0, as _allgather_base lays them out.
  at::Tensor recv = at::empty({world() * B, p.shard, C}, shard.options());
  group_->backend->_allgather_base(recv, send)->wait();
  return recv.view({world(), B, p.shard, C}).permute({1, 0, 2, 3}).reshape({B, p.padded(), C}).narrow(1, 0, p.tokens);
}

void SequenceParallel::barrier() const { group_->backend->barrier()->wait(); }

const std::vector<std::pair<std::string, std::string>>& multicast_off_environment() {
  static const std::vector<std::pair<std::string, std::string>> variables = {
      {"NCCL_NVLS_ENABLE", "0"}, {"TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"}, {"NVSHMEM_DISABLE_NVLS", "1"}};
  return variables;
}

void set_multicast_off_environment() {
  for (const auto& [name, value] : multicast_off_environment()) ::setenv(name.c_str(), value.c_str(), 1);
}

}  // namespace ditkit
