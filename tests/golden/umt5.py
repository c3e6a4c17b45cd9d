"""Golden data for ditkit's umT5 text encoder and tokenizer (tests/dit/test_umt5.cpp).

Trains a tiny sentencepiece unigram model on generated English with some accents, CJK and emoji,
builds a tiny random transformers UMT5EncoderModel over its vocabulary, and runs both the way
diffusers' WanPipeline._get_t5_prompt_embeds does (prompt_clean, then the tokenizer with
padding="max_length", truncation, add_special_tokens, the attention mask, then the encoder and
the trim-to-length / zero-pad step), with max_sequence_length 64 instead of 512 to keep it small.
Writes tests/data/umt5_tiny/:

  tokenizer/spiece.model          the sentencepiece model (pad 0, eos 1, unk 2, no bos, as T5's)
  text_encoder/config.json,
  text_encoder/model.safetensors  the encoder (save_pretrained)
  io.safetensors
    input_ids        int64 [P, 64]      transformers' T5Tokenizer on the cleaned prompts
    attention_mask   int64 [P, 64]
    output           fp32  [P, 64, 32]  UMT5EncoderModel(input_ids, attention_mask).last_hidden_state
                                        (padded positions included: encode() must give them too)
    output_bf16      bf16  [P, 64, 32]  the same model loaded with torch_dtype=bfloat16
    metadata "prompts": the raw prompts as a JSON list (before prompt_clean); "max_length": 64

The pipeline's prompt_embeds are checked here to equal `output` up to each prompt's length and
zero after it, so the C++ test checks its encode_prompts() against `output` and the mask.

Rerun where `pip install torch transformers diffusers sentencepiece protobuf` works:
  python tests/golden/umt5.py [--out tests/data/umt5_tiny]
Made with torch 2.11.0, transformers 5.23.0, diffusers 0.42.1, sentencepiece 0.2.x on the CPU,
without ftfy (diffusers' prompt_clean skips ftfy.fix_text when it is not installed).
"""

import argparse
import json
import os
import random
import types

import sentencepiece as spm
import torch
import transformers
from diffusers import WanPipeline
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from safetensors.torch import save_file
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

from golden_common import perturb, relative_error

SEED = 20250102
MAX_LENGTH = 64
SPM_VOCAB = 256

PROMPTS = [
    "A red circle moves slowly to the left over a blue background",
    # punctuation, an HTML entity (prompt_clean unescapes it) and runs of whitespace (it collapses them)
    'Hello, world! (yes) -- it\'s 3:45pm; "quoted" &amp; more...   two  spaces\tand a tab',
    # accents, CJK and emoji seen in training, plus characters it never saw (unknown: id 2)
    "Un café crème über Müller à São Paulo: 红色的圆圈 向左移动 🎬🐱 and 🦄 ß Ω",
    "",  # empty: just EOS
    " \t\n  ",  # whitespace only: also just EOS
    # longer than MAX_LENGTH tokens: truncated to 63 tokens plus EOS
    " ".join(["a green square and a yellow triangle drift upward across a dark grey field"] * 6),
    # the normalizer's rules: full-width letters and digits, a ligature, curly quotes; NBSP and the
    # ideographic space are whitespace to prompt_clean
    "ｆｕｌｌ ｗｉｄｔｈ ＡＢＣ １２３ \ufb01ne \u201cquotes\u201d it\u2019s\u00a0nbsp\u3000end",
    "the end.",
]


def corpus_lines(rng: random.Random) -> list:
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "grey", "pink"]
    shapes = ["circle", "square", "triangle", "star", "hexagon", "cross", "ring", "diamond"]
    moves = ["moves", "slides", "drifts", "jumps", "rotates", "bounces", "floats", "spins"]
    directions = ["to the left", "to the right", "upward", "downward", "in a circle", "across the frame"]
    speeds = ["slowly", "quickly", "gently", "steadily", ""]
    backgrounds = ["a blue background", "a dark grey field", "a white wall", "a green meadow", "the night sky"]
    extras = [
        "Un café crème, s'il vous plaît.",
        "Über den Wolken: Müller, Straße, schön.",
        "São Paulo à noite, coração e emoção.",
        "红色的圆圈向左移动。",
        "蓝色的方块慢慢向上。",
        "一只猫在草地上跑。",
        "🎬 a short film 🎥 with a cat 🐱 and a dog 🐶",
        "Hello, world! It's 3:45pm; \"quoted\" (text) -- done...",
        "Numbers: 1, 2, 3, 10, 42, 100, 2025.",
    ]
    nouns = ("cat dog bird horse fish tree river mountain city street car train boat house window garden forest "
             "ocean beach bridge tower cloud storm sun moon lamp chair table book flower leaf stone snow rain "
             "child woman man dancer robot dragon castle market kitchen desert island valley").split()
    verbs = ("walks runs flies swims waits sleeps glows burns melts grows shines falls rises turns opens "
             "closes sings dances watches follows").split()
    adjectives = ("small large bright dark quiet noisy ancient modern golden silver wooden glass soft "
                  "sharp warm cold wet dry happy sad").split()
    lines = []
    for i in range(300):
        lines.append(
            f"{rng.choice(['A', 'The', 'Every', 'Some'])} {rng.choice(adjectives)} {rng.choice(nouns)} "
            f"{rng.choice(verbs)} near the {rng.choice(adjectives)} {rng.choice(nouns)}{rng.choice(['.', '!', '?', ''])}"
        )
    for i in range(400):
        s = " ".join(
            w
            for w in [
                rng.choice(["A", "The", "One", "a", "the"]),
                rng.choice(colours),
                rng.choice(shapes),
                rng.choice(moves),
                rng.choice(speeds),
                rng.choice(directions),
                rng.choice(["over", "across", "on"]),
                rng.choice(backgrounds),
            ]
            if w
        )
        lines.append(s + rng.choice([".", "!", ",", ""]))
        if i % 4 == 0:
            lines.append(rng.choice(extras))
    return lines


