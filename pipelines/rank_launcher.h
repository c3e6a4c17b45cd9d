// Starting the ranks of a sequence-parallel run on one host, and a rank finding its place.
// A program started with `--gpus N` (dit-gen, the seqpar bench) runs launch_ranks() on its own
// command line: it becomes a supervisor that starts N copies of itself as ranks 0..N-1 and waits.
// The supervisor does no model work itself, so that a rank that dies never leaves it stuck inside
// a collective: it notices at once, stops the others and says which rank failed.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace ditkit {

// Where this process sits in a run, from the variables torchrun and launch_ranks set: RANK,
// WORLD_SIZE, MASTER_ADDR (default 127.0.0.1), MASTER_PORT (default 29500), LOCAL_RANK (default
// RANK). The rank's GPU is cuda:local_rank.
struct RankPlace {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};

// The place from the environment; nullopt when RANK or WORLD_SIZE is unset. Values that are not
// numbers in range throw std::invalid_argument naming the variable.
std::optional<RankPlace> rank_place_from_environment();

struct LaunchResult {
  bool ok = true;
  int failed_rank = -1;  // the first rank seen failing
  std::string failure;   // e.g. "rank 1 exited with status 3", "rank 0 was killed by signal 9"
};

// Starts `world` copies of `argv` (argv[0] is the program; "/proc/self/exe" re-executes this one)
// with this process's environment plus RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free
// MASTER_PORT and multicast_off_environment(), and waits for all. When a rank fails (a non-zero
// exit or a signal), the others get SIGTERM, then SIGKILL after `grace_seconds`, and the result
// names it. Throws std::runtime_error when a rank cannot be started (those already started are
// stopped first).
LaunchResult launch_ranks(const std::vector<std::string>& argv, int world, double grace_seconds = 10);

}  // namespace ditkit
