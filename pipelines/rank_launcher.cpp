#include "pipelines/rank_launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <thread>

#include "dit/sequence_parallel.h"

extern char** environ;

namespace ditkit {

namespace {

// The variable as an int in [low, high]; nullopt when unset.
std::optional<int> int_variable(const char* name, int low, int high) {
  const char* text = std::getenv(name);
  if (!text) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || errno != 0 || value < low || value > high)
    throw std::invalid_argument(std::string(name) + "='" + text + "': expected a whole number from " +
                                std::to_string(low) + " to " + std::to_string(high));
  return int(value);
}

std::string describe_status(int rank, int status) {
  if (WIFSIGNALED(status))
    return "rank " + std::to_string(rank) + " was killed by signal " + std::to_string(WTERMSIG(status)) + " (" +
           strsignal(WTERMSIG(status)) + ")";
  return "rank " + std::to_string(rank) + " exited with status " + std::to_string(WEXITSTATUS(status));
}

// SIGTERM to every rank still running, SIGKILL to those left after `grace_seconds`; reaps all.
void stop_ranks(std::vector<pid_t>& running, double grace_seconds) {
  for (pid_t pid : running)
    if (pid > 0) ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_seconds);
  for (pid_t& pid : running) {
    while (pid > 0) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = 0;
      } else if (std::chrono::steady_clock::now() >= deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        pid = 0;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
}

// A TCP port on 127.0.0.1 that is free now (the kernel's choice; another process could take it
// before rank 0 binds it, which on a machine of our own does not happen in practice).
int free_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("free_local_port: socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const std::string error = std::strerror(errno);
    ::close(fd);
    throw std::runtime_error("free_local_port: " + error);
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

}  // namespace

std::optional<RankPlace> rank_place_from_environment() {
  const std::optional<int> world = int_variable("WORLD_SIZE", 1, 1 << 16);
  const std::optional<int> rank = int_variable("RANK", 0, 1 << 16);
  if (!world || !rank) return std::nullopt;
  if (*rank >= *world)
    throw std::invalid_argument("RANK=" + std::to_string(*rank) + " is not below WORLD_SIZE=" + std::to_string(*world));
  RankPlace place;
  place.rank = *rank;
  place.world = *world;
  place.local_rank = int_variable("LOCAL_RANK", 0, 1 << 16).value_or(*rank);
  place.master_port = int_variable("MASTER_PORT", 1, 65535).value_or(place.master_port);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr && *addr) place.master_addr = addr;
  return place;
}

LaunchResult launch_ranks(const std::vector<std::string>& argv, int world, double grace_seconds) {
  if (argv.empty()) throw std::invalid_argument("launch_ranks: no program to start");
  if (world < 1) throw std::invalid_argument("launch_ranks: world size " + std::to_string(world) + " < 1");

  // This process's environment with the run's variables put over it.
  std::map<std::string, std::string> common;
  for (char** e = environ; *e; ++e) {
    const std::string entry = *e;
    const size_t eq = entry.find('=');
    if (eq != std::string::npos) common[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  for (const auto& [name, value] : multicast_off_environment()) common[name] = value;
  common["WORLD_SIZE"] = std::to_string(world);
  common["MASTER_ADDR"] = "127.0.0.1";
  common["MASTER_PORT"] = std::to_string(free_local_port());

  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  std::vector<pid_t> running;
  for (int rank = 0; rank < world; ++rank) {
    std::map<std::string, std::string> env = common;
    env["RANK"] = env["LOCAL_RANK"] = std::to_string(rank);
    std::vector<std::string> entries;
    for (const auto& [name, value] : env) entries.push_back(name + "=" + value);
    std::vector<char*> envp;
    for (std::string& entry : entries) envp.push_back(entry.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    const int error = ::posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), envp.data());
    if (error != 0) {
      stop_ranks(running, grace_seconds);
      throw std::runtime_error("cannot start rank " + std::to_string(rank) + " (" + argv[0] +
                               "): " + std::strerror(error));
    }
    running.push_back(pid);
  }

  // Polls rather than waitpid(-1), which would also reap children that are not ranks.
  LaunchResult result;
  for (int left = world; left > 0;) {
    bool reaped = false;
    for (int rank = 0; rank < world; ++rank) {
      pid_t& pid = running[size_t(rank)];
      int status = 0;
      if (pid <= 0 || ::waitpid(pid, &status, WNOHANG) != pid) continue;
      pid = 0;
      --left;
      reaped = true;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
      result = {false, rank, describe_status(rank, status)};
      stop_ranks(running, grace_seconds);
      return result;
    }
    if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return result;
}

}  // namespace ditkit
