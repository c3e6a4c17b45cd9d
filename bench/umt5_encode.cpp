// The umT5-XXL text encoder at Wan's real size (RANDOM weights, ~5.7B parameters, bf16): load
// time, the time to encode one prompt of 512 tokens, and peak GPU memory.
//   umt5_encode --dir SCRATCH [--out FILE] [--commit SHA]
// Writes random weights as a text_encoder/ folder under SCRATCH (tensors drawn on the GPU, saved
// one at a time), loads them through UMT5Encoder::load like a real checkpoint, then times.
#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "bench/device_bench.h"
#include "dit/safetensors.h"
#include "dit/umt5_encoder.h"

namespace {

void write_random_checkpoint(const std::string& dir, const ditkit::UMT5Config& c) {
  std::filesystem::create_directories(dir);
  nlohmann::json config = {{"model_type", "umt5"},
                           {"vocab_size", c.vocab_size},
                           {"d_model", c.d_model},
                           {"d_kv", c.d_kv},
                           {"d_ff", c.d_ff},
                           {"num_layers", c.num_layers},
                           {"num_heads", c.num_heads},
                           {"relative_attention_num_buckets", c.relative_attention_num_buckets},
                           {"relative_attention_max_distance", c.relative_attention_max_distance},
                           {"feed_forward_proj", c.feed_forward_proj},
                           {"layer_norm_epsilon", c.layer_norm_epsilon}};
  std::ofstream(dir + "/config.json") << config.dump(2);
  auto opts = at::dtype(at::kBFloat16).device(at::kCUDA);
  auto rnd = [&](std::vector<int64_t> shape) { return (at::randn(shape, opts) * 0.02).cpu(); };
  std::map<std::string, at::Tensor> t;
  t["encoder.embed_tokens.weight"] = rnd({c.vocab_size, c.d_model});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "encoder.block." + std::to_string(i) + ".layer.";
    for (const char* n : {"q", "k", "v", "o"})
      t[p + "0.SelfAttention." + n + ".weight"] = rnd({c.inner_dim(), c.d_model});
    t[p + "0.SelfAttention.relative_attention_bias.weight"] = rnd({c.relative_attention_num_buckets, c.num_heads});
    t[p + "0.layer_norm.weight"] = at::ones({c.d_model}, at::kBFloat16);
    t[p + "1.DenseReluDense.wi_0.weight"] = rnd({c.d_ff, c.d_model});
    t[p + "1.DenseReluDense.wi_1.weight"] = rnd({c.d_ff, c.d_model});
    t[p + "1.DenseReluDense.wo.weight"] = rnd({c.d_model, c.d_ff});
    t[p + "1.layer_norm.weight"] = at::ones({c.d_model}, at::kBFloat16);
  }
  t["encoder.final_layer_norm.weight"] = at::ones({c.d_model}, at::kBFloat16);
  ditkit::save_safetensors(dir + "/model.safetensors", t);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string scratch, out_path = "umt5.jsonl", commit = "unknown";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--dir") scratch = argv[i + 1];
    else if (flag == "--out") out_path = argv[i + 1];
    else if (flag == "--commit") commit = argv[i + 1];
    else {
      std::fprintf(stderr, "umt5_encode: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (scratch.empty() || !at::hasCUDA()) {
    std::fprintf(stderr, "umt5_encode: needs --dir SCRATCH and a CUDA GPU\n");
    return 2;
  }
  const ditkit::UMT5Config config = ditkit::umt5_xxl_config();
  const std::string dir = scratch + "/text_encoder";
  std::printf("RANDOM WEIGHTS: umT5-XXL configuration (Wan's text encoder), not a trained checkpoint\n");
  write_random_checkpoint(dir, config);

  c10::cuda::CUDACachingAllocator::emptyCache();
  ditkit::bench::reset_peak_memory();
  auto t0 = std::chrono::steady_clock::now();
  auto encoder = ditkit::UMT5Encoder::load(dir, at::kCUDA, at::kBFloat16);
  at::cuda::getCurrentCUDAStream().synchronize();
  const double load_s = seconds_since(t0);

  at::Tensor ids = at::randint(2, 30000, {1, 512}, at::dtype(at::kLong));
  at::Tensor mask = at::ones({1, 512}, at::kLong);
  encoder.encode_prompts(ids, mask);  // warm-up
  at::cuda::getCurrentCUDAStream().synchronize();
  t0 = std::chrono::steady_clock::now();
  at::Tensor context = encoder.encode_prompts(ids, mask);
  at::cuda::getCurrentCUDAStream().synchronize();
  const double encode_ms = 1e3 * seconds_since(t0);
  const double peak_gib = ditkit::bench::peak_memory_gib();
  std::printf("load %.1f s, encode one 512-token prompt %.1f ms, peak %.2f GiB, context %s\n", load_s, encode_ms,
              peak_gib, c10::toString(context.scalar_type()));

  ditkit::bench::record(out_path, "text-encoder", commit,
                {{"case", "umt5-xxl random-weights bf16 one prompt 512 tokens"},
                 {"impl", "ditkit"},
                 {"value", encode_ms},
                 {"unit", "ms"},
                 {"load_s", load_s},
                 {"peak_gib", peak_gib}});
  return 0;
}
