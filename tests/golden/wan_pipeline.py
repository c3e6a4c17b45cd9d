"""Golden data for ditkit's whole Wan2.1 text-to-video pipeline (end to end against diffusers).

Assembles a tiny but complete Wan2.1 diffusers folder out of the existing tiny parts plus a new tiny
transformer, runs diffusers' WanPipeline on it once (CPU, float32) and records the run. Writes
tests/data/wan_pipeline_tiny/:

  model_index.json                      as WanPipeline.save_pretrained writes it
  scheduler/scheduler_config.json       UniPCMultistepScheduler, Wan's config (tests/golden/schedulers.py's
                                        WAN_UNIPC_CONFIG: flow_prediction, use_flow_sigmas, solver_order 2,
                                        bh2, lower_order_final, final_sigmas_type zero) with flow_shift 3.0
  tokenizer/spiece.model                copied from tests/data/umt5_tiny/tokenizer (tests/golden/umt5.py)
  text_encoder/config.json,
  text_encoder/model.safetensors        copied from tests/data/umt5_tiny/text_encoder (UMT5, d_model 32)
  vae/config.json,
  vae/diffusion_pytorch_model.safetensors   copied from tests/data/wan_vae_tiny (tests/golden/wan_vae.py; z_dim 16)
  transformer/config.json,
  transformer/diffusion_pytorch_model.safetensors   a new tiny random WanTransformer3DModel: in/out
                                        channels 16, text_dim 32, 2 heads x 12, freq_dim 256, ffn 32,
                                        2 layers, cross_attn_norm, rms_norm_across_heads, eps 1e-6,
                                        rope_max_seq_len 32; every norm parameter perturbed
  reference.safetensors                 one WanPipeline.from_pretrained(folder, torch_dtype=float32) run:
    initial_latents   fp32 [1, 16, F_lat, H/8, W/8]  what pipe.prepare_latents drew: the first (and only)
                                        draw on the generator, torch.randn(shape, generator=
                                        torch.Generator("cpu").manual_seed(SEED), dtype=torch.float32)
    prompt_embeds     fp32 [1, L, 32]   encode_prompt's output (L = max_sequence_length; zero after the
    negative_prompt_embeds  fp32 [1, L, 32]   prompt's tokens)
    timesteps         fp32 [S]          scheduler.timesteps after set_timesteps(S)
    sigmas            fp32 [S + 1]      scheduler.sigmas (last one 0)
    noise_pred_cond   fp32 [S, 1, 16, F_lat, H/8, W/8]  the transformer on the prompt at each step
    noise_pred_uncond fp32 [S, 1, 16, F_lat, H/8, W/8]  ... on the negative prompt (CFG mixes them)
    step_latents      fp32 [S, 1, 16, F_lat, H/8, W/8]  latents after each scheduler step
    final_latents     fp32 [1, 16, F_lat, H/8, W/8]  = step_latents[-1], what the VAE decodes (after
                                        de-normalising with latents_mean / latents_std)
    video             fp32  [T, H, W, 3] in [0, 1]   the output with output_type="np"
    video_uint8       uint8 [T, H, W, 3]  what output_type="pil" gives: VaeImageProcessor.numpy_to_pil's
                                        (video * 255).round().astype("uint8"), numpy rounding half to even
  metadata: prompt, negative_prompt, height, width, num_frames, num_inference_steps, guidance_scale,
  seed, max_sequence_length, flow_shift, torch / diffusers / transformers versions.

Sizes: W is 32, not 40: WanPipeline rounds height and width down to multiples of
vae_scale_factor_spatial * patch = 8 * 2 = 16 (40 would silently become 32). num_frames is 5 (1 + 4k,
two latent frames), not 9: with 9 frames the float video alone is 166 KB and the folder goes over its
600 KB budget; the VAE's longer temporal chunking is already covered by tests/data/wan_vae_tiny.

Deterministic: fixed seeds, one CPU thread, the output folder rebuilt from scratch each run; a rerun
gives the same bytes.

Rerun where `pip install torch diffusers transformers sentencepiece protobuf safetensors accelerate`
works (run tests/golden/umt5.py and tests/golden/wan_vae.py first if their folders are missing):
  .venv/bin/python tests/golden/wan_pipeline.py [--out tests/data/wan_pipeline_tiny]
Made with torch 2.11.0, transformers 5.23.0 and diffusers 0.42.1 on the CPU, without ftfy.
"""

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
import diffusers
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline
from diffusers.image_processor import VaeImageProcessor
from transformers import T5Tokenizer, UMT5EncoderModel

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from golden_common import save_deterministic  # noqa: E402
from schedulers import WAN_UNIPC_CONFIG  # noqa: E402  the same Wan scheduler config as the scheduler goldens
from wan_transformer import build_model  # noqa: E402  the same tiny transformer, other channels

