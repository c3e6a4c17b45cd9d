// CPU-side I/O costs around a generation: loading a checkpoint (mmap, zero copy) against reading
// it into memory, and writing the video in each container.
#include <ATen/ATen.h>
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "dit/atomic_file.h"
#include "ditkit_config.h"
#include "dit/safetensors.h"
#include "pipelines/video_writer.h"

namespace fs = std::filesystem;

namespace {

fs::path bench_dir() {
  static fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("ditkit-bench-" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

// 64 bf16 tensors of 2 MiB each: the shape of a small DiT checkpoint.
const std::string& checkpoint_path() {
  static std::string path = [] {
    std::map<std::string, at::Tensor> tensors;
    for (int i = 0; i < 64; ++i)
      tensors["blocks." + std::to_string(i) + ".weight"] = at::randn({1024, 1024}).to(at::kBFloat16);
    std::string p = (bench_dir() / "bench.safetensors").string();
    ditkit::save_safetensors(p, tensors);
    return p;
  }();
  return path;
}

void BM_SafetensorsMmapAllTensors(benchmark::State& state) {
  const std::string& path = checkpoint_path();
  for (auto _ : state) {
    ditkit::SafetensorsFile file(path);
    // Touch one byte per page: mapping alone costs nothing until the data is used.
    uint64_t sum = 0;
    for (const auto& name : file.keys()) {
      at::Tensor t = file.get(name);
      const auto* bytes = static_cast<const uint8_t*>(t.data_ptr());
      for (size_t off = 0; off < t.nbytes(); off += 4096) sum += bytes[off];
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(state.iterations() * fs::file_size(path));
}
BENCHMARK(BM_SafetensorsMmapAllTensors)->Unit(benchmark::kMillisecond);

// Baseline: read the whole file into memory, which a copying loader must do at least.
void BM_ReadWholeFileBaseline(benchmark::State& state) {
  const std::string& path = checkpoint_path();
  std::vector<char> buf(fs::file_size(path));
  for (auto _ : state) {
    std::ifstream in(path, std::ios::binary);
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetBytesProcessed(state.iterations() * buf.size());
}
BENCHMARK(BM_ReadWholeFileBaseline)->Unit(benchmark::kMillisecond);

// 33 frames at 256x256: the shipped model's default output.
at::Tensor bench_frames() {
  at::Tensor t = at::arange(33, at::kFloat).view({33, 1, 1, 1});
  at::Tensor y = at::arange(256, at::kFloat).view({1, 256, 1, 1});
  at::Tensor x = at::arange(256, at::kFloat).view({1, 1, 256, 1});
  at::Tensor c = at::arange(3, at::kFloat).view({1, 1, 1, 3});
  return ((x * 0.7 + y * 0.3 + t * 4 + c * 60).remainder(256)).to(at::kByte);
}

void write_bench(benchmark::State& state, const std::string& name) {
  at::Tensor frames = bench_frames();
  std::string path = (bench_dir() / name).string();
  for (auto _ : state) {
    ditkit::write_video(frames, path);
    state.PauseTiming();
    ditkit::remove_tree(path);
    state.ResumeTiming();
  }
  state.counters["frames/s"] = benchmark::Counter(static_cast<double>(state.iterations() * frames.size(0)),
                                                  benchmark::Counter::kIsRate);
}

void BM_WriteY4m(benchmark::State& state) { write_bench(state, "clip.y4m"); }
BENCHMARK(BM_WriteY4m)->Unit(benchmark::kMillisecond);
void BM_WritePngFolder(benchmark::State& state) { write_bench(state, "frames/"); }
BENCHMARK(BM_WritePngFolder)->Unit(benchmark::kMillisecond);
#if DITKIT_HAVE_FFMPEG
void BM_WriteMp4(benchmark::State& state) { write_bench(state, "clip.mp4"); }
BENCHMARK(BM_WriteMp4)->Unit(benchmark::kMillisecond);
#endif

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  ditkit::remove_tree(bench_dir().string());
  return 0;
}
