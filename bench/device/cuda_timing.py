"""CUDA-event timing shared by the device scripts (the Python side of bench/device_bench.h)."""
import statistics

import torch


def median_ms(fn, warmup, iters):
    """Median of `iters` runs after `warmup`, each timed with CUDA events on the current stream."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)
