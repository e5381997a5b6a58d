#!/usr/bin/env python3
"""Where a GPU step's time goes, from CubeCL's profiling log.

CubeCL times every kernel launch with device events when its profiling logger is on:

    # cubecl.toml in the working directory
    [profiling.logger]
    file = "/tmp/profile.log"
    level = "basic"

and writes one line per launch, `| 1.234ms    | kernel name`. Run `bench --warmup 0 --steps 4`
under it, then

    python3 bench/kernel_profile.py /tmp/profile.log [--json]

A step is found as the longest tail of launches that repeats right before itself (steps 2 to 4
launch the same kernels; step 1 also creates the optimizer state). Prints the step's kernel
count, the sum of its kernel times (the GPU busy time, to hold against the measured wall time of
a step: the rest is the GPU waiting for the host), and that time by kind of kernel and by kernel.
"""

import argparse
import json
import re
import sys
from collections import defaultdict

LINE = re.compile(r"^\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|\s*(\S.*?)\s*$")
UNIT_SECONDS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
# Checked in order; the first keyword found in a kernel's name gives its kind.
KINDS = [
    ("optimizer", ("adamw",)),
    ("burnbert's layer norm, add & norm, softmax, gelu, heads",
     ("layernorm", "addnorm", "maskedsoftmax", "gelu", "splitheads", "mergeheads")),
    ("matmul", ("matmul", "gemm", "cmma", "mma")),
    ("random", ("random", "prng", "bernoulli", "uniform", "normal")),
    ("reduce", ("reduce", "sum", "mean", "max", "argmax", "softmax")),
    ("copy / layout", ("copy", "into_contiguous", "gather", "scatter", "select", "slice",
                       "cat", "permute", "transpose", "expand", "repeat")),
    ("element-wise", ("binop", "binary", "unary", "elemwise", "scalar", "mask", "cast", "clamp",
                      "powf", "erf", "exp", "log", "sqrt", "tanh", "gelu", "compare",
                      "where", "fill")),
]


def kind_of(name: str) -> str:
    lower = name.lower()
    for kind, keywords in KINDS:
        if any(k in lower for k in keywords):
            return kind
    return "other"


def parse(path: str) -> list[tuple[str, float]]:
    launches = []
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            for line in log:
                match = LINE.match(line)
                if match:
                    value, unit, name = match.groups()
                    launches.append((name, float(value) * UNIT_SECONDS[unit]))
    except FileNotFoundError:
        sys.exit(f"kernel_profile: {path} not found: was CubeCL's profiling logger on "
                 "(see the top of this file), and did a CubeCL backend run?")
    return launches


def last_step(launches: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The last `period` launches, for the longest period with which the log's tail repeats.

    The tail may end inside a step (the logger writes behind the device), but what it holds of
    that step still repeats the step before. Layers repeat too, with a shorter period: the
    longest one that holds is the step."""
    names = [name for name, _ in launches]
    for period in range(len(names) // 2, 0, -1):
        run = 0
        while run < period and names[-1 - run] == names[-1 - run - period]:
            run += 1
        if run == period:
            return launches[-period:]
    sys.exit("kernel_profile: no repeating step found (run bench with --warmup 0 --steps 4)")


def summarise(step: list[tuple[str, float]]) -> dict:
    by_kind = defaultdict(lambda: [0, 0.0])
    by_name = defaultdict(lambda: [0, 0.0])
    for name, seconds in step:
        for table, key in ((by_kind, kind_of(name)), (by_name, name)):
            table[key][0] += 1
            table[key][1] += seconds
    total = sum(seconds for _, seconds in step)

    def rows(table, limit=None):
        ordered = sorted(table.items(), key=lambda item: -item[1][1])[:limit]
        return [{"name": key, "launches": n, "ms": round(s * 1e3, 3),
                 "share": round(s / total, 4)} for key, (n, s) in ordered]

    return {"launches": len(step), "gpu_busy_ms": round(total * 1e3, 3),
            "by_kind": rows(by_kind), "top_kernels": rows(by_name, 25)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    args = parser.parse_args()
    launches = parse(args.log)
    if not launches:
        sys.exit(f"kernel_profile: no timed launches in {args.log}")
    summary = summarise(last_step(launches))
    summary["launches_in_log"] = len(launches)
    if args.json:
        print(json.dumps(summary))
        return
    print(f"one step: {summary['launches']} kernel launches, "
          f"{summary['gpu_busy_ms']:.1f} ms of GPU time")
    for title in ("by_kind", "top_kernels"):
        print(f"\n{title}:")
        for row in summary[title]:
            print(f"  {row['ms']:9.3f} ms {100 * row['share']:5.1f} % "
                  f"{row['launches']:6d}×  {row['name']}")


if __name__ == "__main__":
    main()
