#!/usr/bin/env python3
"""burnbert against PyTorch + transformers: the same encoder shape, batch and steps, timed alike.

How to run (from the repository root, on a quiet machine: another busy process on the same
cores can make either side several times slower):

    export CARGO_TARGET_DIR=~/.cache/burnbert-target      # or leave it unset: target/
    cargo build --release --workspace --all-targets       # builds target/release/bench
    python bench/compare.py --model-shape minilm-l6 --batch 8 --seq 128 --steps 20 --warmup 3

On a GPU, build burnbert with `--features cuda` and pass `--device cuda`. Needs torch and
transformers (any recent version; measured with torch 2.15 and transformers 5.24).

What runs:
- PyTorch: AutoModelForSequenceClassification.from_config, randomly initialised from the
  preset's config.json (assets/presets/), so the family is its model_type (BERT where it has
  none, as burnbert reads it); transformers' default attention (SDPA) unless --attention eager,
  and for families without SDPA (DeBERTa-v2) what transformers defaults to (eager; the result's
  "attention" says which ran); a train step is forward + loss + backward + torch.optim.AdamW
  (lr 5e-5, weight decay 0.01 except on biases and nn.LayerNorm parameters, found by module
  type as transformers' Trainer does; fused on CUDA), an infer step a forward pass under
  torch.inference_mode() in eval mode.
- burnbert: `bench --json` with the same arguments, in its own process, after PyTorch.

Both use the same batches: random token ids other than the pad id, padded with the config's
pad_token_id (0 where it has none; attention mask 0), token type 0 where the model has token
types (type_vocab_size above 1), random labels. With --lengths fixed (the default) every step
takes one batch whose rows have the last quarter padded, and the median step time gives
samples/s. With --lengths mrpc the steps take real MRPC batches: the lengths of MRPC's 408
validation pairs as all-MiniLM-L6-v2's tokenizer cuts them
(assets/fixtures/mrpc_validation_token_ids.json), --batch consecutive pairs a step, each batch
padded to its longest row as DataCollatorWithPadding pads; the mean of the timed steps gives
samples/s. Warm-up steps are not timed; each timed step ends with a device synchronisation.
burnbert's bench runs padding-free on the CPU (its default, `--padding-free auto`).

Precision (--dtype):
- f32: both in float32.
- tf32: PyTorch float32 with TF32 matmuls (CUDA only); burnbert runs float32, as Burn has no
  TF32 switch.
- bf16: mixed precision on both sides: PyTorch's float32 weights under bf16 autocast, and
  burnbert's `--mixed-precision bf16` (float32 weights and AdamW state, the encoder computing
  in bfloat16), which needs a backend with bfloat16 (CUDA, flex).

Peak memory: on the CPU each side's peak RSS; on CUDA PyTorch's max_memory_allocated and
max_memory_reserved against the largest reservation of Burn's device allocator.
"""

import argparse
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRESETS = {
    "bert-base": REPO / "assets/presets/bert-base-uncased.json",
    "minilm-l6": REPO / "assets/presets/minilm-l6.json",
    "tiny": REPO / "assets/presets/tiny.json",
    "roberta-base": REPO / "assets/presets/roberta-base.json",
    "modernbert-base": REPO / "assets/presets/modernbert-base.json",
    "deberta-v3-base": REPO / "assets/presets/deberta-v3-base.json",
}
# transformers' modeling_roberta.py builds these, numbering positions after the pad id.
ROBERTA_FAMILY = {"roberta", "xlm-roberta", "camembert"}
LEARNING_RATE = 5e-5
WEIGHT_DECAY = 0.01


