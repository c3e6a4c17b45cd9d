"""Golden data for pipelines/unipc_scheduler.cpp and pipelines/euler_scheduler.cpp.

Runs diffusers' UniPCMultistepScheduler (configured as the Wan2.1 diffusers checkpoints ship it)
and FlowMatchEulerDiscreteScheduler (static shift, as diffusers' own Wan pipeline tests use it) over
fixed schedules and fixed model outputs, and records timesteps, sigmas and the sample after every
step in tests/data/schedulers.safetensors.

Two references per trajectory:
  f32  stock diffusers on float32 tensors: what a real run computes.
  f64  the same algorithm in float64, so the C++ code can be held to ~1e-12 and a slip in the
       algorithm cannot hide under float32 rounding. diffusers keeps its sigma table in float32
       and does UniPC's scalar math on it, so for UniPC the table is promoted to float64 after
       set_timesteps (its values are unchanged: they are the float32 ones). Euler's step
       downcasts the sample to float32 whatever its dtype, so its f64 reference is the step's own
       formula, sample + (sigma[i+1] - sigma[i]) * model_output, written out here and checked
       against the f32 run.

Rerun: .venv/bin/python tests/golden/schedulers.py (needs torch and diffusers).
"""

import os

import numpy as np
import torch
import diffusers
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from safetensors.torch import save_file

# Wan-AI/Wan2.1-T2V-*-Diffusers scheduler/scheduler_config.json, minus the entries left at their
# defaults that only matter for other sigma types (betas, thresholding values).
WAN_UNIPC_CONFIG = dict(
    num_train_timesteps=1000,
    prediction_type="flow_prediction",
    use_flow_sigmas=True,
    solver_order=2,
    solver_type="bh2",
    predict_x0=True,
    lower_order_final=True,
    final_sigmas_type="zero",
    timestep_spacing="linspace",
    thresholding=False,
    disable_corrector=[],
    steps_offset=0,
)

SHAPE = (1, 4, 3, 4, 4)  # [B, C, F, H, W], small enough to keep the file well under 500 KB

# (num_steps, shift) with whole trajectories: Wan's 480p and 720p shifts; one step (straight to
# the x0 prediction); two steps (corrector of order 1 only); three (first order-2 predictor and
# corrector); shift 1 (no shift) and below 1; a shift float32 cannot hold exactly.
TRAJECTORY_CASES = [(10, 3.0), (7, 5.0), (1, 3.0), (2, 1.0), (3, 0.5), (13, 1.7)]
# Schedules only: Wan's default 50 steps at both shifts, and a long one.
SCHEDULE_CASES = [(50, 3.0), (50, 5.0), (200, 1.7)]


def case_name(num_steps, shift):
    return f"n{num_steps}_s{shift:g}"


def make_unipc(shift):
    return UniPCMultistepScheduler(flow_shift=shift, **WAN_UNIPC_CONFIG)


def make_euler(shift):
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def inputs(num_steps, seed):
    """Initial noise and one model output per step, shaped like a flow model's velocity
    (noise - x0) plus a per-step perturbation, so trajectories stay in a realistic range."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    x0 = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    outputs = torch.stack(
        [noise - x0 + 0.3 * torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(num_steps)]
    )
    return noise, outputs


def run_unipc(shift, num_steps, sample, outputs, dtype):
    sched = make_unipc(shift)
    sched.set_timesteps(num_steps)
    if dtype == torch.float64:
        sched.sigmas = sched.sigmas.to(torch.float64)
    sample = sample.to(dtype)
    samples = []
    for i, t in enumerate(sched.timesteps):
        sample = sched.step(outputs[i].to(dtype), t, sample).prev_sample
        assert sample.dtype == dtype
        samples.append(sample)
    return torch.stack(samples)


def run_euler_f32(shift, num_steps, sample, outputs):
    sched = make_euler(shift)
    sched.set_timesteps(num_steps)
    sample = sample.float()
    samples = []
    for i, t in enumerate(sched.timesteps):
        sample = sched.step(outputs[i].float(), t, sample).prev_sample
        samples.append(sample)
    return torch.stack(samples)


def run_euler_f64(sigmas, sample, outputs):
    sigmas = sigmas.to(torch.float64)
    samples = []
    for i in range(outputs.shape[0]):
        sample = sample + (sigmas[i + 1] - sigmas[i]) * outputs[i]
        samples.append(sample)
    return torch.stack(samples)


def schedule(make, shift, num_steps):
    sched = make(shift)
    sched.set_timesteps(num_steps)
    return sched.timesteps.to(torch.float64), sched.sigmas.to(torch.float64)


def main():
    tensors = {}
    for num_steps, shift in TRAJECTORY_CASES + SCHEDULE_CASES:
        name = case_name(num_steps, shift)
        for sched_name, make in (("unipc", make_unipc), ("euler", make_euler)):
            timesteps, sigmas = schedule(make, shift, num_steps)
            assert timesteps.shape == (num_steps,) and sigmas.shape == (num_steps + 1,)
            tensors[f"{sched_name}/{name}/timesteps"] = timesteps
            tensors[f"{sched_name}/{name}/sigmas"] = sigmas

    for seed, (num_steps, shift) in enumerate(TRAJECTORY_CASES):
        name = case_name(num_steps, shift)
        noise, outputs = inputs(num_steps, seed)
        tensors[f"inputs/{name}/sample"] = noise
        tensors[f"inputs/{name}/model_outputs"] = outputs

        unipc32 = run_unipc(shift, num_steps, noise, outputs, torch.float32)
        unipc64 = run_unipc(shift, num_steps, noise, outputs, torch.float64)
        euler32 = run_euler_f32(shift, num_steps, noise, outputs)
        euler64 = run_euler_f64(tensors[f"euler/{name}/sigmas"], noise, outputs)
        for ref64, ref32 in ((unipc64, unipc32), (euler64, euler32)):
            err = ((ref64 - ref32.double()).abs().max() / ref64.abs().max()).item()
            assert err < 1e-5, (name, err)
        tensors[f"unipc/{name}/samples_f32"] = unipc32
        tensors[f"unipc/{name}/samples_f64"] = unipc64
        tensors[f"euler/{name}/samples_f32"] = euler32
        tensors[f"euler/{name}/samples_f64"] = euler64

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "schedulers.safetensors")
    metadata = {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "trajectory_cases": ",".join(case_name(n, s) for n, s in TRAJECTORY_CASES),
        "schedule_cases": ",".join(case_name(n, s) for n, s in SCHEDULE_CASES),
    }
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, out, metadata=metadata)
    print(f"wrote {os.path.normpath(out)}: {len(tensors)} tensors, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
