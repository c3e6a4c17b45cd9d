"""Golden data for ditkit's Wan2.1 VAE decoder (tests/dit/test_wan_vae.cpp).

Builds a tiny random diffusers AutoencoderKLWan, saves it the way diffusers ships checkpoints,
decodes fixed latents the way WanPipeline does (de-normalise with latents_mean/latents_std,
vae.decode, VideoProcessor.postprocess_video) and writes everything under tests/data/wan_vae_tiny/:

  config.json, diffusion_pytorch_model.safetensors   the model (save_pretrained; encoder included)
  io.safetensors                                      inputs and outputs:
    latents          fp32 [1, 16, 3, 6, 5]    in the DiT's (normalised) space; odd W on purpose
    decoded          fp32 [1, 3, 9, 48, 40]   vae.decode of the de-normalised latents, in [-1, 1]
    frames           uint8 [9, 48, 40, 3]     postprocess_video(decoded, output_type="pil") as arrays:
                                              ((x / 2 + 0.5).clamp(0, 1) * 255).round() (numpy rounds
                                              half to even); export_to_video would truncate instead
    latents_1        fp32 [1, 16, 1, 6, 5]    a one-frame latent (an image): only the first chunk
    decoded_1        fp32 [1, 3, 1, 48, 40]
  metadata bf16_relative_error, bf16_mean_error: diffusers' own bf16 decode
  (from_pretrained(torch_dtype=bfloat16), CPU) against the fp32 one, max|a - b| / max|b| and
  mean|a - b| / mean|b|, the yardsticks for ditkit's bf16 tests.

The configuration is diffusers' unit-test VAE (base_dim 3, z_dim 16, num_res_blocks 1,
temperal_downsample [False, True, True]) except dim_mult [1, 2, 2, 2] instead of [1, 1, 1, 1]: with
all ones the decoder halves 3 channels to 1 after each upsampler, and an RMS norm over one channel
is sign(x), which turns rounding differences into sign flips; [1, 2, 2, 2] keeps every width >= 3
and makes the up blocks' widths differ, so a wrong width order shows.

Rerun where `pip install torch diffusers safetensors accelerate` works:
  python tests/golden/wan_vae.py [--out tests/data/wan_vae_tiny]
Made with torch 2.11.0 and diffusers 0.42.1 on the CPU.
"""

import argparse
import os

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from diffusers.video_processor import VideoProcessor
from safetensors.torch import save_file

from golden_common import perturb, relative_error

SEED = 20250102


def build_model() -> AutoencoderKLWan:
    torch.manual_seed(SEED)
    model = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    perturb(model, lambda name: name.endswith(".gamma"))
    return model.eval()


def pipeline_decode(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """WanPipeline.__call__'s decode: de-normalise, then vae.decode (clamped to [-1, 1])."""
    latents = latents.to(vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(latents.dtype)
    return vae.decode(latents / inv_std + mean, return_dict=False)[0]


def mean_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """mean|a - b| / mean|b|."""
    a, b = a.double(), b.double()
    return ((a - b).abs().mean() / b.abs().mean()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "data", "wan_vae_tiny")))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    vae = build_model()
    vae.save_pretrained(args.out, safe_serialization=True)

    gen = torch.Generator().manual_seed(SEED + 1)
    latents = torch.randn(1, 16, 3, 6, 5, generator=gen)
    latents_1 = torch.randn(1, 16, 1, 6, 5, generator=gen)

    with torch.no_grad():
        decoded = pipeline_decode(vae, latents)
        decoded_1 = pipeline_decode(vae, latents_1)
        vae_bf16 = AutoencoderKLWan.from_pretrained(args.out, torch_dtype=torch.bfloat16).eval()
        decoded_bf16 = pipeline_decode(vae_bf16, latents)
        bf16_error = relative_error(decoded_bf16, decoded)
        bf16_mean_error = mean_error(decoded_bf16, decoded)

    pil = VideoProcessor(vae_scale_factor=8).postprocess_video(decoded, output_type="pil")[0]
    frames = torch.from_numpy(np.stack([np.asarray(image) for image in pil]))

    save_file(
        {
            "latents": latents.contiguous(),
            "decoded": decoded.contiguous(),
            "frames": frames.contiguous(),
            "latents_1": latents_1.contiguous(),
            "decoded_1": decoded_1.contiguous(),
        },
        os.path.join(args.out, "io.safetensors"),
        metadata={
            "seed": str(SEED),
            "torch": torch.__version__,
            "diffusers": __import__("diffusers").__version__,
            "bf16_relative_error": repr(bf16_error),
            "bf16_mean_error": repr(bf16_mean_error),
        },
    )
    saturated = (decoded.abs() == 1).double().mean().item()
    print(f"decoded {tuple(decoded.shape)}, mean|x| {decoded.abs().mean().item():.4f}, clamped share {saturated:.3f}")
    print(f"frames {tuple(frames.shape)} {frames.dtype}; decoded_1 {tuple(decoded_1.shape)}")
    print(f"diffusers bf16 vs fp32: max relative error {bf16_error:.3e}, mean {bf16_mean_error:.3e}")
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"wrote {args.out} ({total} bytes)")


if __name__ == "__main__":
    main()