def default_bench_binary() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR")
    return (Path(target) if target else REPO / "target") / "release" / "bench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the top of bench/compare.py for what is measured and how.",
    )
    parser.add_argument("--model-shape", default="bert-base",
                        help=f"{', '.join(PRESETS)}, or the path of a config.json")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128,
                        help="positions per row (--lengths fixed), the longest row (mrpc)")
    parser.add_argument("--lengths", choices=["fixed", "mrpc"], default="fixed",
                        help="the rows' lengths: fixed, or real MRPC batches")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--mode", choices=["train", "infer"], default="train")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="train with model.gradient_checkpointing_enable(), and burnbert's "
                             "bench with --gradient-checkpointing")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["f32", "tf32", "bf16"], default="f32")
    parser.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa",
                        help="transformers' attention implementation [default: sdpa, its own "
                             "default; families without SDPA get its default, eager]")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for both (torch.set_num_threads, RAYON_NUM_THREADS)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--burnbert-bin", type=Path, default=default_bench_binary(),
                        help="burnbert's bench program [default: %(default)s]")
    parser.add_argument("--timeout", type=float,
                        help="give up on burnbert after this many seconds (GPU kernel compilation "
                             "can be slow); its result is then an error")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object with both results instead of text")
    args = parser.parse_args()
    if min(args.batch, args.seq, args.steps) < 1 or args.warmup < 0:
        parser.error("--batch, --seq and --steps must be at least 1, --warmup at least 0")
    if args.dtype == "tf32" and args.device != "cuda":
        parser.error("--dtype tf32 is a CUDA matmul mode; use it with --device cuda")
    return args


def config_path(shape: str) -> Path:
    path = PRESETS.get(shape, Path(shape))
    if not path.is_file():
        sys.exit(f"error: --model-shape {shape!r} is neither a preset "
                 f"({', '.join(PRESETS)}) nor a config.json file")
    return path


def load_config(path: Path):
    """The transformers config of `path`'s model_type; BERT where it names none, as burnbert."""
    from transformers import CONFIG_MAPPING

    fields = json.loads(path.read_text())
    model_type = fields.get("model_type", "bert")
    if model_type not in CONFIG_MAPPING:
        sys.exit(f"error: {path}: transformers knows no model_type {model_type!r}")
    return CONFIG_MAPPING[model_type].from_dict(fields)


def max_sequence_length(config) -> int:
    """max_position_embeddings, less pad_token_id + 1 where positions start after the pad id."""
    if config.model_type in ROBERTA_FAMILY:
        return config.max_position_embeddings - (config.pad_token_id or 0) - 1
    return config.max_position_embeddings


def no_decay_parameters(model) -> set[int]:
    """Biases and the parameters of nn.LayerNorm modules, as transformers' Trainer leaves out of
    weight decay (by module type, whatever the module is called); their id()s."""
    import torch

    found = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if isinstance(module, torch.nn.LayerNorm) or name == "bias":
                found.add(id(parameter))
    return found


def random_ids(rows: int, seq: int, vocab: int, pad_id: int):
    """Random token ids in [0, vocab) other than pad_id, as burnbert's bench draws them."""
    import torch

    if not 0 <= pad_id < vocab or vocab < 2:
        return torch.randint(0, vocab, (rows, seq))
    ids = torch.randint(0, vocab - 1, (rows, seq))
    return ids + (ids >= pad_id).long()


def real_tokens_per_row(seq: int) -> int:
    """All but the last quarter of the row, as burnbert's bench pads."""
    return seq - seq // 4


def row_lengths(args: argparse.Namespace) -> list[list[int]]:
    """Each batch's row lengths, as burnbert's bench makes them: one batch of --batch rows of
    --seq less a quarter, or MRPC's validation pairs (at most --seq long) --batch at a time."""
    if args.lengths == "fixed":
        return [[real_tokens_per_row(args.seq)] * args.batch]
    pairs = json.loads((REPO / "assets/fixtures/mrpc_validation_token_ids.json").read_text())
    lengths = [min(len(ids), args.seq) for ids in pairs["input_ids"]]
    return [lengths[i:i + args.batch] for i in range(0, len(lengths), args.batch)]


