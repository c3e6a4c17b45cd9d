// Plan-building cost on the GPU against dense cuDNN attention, measured in one run:
//   plan_cost [--batch B] [--tokens S] [--heads H] [--kblock 64|128] [--density P] [--out results.jsonl]
// Times topk and sla plans (pool q/k, score blocks, select, build the CSR) with 128-token query
// blocks at the Wan2.1-1.3B shape and writes one JSON line per case (bench/results/ format).
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "bench/device_bench.h"
#include "kernels/block_pool.h"
#include "kernels/block_scores.h"
#include "kernels/block_select.h"
#include "kernels/dense_attention.h"
#include "sparse/attention_method.h"

namespace {

double median_ms(const std::function<void()>& fn) { return ditkit::bench::median_ms(fn, 5, 20); }

}  // namespace

int main(int argc, char** argv) {
  int64_t B = 1, S = 32760, H = 12, D = 128, kblock = 64;
  double density = 0.10;
  std::string out_path = "plan_cost.jsonl", commit = "unknown";
  bool profile = false;
  for (int i = 1; i < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--profile") {
      profile = true;  // one topk plan and exit, for a profiler to read
      --i;
    } else if (i + 1 >= argc) {
      std::fprintf(stderr, "plan_cost: %s needs a value\n", argv[i]);
      return 2;
    } else if (flag == "--batch") B = std::stoll(argv[i + 1]);
    else if (flag == "--tokens") S = std::stoll(argv[i + 1]);
    else if (flag == "--kblock") kblock = std::stoll(argv[i + 1]);
    else if (flag == "--heads") H = std::stoll(argv[i + 1]);
    else if (flag == "--density") density = std::stod(argv[i + 1]);
    else if (flag == "--out") out_path = argv[i + 1];
    else if (flag == "--commit") commit = argv[i + 1];
    else {
      std::fprintf(stderr, "plan_cost: unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  if (!at::hasCUDA()) {
    std::fprintf(stderr, "plan_cost: needs a CUDA GPU\n");
    return 2;
  }
  auto opts = at::dtype(at::kBFloat16).device(at::kCUDA);
  at::Tensor q = at::randn({B, S, H, D}, opts), k = at::randn({B, S, H, D}, opts), v = at::randn({B, S, H, D}, opts);

  const int64_t NK = (S + kblock - 1) / kblock;
  const int64_t top_k = std::max<int64_t>(1, static_cast<int64_t>(density * NK + 0.5));
  const std::string blocks = ":kblock=" + std::to_string(kblock);
  const std::string topk_recipe = "topk:k=" + std::to_string(top_k) + ":diag=1" + blocks;
  ditkit::AttentionContext ctx;
  if (profile) {
    auto method =
        ditkit::make_attention_method(ditkit::parse_recipe(topk_recipe, ditkit::attention_method_specs()).rules[0]);
    method->plan(q, k, ctx);
    cudaDeviceSynchronize();
    return 0;
  }
  const double dense_ms = median_ms([&] { ditkit::dense_attention(q, k, v); });
  char shape[64];
  std::snprintf(shape, sizeof shape, "%lldx%lldx%lldx%lld", static_cast<long long>(B), static_cast<long long>(H),
                static_cast<long long>(S), static_cast<long long>(D));
  char keep[32];
  std::snprintf(keep, sizeof keep, "%g", density);
  for (const std::string& recipe :
       {topk_recipe, "topk:mass=0.9:diag=1" + blocks, "sla:keep=" + std::string(keep) + blocks}) {
    auto method = ditkit::make_attention_method(ditkit::parse_recipe(recipe, ditkit::attention_method_specs()).rules[0]);
    const double plan_ms = median_ms([&] { method->plan(q, k, ctx); });
    const double kept = method->plan(q, k, ctx).density(q.device()).item<float>();
    char name[160];
    std::snprintf(name, sizeof name, "%s 128x%lld blocks %s (kept %.3f)", shape, static_cast<long long>(kblock),
                  recipe.c_str(), kept);
    ditkit::bench::record(out_path, "plan", commit,
                          {{"case", name},
                           {"impl", "ditkit-plan"},
                           {"value", plan_ms},
                           {"unit", "ms"},
                           {"baseline_impl", "cudnn-dense"},
                           {"baseline_value", dense_ms},
                           {"ratio", dense_ms / plan_ms},
                           {"share_of_dense", plan_ms / dense_ms}});
  }
  // Where the topk plan's time goes (printed only, for reading alongside the recorded lines).
  ditkit::BlockGeometry g{S, 128, kblock};
  ditkit::BlockSelection sel{top_k, 0.0, true, 0};
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  at::Tensor qp = ditkit::block_mean_pool(q, 128), kp = ditkit::block_mean_pool(k, kblock);
  at::Tensor scores = ditkit::block_scores(qp, kp, scale);
  std::printf("stages (ms): pool q %.4f | pool k %.4f | scores %.4f | select->csr %.4f\n",
              median_ms([&] { ditkit::block_mean_pool(q, 128); }),
              median_ms([&] { ditkit::block_mean_pool(k, kblock); }),
              median_ms([&] { ditkit::block_scores(qp, kp, scale); }),
              median_ms([&] { ditkit::select_blocks_csr(scores, g, sel); }));
  return 0;
}
