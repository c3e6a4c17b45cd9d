// What every device benchmark program shares: CUDA-event timing, peak GPU memory, and the
// bench/results/ line (docs/ARCHITECTURE.md gives the format).
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace ditkit::bench {

// Median over `iters` runs after `warmup`, each timed with CUDA events on the current stream.
inline double median_ms(const std::function<void()>& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    auto stream = at::cuda::getCurrentCUDAStream();
    cudaEventRecord(start, stream);
    fn();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

inline void reset_peak_memory() { c10::cuda::CUDACachingAllocator::resetPeakStats(at::cuda::current_device()); }

inline double peak_memory_gib() {
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(at::cuda::current_device());
  return stats.allocated_bytes[0].peak / double(1 << 30);
}

// One results line with the fields every record has (bench, device, date, commit) filled in;
// printed and appended to `path`.
inline void record(const std::string& path, const std::string& bench, const std::string& commit,
                   nlohmann::json fields) {
  char date[16];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  nlohmann::json line = {{"bench", bench},
                         {"device", at::cuda::getCurrentDeviceProperties()->name},
                         {"date", date},
                         {"commit", commit}};
  line.update(fields);
  std::puts(line.dump().c_str());
  std::ofstream(path, std::ios::app) << line.dump() << "\n";
}

// The command line of the benchmarks that time recipes: RECIPE... [--out F] [--commit C]
// [--steps N]. nullopt (after a message naming the program) for an unknown or incomplete flag.
struct RecipeBenchArgs {
  std::string out_path, commit = "unknown";
  int steps = 0;
  std::vector<std::string> recipes;
};

inline std::optional<RecipeBenchArgs> parse_recipe_bench_args(int argc, char** argv, const char* program,
                                                              RecipeBenchArgs args) {
  for (int a = 1; a < argc; ++a) {
    const std::string flag = argv[a];
    if (flag.rfind("--", 0) != 0) {
      args.recipes.push_back(flag);
      continue;
    }
    if (a + 1 >= argc) {
      std::fprintf(stderr, "%s: %s needs a value\n", program, argv[a]);
      return std::nullopt;
    }
    const std::string value = argv[++a];
    if (flag == "--out") args.out_path = value;
    else if (flag == "--commit") args.commit = value;
    else if (flag == "--steps") args.steps = std::stoi(value);
    else {
      std::fprintf(stderr, "%s: unknown flag %s\n", program, flag.c_str());
      return std::nullopt;
    }
  }
  return args;
}

}  // namespace ditkit::bench
