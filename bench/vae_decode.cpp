// The Wan2.1 VAE decode of one 480x832, 81-frame video (21 latent frames at 60x104) in bf16 with
// the default chunking (one latent frame per pass, as diffusers), on RANDOM weights of the real
// configuration: the time and peak memory do not depend on the weights' values.
//   vae_decode [--out vae-h100.jsonl] [--commit SHA] [--chunk N]
// Writes one bench/results line (no baseline: diffusers' decode is timed by its own script).
#include <ATen/ATen.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "bench/device_bench.h"
#include "dit/wan_vae.h"

int main(int argc, char** argv) {
  std::string out_path = "vae.jsonl", commit = "unknown";
  int64_t chunk = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--out")
      out_path = argv[i + 1];
    else if (flag == "--commit")
      commit = argv[i + 1];
    else if (flag == "--chunk")
      chunk = std::stoll(argv[i + 1]);
    else {
      std::fprintf(stderr, "vae_decode: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "vae_decode: needs a CUDA GPU\n");
    return 2;
  }
  std::printf(
      "RANDOM WEIGHTS: timing the Wan2.1 VAE configuration (base_dim 96, dim_mult [1, 2, 4, 4]), "
      "not a trained checkpoint\n");
  const ditkit::WanVaeConfig config;  // the defaults are Wan2.1's VAE
  const ditkit::WanVae vae = ditkit::WanVae::random(config, 0, at::kCUDA, at::kBFloat16);
  const at::Tensor latents = at::randn({1, 16, 21, 60, 104}, at::dtype(at::kBFloat16).device(at::kCUDA));

  auto decode = [&] { return vae.decode(latents, chunk); };  // includes the uint8 frames' copy to the host
  const at::Tensor frames = decode();                        // warm-up: cuDNN picks its algorithms
  ditkit::bench::reset_peak_memory();
  const double ours = ditkit::bench::median_ms([&] { decode(); }, 0, 3);
  const double peak_gib = ditkit::bench::peak_memory_gib();
  std::printf("frames [%lld, %lld, %lld, 3]: decode %.1f ms (median of 3), peak %.2f GiB\n", (long long)frames.size(0),
              (long long)frames.size(1), (long long)frames.size(2), ours, peak_gib);
  ditkit::bench::record(out_path, "vae", commit,
                {{"case", "wan2.1-vae random-weights decode 21x60x104 -> 81x480x832 bf16 chunk=" + std::to_string(chunk) +
                              " uint8 to host"},
                 {"impl", "ditkit"},
                 {"value", ours},
                 {"unit", "ms"},
                 {"peak_gib", peak_gib}});
  return 0;
}
