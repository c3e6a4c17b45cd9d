"""FlexAttention (torch.compile'd) and cuDNN dense on the block maps bench/attention_kernel.cpp
times, in one process: the peer for the block-sparse kernel.
  python3 bench/device/attention_flex.py --tokens S --heads H --dim D --kblock 128 --out FILE
Writes bench/results/ lines (bench "kernel", impl "flexattention", baseline cudnn-dense)."""
import argparse
import datetime
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from cuda_timing import median_ms


def block_map(H, NQ, NK, density, imbalanced):
    """The same map as block_map() in bench/attention_kernel.cpp: exactly count(i) blocks a row."""
    mean = density * NK
    i = torch.arange(NQ)
    count = torch.full((NQ,), round(mean))
    if imbalanced:
        heavy = min(NK, round(4 * mean))
        light = round((8 * mean - heavy) / 7)
        count = torch.where(i % 8 == 0, torch.tensor(heavy), torch.tensor(light))
    count = count.clamp(1, NK)
    j, h = torch.arange(NK), torch.arange(H)
    key = (j.view(1, 1, NK) * 131 + i.view(1, NQ, 1) * 17 + h.view(H, 1, 1) * 7) % NK
    return (key < count.view(1, NQ, 1)).unsqueeze(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=32760)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--kblock", type=int, default=128)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--out", default="kernel.jsonl")
    a = ap.parse_args()
    S, H, D, kb = a.tokens, a.heads, a.dim, a.kblock
    NQ, NK = (S + 127) // 128, (S + kb - 1) // kb
    q, k, v = (torch.randn(1, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        dense_ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v), warmup=5, iters=a.iters)
    print(f"cudnn dense (python): {dense_ms:.3f} ms")
    flex = torch.compile(flex_attention, dynamic=False)
    shape = f"1x{H}x{S}x{D}"
    for imbalanced in (False, True):
        for density in (1.0, 0.5, 0.25, 0.10, 0.05):
            mask = block_map(H, NQ, NK, density, imbalanced).cuda()
            counts = mask.sum(-1, dtype=torch.int32)
            indices = torch.argsort(~mask, dim=-1, stable=True).to(torch.int32)
            # Every kept block is a full block: no mask_mod work inside them.
            bm = BlockMask.from_kv_blocks(torch.zeros_like(counts), indices, counts, indices,
                                          BLOCK_SIZE=(128, kb), seq_lengths=(S, S))
            ms = median_ms(lambda: flex(q, k, v, block_mask=bm), warmup=5, iters=a.iters)
            line = {"bench": "kernel", "device": torch.cuda.get_device_name(),
                    "date": datetime.date.today().isoformat(), "commit": a.commit,
                    "case": f"{shape} d={density:.2f} {'imbalanced' if imbalanced else 'balanced'} kb={kb}",
                    "impl": "flexattention", "value": ms, "unit": "ms", "baseline_impl": "cudnn-dense",
                    "baseline_value": dense_ms, "ratio": dense_ms / ms,
                    "kept_blocks": mask.float().mean().item()}
            print(json.dumps(line))
            with open(a.out, "a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