DATA = os.path.normpath(os.path.join(HERE, "..", "data"))
TRANSFORMER_SEED = 20250103

PROMPT = "a red circle moves left on a blue background"
NEGATIVE_PROMPT = "blurry"
HEIGHT = 48
WIDTH = 32
NUM_FRAMES = 5
NUM_INFERENCE_STEPS = 3
GUIDANCE_SCALE = 5.0
SEED = 7
MAX_SEQUENCE_LENGTH = 32
FLOW_SHIFT = 3.0


def copy_files(src: str, dst: str, names: list) -> None:
    os.makedirs(dst, exist_ok=True)
    for name in names:
        shutil.copyfile(os.path.join(src, name), os.path.join(dst, name))


def write_folder(out: str) -> None:
    """The diffusers folder: model_index.json, scheduler/ and transformer/ from save_pretrained,
    tokenizer/, text_encoder/ and vae/ copied byte for byte from the existing tiny parts."""
    umt5 = os.path.join(DATA, "umt5_tiny")
    vae_dir = os.path.join(DATA, "wan_vae_tiny")
    pipe = WanPipeline(
        tokenizer=T5Tokenizer.from_pretrained(os.path.join(umt5, "tokenizer")),
        text_encoder=UMT5EncoderModel.from_pretrained(os.path.join(umt5, "text_encoder")),
        transformer=build_model(TRANSFORMER_SEED, in_channels=16, text_dim=32),
        vae=AutoencoderKLWan.from_pretrained(vae_dir),
        scheduler=UniPCMultistepScheduler(flow_shift=FLOW_SHIFT, **WAN_UNIPC_CONFIG),
    )
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        shutil.copyfile(os.path.join(tmp, "model_index.json"), os.path.join(out, "model_index.json"))
        for part in ("scheduler", "transformer"):
            shutil.copytree(os.path.join(tmp, part), os.path.join(out, part))
    copy_files(os.path.join(umt5, "tokenizer"), os.path.join(out, "tokenizer"), ["spiece.model"])
    copy_files(os.path.join(umt5, "text_encoder"), os.path.join(out, "text_encoder"),
               ["config.json", "model.safetensors"])
    copy_files(vae_dir, os.path.join(out, "vae"), ["config.json", "diffusion_pytorch_model.safetensors"])


