"""The diffusers side of the one-step benchmark (bench/device/step.sh runs it on the GPU machine).

Builds WanTransformer3DModel at the Wan2.1-T2V-1.3B configuration with RANDOM weights (seeded),
saves them as a diffusers transformer/ folder so that ditkit's step_time loads the very same
weights, and times one denoising step (cond + uncond batched, B=2, 480x832, 81 frames) eager and
torch.compile'd, with cuDNN attention forced, as ditkit's `dense:kernel=cudnn` runs.
Writes {"eager_ms", "compiled_ms", "eager_peak_gib", "compiled_peak_gib"} as JSON.
    python3 step_diffusers.py MODEL_DIR OUT_JSON [KERNEL_TABLE.txt]
"""
import json
import sys

import torch
from diffusers import WanTransformer3DModel
from torch.nn.attention import SDPBackend, sdpa_kernel

from cuda_timing import median_ms


def main(model_dir, out_json):
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
            out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    # bf16, but the modules diffusers keeps in fp32 stay fp32, as from_pretrained(torch_dtype=bf16)
    # leaves them (and as ditkit runs them); a plain .to(bf16) would time a different model.
    model = model.to(torch.bfloat16).eval()
    keep = model._keep_in_fp32_modules
    for name, param in model.named_parameters():
        if any(part in keep for part in name.split(".")):
            param.data = param.data.float()
    model.save_pretrained(model_dir, safe_serialization=True)
    print("RANDOM WEIGHTS: Wan2.1-T2V-1.3B configuration, seed 0, saved to", model_dir, flush=True)

    gen = torch.Generator("cuda").manual_seed(0)
    latents = torch.randn(2, 16, 21, 60, 104, generator=gen, device="cuda", dtype=torch.bfloat16)
    context = torch.randn(2, 512, 4096, generator=gen, device="cuda", dtype=torch.bfloat16)
    timestep = torch.full((2,), 999.0, device="cuda")
    result = {}
    with torch.no_grad(), sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        step = lambda m: m(latents, timestep, context, return_dict=False)[0]
        torch.cuda.reset_peak_memory_stats()
        result["eager_ms"] = median_ms(lambda: step(model), warmup=2, iters=5)
        result["eager_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print("diffusers eager", result, flush=True)
        compiled = torch.compile(model)
        torch.cuda.reset_peak_memory_stats()
        result["compiled_ms"] = median_ms(lambda: step(compiled), warmup=2, iters=5)
        result["compiled_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if len(sys.argv) > 3:  # where torch.compile's step spends its GPU time, beside ditkit's
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                step(compiled)
                torch.cuda.synchronize()
            with open(sys.argv[3], "w") as f:
                f.write(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=100))
    print("diffusers", result, flush=True)
    with open(out_json, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
