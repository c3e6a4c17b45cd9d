#!/usr/bin/env python3
"""One markdown row per dit-ab report: the recipe's quality against dense on the shipped model.

    python3 bench/device/ab_table.py OUT/ab/*/report.json

PSNR per prompt is dit-ab's mean over frames (from the mean MSE); the table gives the mean and
the worst over prompts, so one bad prompt cannot hide behind good ones.
"""
import json
import math
import sys


def main(paths):
    print("| recipe | density run | PSNR mean (worst) dB | SSIM mean | attention error | prompts |")
    print("|---|---|---|---|---|---|")
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        prompts = report["prompts"]
        psnr = [math.inf if p["mean_psnr"] is None else p["mean_psnr"] for p in prompts]
        mean = lambda key: sum(p[key] for p in prompts) / len(prompts)
        print(f"| `{report['recipe']}` | {mean('mean_density'):.3f} | {sum(psnr) / len(psnr):.2f} ({min(psnr):.2f}) "
              f"| {mean('mean_ssim'):.3f} | {mean('mean_attention_error'):.3f} | {len(prompts)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