def run_pipeline(out: str) -> dict:
    pipe = WanPipeline.from_pretrained(out, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    record = {"noise_pred": [], "step_latents": []}

    # The exact noise: wrap prepare_latents and keep what it returns.
    prepare_latents = pipe.prepare_latents

    def recording_prepare_latents(*args, **kwargs):
        latents = prepare_latents(*args, **kwargs)
        record["initial_latents"] = latents.clone()
        return latents

    pipe.prepare_latents = recording_prepare_latents

    # Every transformer call, in order: cond then uncond at each step.
    def hook(module, args, kwargs, output):
        record["noise_pred"].append(output[0].clone())

    handle = pipe.transformer.register_forward_hook(hook, with_kwargs=True)

    def on_step_end(pipeline, i, t, kwargs):
        record["step_latents"].append(kwargs["latents"].clone())
        if i == 0:
            record["prompt_embeds"] = kwargs["prompt_embeds"].clone()
            record["negative_prompt_embeds"] = kwargs["negative_prompt_embeds"].clone()
        return {}

    with torch.no_grad():
        video = pipe(
            prompt=PROMPT,
            negative_prompt=NEGATIVE_PROMPT,
            height=HEIGHT,
            width=WIDTH,
            num_frames=NUM_FRAMES,
            num_inference_steps=NUM_INFERENCE_STEPS,
            guidance_scale=GUIDANCE_SCALE,
            generator=torch.Generator("cpu").manual_seed(SEED),
            output_type="np",
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "negative_prompt_embeds"],
            max_sequence_length=MAX_SEQUENCE_LENGTH,
        ).frames
    handle.remove()
    record["video"] = video
    record["timesteps"] = pipe.scheduler.timesteps.clone()
    record["sigmas"] = pipe.scheduler.sigmas.clone()

    # Independent checks of what was captured.
    init = record["initial_latents"]
    f_lat = (NUM_FRAMES - 1) // pipe.vae_scale_factor_temporal + 1
    shape = (1, 16, f_lat, HEIGHT // 8, WIDTH // 8)
    assert tuple(init.shape) == shape and init.dtype == torch.float32
    expected = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(SEED), dtype=torch.float32)
    assert torch.equal(init, expected), "initial latents are not the first randn draw"
    with torch.no_grad():
        pe, npe = pipe.encode_prompt(PROMPT, NEGATIVE_PROMPT, max_sequence_length=MAX_SEQUENCE_LENGTH,
                                     device=torch.device("cpu"))
    assert torch.equal(pe, record["prompt_embeds"]) and torch.equal(npe, record["negative_prompt_embeds"])
    assert len(record["noise_pred"]) == 2 * NUM_INFERENCE_STEPS
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(DATA, "wan_pipeline_tiny"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # bitwise reproducible reruns
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)

    write_folder(args.out)
    record = run_pipeline(args.out)

    video = np.ascontiguousarray(record["video"][0], dtype=np.float32)  # [T, H, W, 3]
    video_uint8 = (video * 255).round().astype("uint8")
    pil = VaeImageProcessor.numpy_to_pil(video)  # what output_type="pil" does with the same array
    assert np.array_equal(np.stack([np.asarray(image) for image in pil]), video_uint8)
    assert video.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and video.min() >= 0 and video.max() <= 1

    noise_pred = record["noise_pred"]
    step_latents = torch.stack(record["step_latents"])
    tensors = {
        "initial_latents": record["initial_latents"],
        "prompt_embeds": record["prompt_embeds"],
        "negative_prompt_embeds": record["negative_prompt_embeds"],
        "timesteps": record["timesteps"].float(),
        "sigmas": record["sigmas"].float(),
        "noise_pred_cond": torch.stack(noise_pred[0::2]),
        "noise_pred_uncond": torch.stack(noise_pred[1::2]),
        "step_latents": step_latents,
        "final_latents": step_latents[-1].clone(),
        "video": torch.from_numpy(video),
        "video_uint8": torch.from_numpy(video_uint8),
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    metadata = {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "height": str(HEIGHT),
        "width": str(WIDTH),
        "num_frames": str(NUM_FRAMES),
        "num_inference_steps": str(NUM_INFERENCE_STEPS),
        "guidance_scale": repr(GUIDANCE_SCALE),
        "seed": str(SEED),
        "max_sequence_length": str(MAX_SEQUENCE_LENGTH),
        "flow_shift": repr(FLOW_SHIFT),
        "generator": "torch.Generator('cpu').manual_seed(seed); torch.randn([1, 16, F_lat, H/8, W/8], float32)",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
    save_deterministic(tensors, metadata, os.path.join(args.out, "reference.safetensors"))

    for k, v in tensors.items():
        print(f"{k:24s} {str(v.dtype):14s} {tuple(v.shape)}")
    print("timesteps", tensors["timesteps"].tolist(), "sigmas", tensors["sigmas"].tolist())
    print(f"video mean {video.mean():.4f}, min {video.min():.4f}, max {video.max():.4f}, "
          f"share at 0 or 1 {((video == 0) | (video == 1)).mean():.3f}")
    total = 0
    for root, _, files in sorted(os.walk(args.out)):
        for f in sorted(files):
            path = os.path.join(root, f)
            total += os.path.getsize(path)
            print(f"{os.path.getsize(path):8d}  {os.path.relpath(path, args.out)}")
    print(f"wrote {args.out} ({total} bytes)")
    assert total < 600 * 1024, "over the 600 KB budget"


if __name__ == "__main__":
    main()
