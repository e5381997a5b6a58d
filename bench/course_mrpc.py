#!/usr/bin/env python3
"""The Hugging Face course's "full training" loop in PyTorch, on MRPC, timed: the reference
that `train` is compared with (accuracy, F1 and wall time per epoch).

    HF_HOME=~/.cache/burnbert-hf HF_HUB_OFFLINE=1 python bench/course_mrpc.py \\
        --model sentence-transformers/all-MiniLM-L6-v2 --epochs 3 --seed 42

It follows ../shared/reference/hf-course-full-training.md: tokenizer(s1, s2, truncation=True),
DataCollatorWithPadding, shuffled batches of 8, torch.optim.AdamW(lr=5e-5) with its default
weight decay (0.01, on every parameter), get_scheduler("linear") without warmup, evaluation
after each epoch. Two differences, neither changing the recipe: the splits are read from the
cached parquet files with pyarrow instead of 🤗 Datasets, and accuracy/F1 come from
scikit-learn instead of 🤗 Evaluate (the same definitions). Needs torch, transformers,
pyarrow and scikit-learn.

`--evaluate-only` skips training and times one pass over the validation split, the work of
burnbert's `eval` (compare `eval --batch-size` with `--eval-batch-size`, 8 as in the course by
default).

On a GPU: `--device cuda` moves the model and each batch there (as `accelerator.prepare` does
in the course), and `--dtype tf32|bf16` turns on TF32 matmuls or bf16 autocast.
"""

import argparse
import json
import time

import pyarrow.parquet as pq
import torch
from huggingface_hub import hf_hub_download
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    get_scheduler,
)


def split(name: str) -> list[dict]:
    path = hf_hub_download(
        "nyu-mll/glue", f"mrpc/{name}-00000-of-00001.parquet", repo_type="dataset"
    )
    return pq.read_table(path).to_pylist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bert-base-uncased")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["f32", "tf32", "bf16"], default="f32")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--eval-batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = args.dtype == "tf32"
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def encode(rows: list[dict]) -> list[dict]:
        return [
            {**tokenizer(r["sentence1"], r["sentence2"], truncation=True), "labels": r["label"]}
            for r in rows
        ]

    collator = DataCollatorWithPadding(tokenizer=tokenizer)
    train = DataLoader(encode(split("train")), shuffle=True, batch_size=8, collate_fn=collator)
    validation = DataLoader(
        encode(split("validation")), batch_size=args.eval_batch_size, collate_fn=collator
    )

    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    steps = args.epochs * len(train)
    scheduler = get_scheduler("linear", optimizer=optimizer, num_warmup_steps=0, num_training_steps=steps)

    def evaluate() -> dict:
        model.eval()
        predicted, references = [], []
        with torch.no_grad():
            for batch in validation:
                with autocast:
                    predicted += model(**batch.to(device)).logits.argmax(-1).tolist()
                references += batch["labels"].tolist()
        return {
            "accuracy": round(accuracy_score(references, predicted), 4),
            "f1": round(f1_score(references, predicted), 4),
        }

    started = time.perf_counter()
    if args.evaluate_only:
        scores = evaluate()
        seconds = round(time.perf_counter() - started, 2)
        print(json.dumps({"examples": len(validation.dataset), "seconds": seconds, **scores}))
        return
    for epoch in range(args.epochs):
        epoch_started = time.perf_counter()
        model.train()
        for batch in train:
            with autocast:
                loss = model(**batch.to(device)).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        train_seconds = time.perf_counter() - epoch_started
        scores = evaluate()
        print(
            json.dumps(
                {
                    "epoch": epoch + 1,
                    **scores,
                    "train_seconds": round(train_seconds, 1),
                    "epoch_seconds": round(time.perf_counter() - epoch_started, 1),
                }
            ),
            flush=True,
        )
    print(json.dumps({"total_seconds": round(time.perf_counter() - started, 1), "steps": steps}))


if __name__ == "__main__":
    main()
