"""Golden data for ditkit's Wan2.1 transformer (tests/dit/test_wan_transformer.cpp).

Builds a tiny random diffusers WanTransformer3DModel (the size of diffusers' own unit tests),
saves it the way diffusers ships checkpoints, runs it on fixed inputs in fp32 and in bf16, and
writes everything under tests/data/wan_tiny/:

  config.json, diffusion_pytorch_model.safetensors   the model (save_pretrained)
  io.safetensors                                      inputs and outputs:
    hidden_states          fp32 [2, 4, 3, 8, 12]   latents; 1x2x2 patches -> grid 3x4x6 = 72 tokens
                                                    (not a multiple of 128; H != W so a swapped axis shows)
    timestep               fp32 [2]                 two different timesteps, one per batch entry
    encoder_hidden_states  fp32 [2, 7, 16]          text context, L = 7
    output                 fp32 [2, 4, 3, 8, 12]   the fp32 model's output
    output_bf16            bf16 [2, 4, 3, 8, 12]   from_pretrained(torch_dtype=bfloat16) on the same
                                                    inputs cast to bf16 (fp32 modules kept as diffusers keeps them)

Rerun where `pip install torch diffusers transformers safetensors accelerate` works (diffusers needs
accelerate to load with torch_dtype and keep its fp32 modules):
  python tests/golden/wan_transformer.py [--out tests/data/wan_tiny]
Made with torch 2.11.0 and diffusers 0.42.1 on the CPU.
"""

import argparse
import os

import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import save_file

from golden_common import perturb, relative_error

SEED = 20250101


def build_model(seed: int = SEED, in_channels: int = 4, text_dim: int = 16) -> WanTransformer3DModel:
    """The tiny config of diffusers' own tests (wan_pipeline.py builds one with other channels)."""
    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=in_channels,
        text_dim=text_dim,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=32,
    )
    perturb(model, lambda name: ".norm" in name)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "data", "wan_tiny")))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    model = build_model()
    model.save_pretrained(args.out, safe_serialization=True)

    gen = torch.Generator().manual_seed(SEED + 1)
    hidden_states = torch.randn(2, 4, 3, 8, 12, generator=gen)
    timestep = torch.tensor([999.0, 412.5])
    encoder_hidden_states = torch.randn(2, 7, 16, generator=gen)

    with torch.no_grad():
        output = model(hidden_states, timestep, encoder_hidden_states, return_dict=False)[0]

        # Loaded the way a bf16 pipeline loads it, so _keep_in_fp32_modules applies.
        model_bf16 = WanTransformer3DModel.from_pretrained(args.out, torch_dtype=torch.bfloat16).eval()
        kept = [n for n, p in model_bf16.named_parameters() if p.dtype == torch.float32]
        output_bf16 = model_bf16(
            hidden_states.bfloat16(), timestep, encoder_hidden_states.bfloat16(), return_dict=False
        )[0]

    save_file(
        {
            "hidden_states": hidden_states.contiguous(),
            "timestep": timestep.contiguous(),
            "encoder_hidden_states": encoder_hidden_states.contiguous(),
            "output": output.contiguous(),
            "output_bf16": output_bf16.contiguous(),
        },
        os.path.join(args.out, "io.safetensors"),
        metadata={"seed": str(SEED), "torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
    )
    print("fp32 parameters in the bf16 model:", ", ".join(kept))
    print(f"output {tuple(output.shape)}, max|output| = {output.abs().max().item():.4f}")
    print(f"diffusers bf16 vs fp32: max relative error {relative_error(output_bf16, output):.3e}")
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"wrote {args.out} ({total} bytes)")


if __name__ == "__main__":
    main()