# Full-width Latin letters and digits -> ASCII, the "fi" ligature, the ohm sign, curly quotes.
NORMALIZATION_RULES = (
    [(0xFF21 + i, [0x41 + i]) for i in range(26)]
    + [(0xFF41 + i, [0x61 + i]) for i in range(26)]
    + [(0xFF10 + i, [0x30 + i]) for i in range(10)]
    + [(0xFB01, [0x66, 0x69]), (0x2126, [0x3A9]), (0x2019, [0x27]), (0x201C, [0x22]), (0x201D, [0x22])]
)


def train_spm(folder: str) -> None:
    """Writes folder/spiece.model. Trains inside `folder` with relative names, because the model
    file records the paths it was trained with (and should not name this machine's folders)."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        train_spm_here()
    finally:
        os.chdir(cwd)


def train_spm_here() -> None:
    rules_path = "spiece.rules.tsv"
    with open(rules_path, "w") as f:
        for src, dst in NORMALIZATION_RULES:
            f.write(f"{src:X}\t{' '.join(f'{c:X}' for c in dst)}\n")
    rng = random.Random(SEED)
    text = "\n".join(corpus_lines(rng))
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.split("\n")),
        model_prefix="spiece",
        vocab_size=SPM_VOCAB,
        model_type="unigram",
        character_coverage=1.0,
        # T5's special ids: pad 0, eos 1, unk 2, no bos
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        # A few NFKC-like rules instead of sentencepiece's built-in nmt_nfkc, whose 240 KB table
        # would dwarf the rest of the golden data; they still run through the same normalizer code.
        normalization_rule_tsv=rules_path,
        num_threads=1,  # deterministic
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    os.remove(rules_path)


def build_encoder(vocab_size: int) -> UMT5EncoderModel:
    torch.manual_seed(SEED)
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        dropout_rate=0.0,
    )
    model = UMT5EncoderModel(config)
    perturb(model, lambda name: "layer_norm" in name)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "data", "umt5_tiny")))
    args = parser.parse_args()
    tok_dir = os.path.join(args.out, "tokenizer")
    enc_dir = os.path.join(args.out, "text_encoder")
    os.makedirs(tok_dir, exist_ok=True)
    os.makedirs(enc_dir, exist_ok=True)

    train_spm(tok_dir)
    os.remove(os.path.join(tok_dir, "spiece.vocab"))
    # Converted from spiece.model to a tokenizers-backed tokenizer, as AutoTokenizer gives Wan.
    tokenizer = T5Tokenizer.from_pretrained(tok_dir)
    # T5Tokenizer adds 100 sentinel tokens <extra_id_N> after the sentencepiece pieces.
    vocab_size = len(tokenizer)

    model = build_encoder(vocab_size)
    model.save_pretrained(enc_dir, safe_serialization=True)

    # WanPipeline._get_t5_prompt_embeds on a stand-in pipeline holding just these two parts.
    pipe = types.SimpleNamespace(tokenizer=tokenizer, text_encoder=model)
    with torch.no_grad():
        prompt_embeds = WanPipeline._get_t5_prompt_embeds(
            pipe, PROMPTS, max_sequence_length=MAX_LENGTH, device=torch.device("cpu"), dtype=torch.float32
        )
    cleaned = [prompt_clean(p) for p in PROMPTS]
    text_inputs = tokenizer(
        cleaned,
        padding="max_length",
        max_length=MAX_LENGTH,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    ids, mask = text_inputs.input_ids, text_inputs.attention_mask
    with torch.no_grad():
        output = model(ids, mask).last_hidden_state
        model_bf16 = UMT5EncoderModel.from_pretrained(enc_dir, torch_dtype=torch.bfloat16).eval()
        output_bf16 = model_bf16(ids, mask).last_hidden_state

    # The pipeline's step = output up to each prompt's length, zeros after it.
    lengths = mask.sum(1)
    assert torch.equal(prompt_embeds, output * mask.unsqueeze(-1).float()), "pipeline step differs"

    save_file(
        {
            "input_ids": ids.contiguous(),
            "attention_mask": mask.contiguous(),
            "output": output.contiguous(),
            "output_bf16": output_bf16.contiguous(),
        },
        os.path.join(args.out, "io.safetensors"),
        metadata={
            "prompts": json.dumps(PROMPTS, ensure_ascii=False),
            "max_length": str(MAX_LENGTH),
            "seed": str(SEED),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    )
    print("spm pieces:", SPM_VOCAB, "tokenizer size:", vocab_size)
    for p, c, row, n in zip(PROMPTS, cleaned, ids, lengths):
        print(f"{n.item():3d} tokens  {c[:50]!r}: {row[: min(int(n), 16)].tolist()}")
    print(f"bf16 vs fp32: max relative error {relative_error(output_bf16, output):.3e}")
    total = 0
    for root, _, files in os.walk(args.out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"wrote {args.out} ({total} bytes)")


if __name__ == "__main__":
    main()
