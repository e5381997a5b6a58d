#!/usr/bin/env python3
"""burnbert's `predict` against transformers on the same weights and sentence pairs: the check
that a GPU build computes what the CPU-tested model computes.

    HF_HOME=~/.cache/burnbert-hf HF_HUB_OFFLINE=1 python bench/cuda_check.py \\
        --predict-bin target/release/predict --model assets/fixtures/tiny-bert --device cuda

`--model` is a directory in Hugging Face layout. With `--init-config CONFIG --tokenizer-dir D`
and a `--model` directory that does not exist yet, it is first made: transformers'
BertForSequenceClassification randomly initialised from CONFIG (seeded), saved as safetensors,
with D's tokenizer files beside it (weights 10 times BERT's usual spread, so that the logits
are far from 0). That stands in for checkpoints that cannot be carried to
the GPU machine; the comparison is the same.

The pairs are the first `--pairs` rows of MRPC's validation split, tokenized with the model's
tokenizer.json exactly as burnbert does (`[CLS] a [SEP] b [SEP]`, longest-first truncation to
max_position_embeddings). transformers runs each pair alone in float32 on `--device` (no
padding, TF32 off); burnbert's `predict` batches them with dynamic padding. Prints one JSON
object; exits 1 when a logit differs by more than `--tolerance` times the largest logit's
magnitude (or 1, if larger). On CUDA, where Burn multiplies f32 matrices in TF32, it also runs
transformers with every matmul operand rounded to TF32 as the tensor cores read it (emulated,
so the same on any device; `--tf32-reference` asks for it elsewhere), reports burnbert's
distance to that, and allows twice the distance that the rounding moves transformers' logits.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertForSequenceClassification

from course_mrpc import split

TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt"]


def make_model(directory: Path, config_file: Path, tokenizer_dir: Path, seed: int,
               initializer_range: float) -> None:
    torch.manual_seed(seed)
    config = BertConfig.from_json_file(str(config_file))
    config.initializer_range = initializer_range
    model = BertForSequenceClassification(config)
    model.save_pretrained(directory, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, directory / name)


def fail(model: Path, message: str) -> None:
    print(json.dumps({"model": str(model), "error": message}))
    sys.exit(1)


def to_tf32(x: torch.Tensor) -> torch.Tensor:
    """x rounded to TF32's 10 mantissa bits, to nearest with ties away from zero (PTX's
    `cvt.rna.tf32.f32`), kept in float32."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def reference_logits(model, tokenizer, rows, device, tf32: bool) -> list[list[float]]:
    """transformers' logits for each pair alone (no padding), in float32 with TF32 matmuls
    off; with `tf32`, every operand of its linear layers and attention matmuls is first
    rounded to TF32 (accumulation stays float32, as on the tensor cores)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    linear, matmul = torch.nn.functional.linear, torch.matmul
    if tf32:
        torch.nn.functional.linear = lambda x, w, b=None: linear(to_tf32(x), to_tf32(w), b)
        torch.matmul = lambda a, b: matmul(to_tf32(a), to_tf32(b))
    logits = []
    try:
        with torch.inference_mode():
            for r in rows:
                encoding = tokenizer.encode(r["sentence1"], r["sentence2"])
                ids = torch.tensor([encoding.ids], device=device)
                types = torch.tensor([encoding.type_ids], device=device)
                logits.append(model(input_ids=ids, token_type_ids=types).logits[0].tolist())
    finally:
        torch.nn.functional.linear, torch.matmul = linear, matmul
    return logits


def max_abs_diffs(got: list[list[float]], expected: list[list[float]]) -> list[float]:
    return [abs(a - b) for g, e in zip(got, expected) for a, b in zip(g, e)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predict-bin", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--init-config", type=Path)
    parser.add_argument("--tokenizer-dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--initializer-range", type=float, default=0.2,
                        help="std of the random weights: BERT's 0.02 gives logits near 0, too "
                             "small to show a difference")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--device", default="cuda", help="for both (torch's name: cpu, cuda)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="relative to the logits")
    parser.add_argument("--timeout", type=float, default=300, help="seconds for predict")
    parser.add_argument("--tf32-reference", action="store_true",
                        help="also compare with TF32-rounded matmuls (always on for cuda)")
    args = parser.parse_args()

    if not args.model.is_dir():
        if not (args.init_config and args.tokenizer_dir):
            sys.exit(f"error: {args.model} does not exist; pass --init-config and "
                     "--tokenizer-dir to make it")
        make_model(args.model, args.init_config, args.tokenizer_dir, args.seed,
                   args.initializer_range)

    rows = split("validation")[: args.pairs]
    pairs_file = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    pairs_file.write_text("".join(
        json.dumps({"sentence1": r["sentence1"], "sentence2": r["sentence2"]}) + "\n"
        for r in rows))

    device = torch.device(args.device)
    model = BertForSequenceClassification.from_pretrained(
        args.model, attn_implementation="eager").to(device).eval()
    tokenizer = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=model.config.max_position_embeddings,
                                strategy="longest_first")
    expected = reference_logits(model, tokenizer, rows, device, tf32=False)
    # On CUDA, Burn 0.22 multiplies f32 matrices on the tensor cores in TF32 (cubek-matmul
    # rounds f32 operands to TF32 when the device has it).
    tf32_expected = (reference_logits(model, tokenizer, rows, device, tf32=True)
                     if device.type == "cuda" or args.tf32_reference else None)

    burn_device = "cuda" if args.device.startswith("cuda") else args.device
    command = [str(args.predict_bin), "--model", str(args.model), "--input", str(pairs_file),
               "--device", burn_device]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        fail(args.model, f"predict took over {args.timeout} s")
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        fail(args.model, done.stderr.strip()[-2000:] or f"exit code {done.returncode}")
    got = [json.loads(line)["logits"] for line in done.stdout.splitlines() if line.strip()]
    if len(got) != len(expected):
        fail(args.model, f"{len(got)} predictions for {len(expected)} pairs")
    diffs = max_abs_diffs(got, expected)
    largest = max(abs(v) for e in expected for v in e)
    same_label = sum(
        max(range(len(g)), key=g.__getitem__) == max(range(len(e)), key=e.__getitem__)
        for g, e in zip(got, expected))
    result = {
        "model": str(args.model),
        "device": burn_device,
        "pairs": len(rows),
        "max_abs_logit_diff": max(diffs),
        "mean_abs_logit_diff": sum(diffs) / len(diffs),
        "max_abs_logit": largest,
        "same_predicted_label": same_label,
        "tolerance": args.tolerance,
        "predict_seconds": round(seconds, 2),
    }
    allowed = args.tolerance * max(1.0, largest)
    if tf32_expected is not None:
        tf32_spread = max(max_abs_diffs(tf32_expected, expected))
        result["tf32_rounding_max_abs_logit_diff"] = tf32_spread
        result["max_abs_logit_diff_vs_tf32_reference"] = max(max_abs_diffs(got, tf32_expected))
        # burnbert may differ from transformers in fp32 by up to twice what TF32 rounding moves
        # transformers itself.
        allowed = max(allowed, 2 * tf32_spread)
    result["passed"] = max(diffs) <= allowed
    print(json.dumps(result))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
