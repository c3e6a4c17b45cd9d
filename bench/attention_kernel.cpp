// The block-sparse attention kernel against cuDNN dense attention, measured in one run:
//   attention_kernel [--tokens S] [--heads H] [--dim D] [--kblock 64|128] [--iters N]
//                    [--commit C] [--out results.jsonl] [--profile DENSITY]
// For each density (100, 50, 25, 10, 5%) and row balance (balanced; imbalanced: every eighth
// query block carries 4x the mean) it times block_sparse_attention (the row ordering included)
// and writes one JSON line (bench/results/ format) with ms, TFLOP/s on the kept blocks and the
// speedup over cuDNN. bench/device/attention_flex.py builds the same block maps for FlexAttention.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "bench/device_bench.h"
#include "kernels/block_csr.h"
#include "kernels/block_sparse_attention.h"
#include "kernels/dense_attention.h"

namespace {

// Row (h, i) keeps exactly count(i) key blocks, spread by a bijective hash of the block index
// (131 is coprime to every NK used here); attention_flex.py computes the same map.
at::Tensor block_map(int64_t H, int64_t NQ, int64_t NK, double density, bool imbalanced) {
  const double mean = density * NK;
  at::Tensor i = at::arange(NQ, at::kLong);
  at::Tensor count = at::full({NQ}, std::llround(mean), at::kLong);
  if (imbalanced) {
    const int64_t heavy = std::min<int64_t>(NK, std::llround(4 * mean));
    const int64_t light = std::llround((8 * mean - heavy) / 7);
    count = at::where(i.remainder(8) == 0, at::full({NQ}, heavy, at::kLong), at::full({NQ}, light, at::kLong));
  }
  count = count.clamp(1, NK);
  at::Tensor j = at::arange(NK, at::kLong), h = at::arange(H, at::kLong);
  at::Tensor key = (j.view({1, 1, NK}) * 131 + i.view({1, NQ, 1}) * 17 + h.view({H, 1, 1}) * 7).remainder(NK);
  return (key < count.view({1, NQ, 1})).unsqueeze(0);  // [1, H, NQ, NK]
}

// 4·D·Σ rows·kept keys, counting the partial last blocks' real tokens.
double kept_flops(const at::Tensor& mask, int64_t S, int64_t D, int64_t kblock) {
  const int64_t NQ = mask.size(2), NK = mask.size(3);
  at::Tensor len_q = (S - at::arange(NQ, at::kLong) * 128).clamp_max(128).to(at::kDouble);
  at::Tensor len_k = (S - at::arange(NK, at::kLong) * kblock).clamp_max(kblock).to(at::kDouble);
  at::Tensor keys = (mask.to(at::kDouble) * len_k.to(mask.device())).sum(-1);  // [B, H, NQ]
  return 4.0 * D * (keys * len_q.to(mask.device())).sum().item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  int64_t S = 32760, H = 12, D = 128, kblock = 128;
  int iters = 30;
  double profile_density = 0;
  std::string out_path = "kernel.jsonl", commit = "unknown";
  for (int a = 1; a < argc; a += 2) {
    const std::string flag = argv[a];
    if (a + 1 >= argc) {
      std::fprintf(stderr, "attention_kernel: %s needs a value\n", argv[a]);
      return 2;
    }
    const char* value = argv[a + 1];
    if (flag == "--tokens") S = std::stoll(value);
    else if (flag == "--heads") H = std::stoll(value);
    else if (flag == "--dim") D = std::stoll(value);
    else if (flag == "--kblock") kblock = std::stoll(value);
    else if (flag == "--iters") iters = std::stoi(value);
    else if (flag == "--out") out_path = value;
    else if (flag == "--commit") commit = value;
    else if (flag == "--profile") profile_density = std::stod(value);  // one balanced call, for ncu
    else {
      std::fprintf(stderr, "attention_kernel: unknown flag %s\n", argv[a]);
      return 2;
    }
  }
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "attention_kernel: needs a CUDA GPU\n");
    return 2;
  }
  const ditkit::BlockShape blocks{128, kblock};
  const int64_t NQ = (S + 127) / 128, NK = (S + kblock - 1) / kblock;
  auto opts = at::dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor q = at::randn({1, S, H, D}, opts), k = at::randn({1, S, H, D}, opts), v = at::randn({1, S, H, D}, opts);
  if (!ditkit::block_sparse_attention_uses_kernel(q, k, v, blocks)) {
    std::fprintf(stderr, "attention_kernel: the block-sparse kernel does not run here (needs an sm_90 GPU)\n");
    return 2;
  }
  if (profile_density > 0) {
    ditkit::BlockCsr csr = ditkit::mask_to_csr(block_map(H, NQ, NK, profile_density, false).to(at::kCUDA));
    ditkit::block_sparse_attention(q, k, v, csr, blocks);
    cudaDeviceSynchronize();
    return 0;
  }
  auto time = [&](const std::function<void()>& fn) { return ditkit::bench::median_ms(fn, 5, iters); };
  const double dense_ms = time([&] { ditkit::dense_attention(q, k, v); });
  const double dense_flops = 4.0 * H * double(S) * double(S) * D;
  std::printf("cudnn dense: %.3f ms, %.0f TFLOP/s\n", dense_ms, dense_flops / dense_ms / 1e9);
  char shape[64];
  std::snprintf(shape, sizeof shape, "1x%lldx%lldx%lld", (long long)H, (long long)S, (long long)D);
  for (bool imbalanced : {false, true})
    for (double density : {1.0, 0.5, 0.25, 0.10, 0.05}) {
      at::Tensor mask = block_map(H, NQ, NK, density, imbalanced).to(at::kCUDA);
      ditkit::BlockCsr csr = ditkit::mask_to_csr(mask);
      const double ms = time([&] { ditkit::block_sparse_attention(q, k, v, csr, blocks); });
      const double flops = kept_flops(mask, S, D, kblock);
      const double kept = mask.to(at::kFloat).mean().item<double>();
      char name[160];
      std::snprintf(name, sizeof name, "%s d=%.2f %s kb=%lld", shape, density, imbalanced ? "imbalanced" : "balanced",
                    (long long)kblock);
      ditkit::bench::record(out_path, "kernel", commit,
                            {{"case", name},
                             {"impl", "ditkit"},
                             {"value", ms},
                             {"unit", "ms"},
                             {"baseline_impl", "cudnn-dense"},
                             {"baseline_value", dense_ms},
                             {"ratio", dense_ms / ms},
                             {"tflops_kept", flops / ms / 1e9},
                             {"kept_blocks", kept}});
    }
  return 0;
}