def run_pytorch(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("error: --device cuda, but this PyTorch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = args.dtype == "tf32"
        torch.backends.cudnn.allow_tf32 = args.dtype == "tf32"

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    config = load_config(config_path(args.model_shape))
    max_seq = max_sequence_length(config)
    if args.seq > max_seq:
        sys.exit(f"error: --seq {args.seq} exceeds the model's longest sequence, {max_seq} "
                 f"(max_position_embeddings {config.max_position_embeddings})")
    torch.manual_seed(args.seed)
    clock_started = time.perf_counter()
    # None: transformers' default, SDPA where the family has it, else eager.
    attention = "eager" if args.attention == "eager" else None
    model = AutoModelForSequenceClassification.from_config(
        config, attn_implementation=attention).to(device)
    parameters = sum(p.numel() for p in model.parameters())

    pad_id = getattr(config, "pad_token_id", None) or 0
    # Only where the model has token types: DistilBERT, ModernBERT and DeBERTa-v3 have none,
    # RoBERTa one (its default ids are zeros).
    token_types = ("token_type_ids" in inspect.signature(model.forward).parameters
                   and getattr(config, "type_vocab_size", 0) > 1)

    def make_batch(lengths: list[int]) -> tuple[dict, "torch.Tensor"]:
        rows = len(lengths)
        seq = args.seq if args.lengths == "fixed" else max(lengths)
        input_ids = random_ids(rows, seq, config.vocab_size, pad_id)
        attention_mask = torch.ones(rows, seq, dtype=torch.long)
        for row, length in enumerate(lengths):
            attention_mask[row, length:] = 0
            input_ids[row, length:] = pad_id
        batch = {
            "input_ids": input_ids.to(device),
            "attention_mask": attention_mask.to(device),
        }
        if token_types:
            batch["token_type_ids"] = torch.zeros(rows, seq, dtype=torch.long, device=device)
        labels = torch.randint(0, config.num_labels, (rows,)).to(device)
        return batch, labels

    all_lengths = row_lengths(args)
    batches = [make_batch(lengths) for lengths in all_lengths]
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    if args.mode == "train":
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        excluded = no_decay_parameters(model)
        decay = [p for p in model.parameters() if id(p) not in excluded]
        no_decay = [p for p in model.parameters() if id(p) in excluded]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": WEIGHT_DECAY},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=LEARNING_RATE,
            fused=args.device == "cuda",
        )

        def step(batch, labels):
            with autocast:
                loss = model(**batch, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()
    else:
        model.eval()

        def step(batch, _labels):
            with torch.inference_mode(), autocast:
                return model(**batch).logits

    times, first_step_done, output = [], None, None
    for index in range(args.warmup + args.steps):
        clock = time.perf_counter()
        output = step(*batches[index % len(batches)])
        sync()
        times.append(time.perf_counter() - clock)
        if first_step_done is None:
            first_step_done = time.perf_counter() - clock_started
    timed = times[args.warmup:]
    median = statistics.median(timed)
    timed_lengths = [all_lengths[i % len(all_lengths)]
                     for i in range(args.warmup, args.warmup + args.steps)]
    real = sum(sum(lengths) for lengths in timed_lengths) / args.steps
    padded = sum((args.seq if args.lengths == "fixed" else max(lengths)) * len(lengths)
                 for lengths in timed_lengths) / args.steps
    # As burnbert's bench: the median step where every step is alike, else the mean.
    seconds = median if args.lengths == "fixed" else sum(timed) / args.steps
    rows = args.batch
    result = {
        "program": "pytorch",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "model_type": config.model_type,
        "attention": model.config._attn_implementation,
        "parameters": parameters,
        "mode": args.mode,
        "dtype": args.dtype,
        "device": args.device,
        "batch": rows,
        "seq": args.seq,
        "lengths": args.lengths,
        "real_tokens_per_row": real / rows,
        "warmup": args.warmup,
        "step_seconds": timed,
        "median_step_seconds": median,
        "samples_per_second": rows / seconds,
        "tokens_per_second": padded / seconds,
        "real_tokens_per_second": real / seconds,
        "time_to_first_step_seconds": first_step_done,
        "import_seconds": clock_started - started,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "final_loss": output.item() if args.mode == "train" else None,
    }
    if args.device == "cuda":
        result["device_allocated_bytes"] = torch.cuda.max_memory_allocated()
        result["device_reserved_bytes"] = torch.cuda.max_memory_reserved()
    return result


def run_burnbert(args: argparse.Namespace) -> dict:
    binary = args.burnbert_bin
    if not binary.is_file():
        return {"error": f"{binary} not found; build it with `cargo build --release --workspace "
                         "--all-targets` or pass --burnbert-bin"}
    mixed_precision = "bf16" if args.dtype == "bf16" else "no"
    command = [
        str(binary), "--model-shape", args.model_shape, "--batch", str(args.batch),
        "--seq", str(args.seq), "--lengths", args.lengths, "--steps", str(args.steps),
        "--warmup", str(args.warmup),
        "--mode", args.mode, "--mixed-precision", mixed_precision, "--device", args.device,
        *(["--gradient-checkpointing"] if args.gradient_checkpointing else []),
        "--seed", str(args.seed), "--json",
    ]
    env = dict(os.environ)
    if args.threads:
        env["RAYON_NUM_THREADS"] = str(args.threads)
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO,
                              timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within --timeout {args.timeout:g} s",
                "command": " ".join(command)}
    if done.returncode != 0:
        return {"error": done.stderr.strip() or f"exit code {done.returncode}",
                "command": " ".join(command)}
    return json.loads(done.stdout)


def describe(result: dict) -> str:
    if "error" in result:
        return f"failed: {result['error']}"
    line = (f"median step {1000 * result['median_step_seconds']:.1f} ms, "
            f"{result['samples_per_second']:.1f} samples/s, "
            f"{result['tokens_per_second']:.0f} tokens/s "
            f"({result['real_tokens_per_second']:.0f} real), "
            f"first step after {result['time_to_first_step_seconds']:.2f} s, "
            f"peak RSS {result['peak_rss_bytes'] / 2**20:.0f} MiB")
    if result.get("device_allocated_bytes") is not None:
        line += f", GPU allocated {result['device_allocated_bytes'] / 2**30:.2f} GiB"
    if result.get("device_reserved_bytes") is not None:
        line += f", GPU reserved {result['device_reserved_bytes'] / 2**30:.2f} GiB"
    if result.get("final_loss") is not None:
        line += f", last loss {result['final_loss']:.4f}"
    return line


def main() -> None:
    args = parse_args()
    config_path(args.model_shape)  # fail before anything runs
    # PyTorch first, then burnbert in its own process: never both at once.
    pytorch = run_pytorch(args)
    burnbert = run_burnbert(args)
    ratio = None
    if "error" not in burnbert:
        ratio = burnbert["samples_per_second"] / pytorch["samples_per_second"]
    if args.json:
        print(json.dumps({"pytorch": pytorch, "burnbert": burnbert,
                          "ratio_burnbert_over_pytorch": ratio}))
        return
    print(f"{args.model_shape} {args.mode} {args.dtype} on {args.device}: batch {args.batch} × "
          f"seq {args.seq}, {args.lengths} lengths "
          f"({pytorch['real_tokens_per_row']:.1f} real tokens per row), "
          f"{args.steps} steps after {args.warmup} warm-up, {pytorch['threads']} torch threads, "
          f"{pytorch['model_type']} with {pytorch['attention']} attention")
    print(f"  pytorch  (torch {pytorch['torch']}, transformers {pytorch['transformers']}): "
          f"{describe(pytorch)}")
    print(f"  burnbert ({burnbert.get('device', args.burnbert_bin)}): {describe(burnbert)}")
    if ratio is not None:
        print(f"  burnbert / pytorch samples/s: {ratio:.2f}")


if __name__ == "__main__":
    main()
