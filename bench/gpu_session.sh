#!/usr/bin/env bash
# One short session on a lent NVIDIA GPU, in one call: is CUDA correct, and how fast is it next
# to PyTorch? Nothing is built there: `bench/gpu_pack.sh PAYLOAD` packs the programs built here
# and the data they need (see BENCHMARKS.md, "GPU").
#
#   bash bench/gpu_session.sh PAYLOAD OUT
#
# With the device tool: command `bash bench/gpu_session.sh .dev $OUT 2>&1 | tee $OUT/log`,
# carry [".dev"]. The steps run in order of importance, so a run cut short keeps the first results.
# PARTS picks the numbered parts below (default all), so that a second call can finish what a
# first did not. All of them should take about 7 minutes on an H100 (estimated from the second
# session's 411 s for the parts it had).
# Results: OUT/log (everything) and OUT/results.jsonl (one JSON object per measurement).
# Every step has its own time limit, so a slow kernel compilation costs that step only.
# DEVICE=cpu SHAPE=minilm-l6 BATCH=2 COURSE_PRESET=minilm-l6 rehearse it without a GPU.
set -u
PAYLOAD=$(realpath "$1")
OUT=$(realpath "$2")
RESULTS=$OUT/results.jsonl
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export LD_LIBRARY_PATH=$CUDA_PATH/lib64:${LD_LIBRARY_PATH:-}
export HF_HOME=$PAYLOAD/hf HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda} SHAPE=${SHAPE:-bert-base} BATCH=${BATCH:-32}
COURSE_PRESET=${COURSE_PRESET:-bert-base-uncased}
MODELS=/tmp/burnbert-models
mkdir -p "$MODELS"

# tag NAME: wraps each JSON line read as {"step": NAME, "result": LINE}. Exported, for the
# pipelines that run in `bash -c`.
tag() { sed "s/^/{\"step\": \"$1\", \"result\": /; s/\$/}/"; }
export -f tag

# step NAME SECONDS COMMAND...: runs it under a time limit, logs its wall time.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: start $(date +%T)"
    local started
    started=$(date +%s%N)
    timeout "$limit" "$@"
    local rc=$?
    echo "== $name: exit $rc after $((($(date +%s%N) - started) / 1000000)) ms"
}

# compare NAME SECONDS BIN ARGS...: bench/compare.py (PyTorch, then burnbert) into RESULTS.
compare() {
    local name=$1 limit=$2 bin=$3
    shift 3
    step "$name" "$limit" bash -o pipefail -c "$PY bench/compare.py --json --device $DEVICE --burnbert-bin $bin \
        --timeout $((limit - 40)) $* | tag '$name' | tee -a $RESULTS"
}

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
ls "$CUDA_PATH"/lib64/libnvrtc.so* 2>&1 | head -3
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

BIN=/tmp/burnbert-bin
mkdir -p "$BIN" && xz -dc "$PAYLOAD/bin/programs.tar.xz" | tar -C "$BIN" -xf - && chmod +x "$BIN"/*

# CubeCL reads cubecl.toml from the working directory up, once per process. `cubecl_toml LOG
# [profile]` logs each kernel compilation to LOG (to count them: a warm start compiles none),
# and with `profile` each kernel launch with its time on the device (bench/kernel_profile.py).
cubecl_toml() {
    cat > cubecl.toml <<TOML
[compilation.logger]
file = "$1"
level = "basic"
TOML
    if [ "${2:-}" = profile ]; then
        printf '[profiling.logger]\nfile = "%s"\nlevel = "basic"\n' "$1" >> cubecl.toml
    fi
}
trap 'rm -f cubecl.toml' EXIT
LOGS=/tmp/burnbert-logs
mkdir -p "$LOGS"
# How many kernels CubeCL compiled in a step: its log has a line for each.
compiled() { echo "== kernels compiled in $1: $(cat "$LOGS/$1.log" 2>/dev/null | wc -l)"; }

# bench_alone NAME SECONDS BIN ARGS...: burnbert's bench on its own, its JSON into RESULTS.
bench_alone() {
    local name=$1 limit=$2 bin=$3
    shift 3
    step "$name" "$limit" bash -o pipefail -c "$bin $* --device $DEVICE --json | tag '$name' \
        | tee -a $RESULTS"
}

# profile NAME ARGS...: bench's train step with every launch timed, summarised.
profile() {
    local name=$1
    local log="$LOGS/${1// /-}.log"
    shift
    cubecl_toml "$log" profile
    step "$name" 60 "$BIN/bench" "$@" --warmup 0 --steps 4 --device $DEVICE
    $PY bench/kernel_profile.py "$log" | head -45
    $PY bench/kernel_profile.py --json "$log" | tag "$name" >> "$RESULTS"
}

TRAIN="--model-shape $SHAPE --batch $BATCH --seq 128 --mode train"
# part N: whether part N runs this time (PARTS, default all of them).
part() { [[ " ${PARTS:-1 2 3 4 5 6 7 8 9} " == *" $1 "* ]]; }

# 1. Correctness: logits against transformers on the GPU, tiny fixture.
if part 1; then
    cubecl_toml "$LOGS/check-tiny.log"
    step "check tiny-bert" 60 bash -o pipefail -c "$PY bench/cuda_check.py --predict-bin $BIN/predict \
        --model assets/fixtures/tiny-bert --pairs 64 --device $DEVICE | tee -a $RESULTS"
    # The kernels checked themselves against Burn at the GPU's first use: the verdict, a line
    # per kernel (kernels/src/self_check.rs); a kernel that disagreed warned in the log above.
    echo "== kernel self-check"
    cat target/environment/*.burnbert-kernels-*.txt 2>&1
fi

# 2. The issue's target shape, bert-base train 32 × 128 in f32, next to PyTorch: first with no
#    compiled kernels on disk (cold), then again with them (warm), then profiled.
if part 2; then
    rm -rf target/environment
    cubecl_toml "$LOGS/train-f32-cold.log"
    compare "train f32 cold" 90 "$BIN/bench" $TRAIN --dtype f32
    compiled train-f32-cold
    cubecl_toml "$LOGS/train-f32-warm.log"
    bench_alone "train f32 warm" 45 "$BIN/bench" $TRAIN --dtype f32 --steps 20 --warmup 3
    compiled train-f32-warm
    du -sh target/environment
    profile "profile train f32" $TRAIN --dtype f32
fi

# 3. The same step with Burn's operations instead of burnbert's AdamW, LayerNorm and softmax
#    kernels, on the same machine: what the kernels are worth.
if part 3; then
    export BURNBERT_GPU_KERNELS=0
    bench_alone "train f32 burn ops" 60 "$BIN/bench" $TRAIN --dtype f32 --steps 20 --warmup 3
    profile "profile train f32 burn ops" $TRAIN --dtype f32
    unset BURNBERT_GPU_KERNELS
fi

# 4. The course recipe's batch size: are its steps bound by the GPU or by launching kernels?
#    (kernel_profile.py's GPU busy time against the measured step)
if part 4; then
    profile "profile train f32 batch 8" --model-shape $SHAPE --batch 8 --seq 128 --mode train --dtype f32
fi

# 5. Matrix-product routines of burn-cubecl's autotune set, chosen with BURN_CUBECL_MATMUL
#    (vendor/README.md): does one beat the default on the target step? MATMULS overrides the list.
if part 5; then
    for routine in ${MATMULS:-double-cmma ordered-8-cmma specialized-cmma simple-tma-cmma specialized-tma-cmma}; do
        export BURN_CUBECL_MATMUL=$routine
        bench_alone "matmul $routine" 25 "$BIN/bench" $TRAIN --dtype f32 --steps 10 --warmup 2
    done
    unset BURN_CUBECL_MATMUL
fi

# 6. The course recipe on MRPC, one epoch each, bert-base randomly initialised with BERT's init
#    (made, and checked on a few pairs, by cuda_check.py).
if part 6; then
    cubecl_toml "$LOGS/course.log"
    step "check bert-base" 60 bash -o pipefail -c "$PY bench/cuda_check.py --predict-bin $BIN/predict \
        --model $MODELS/bert-base-rand --init-config assets/presets/$COURSE_PRESET.json \
        --initializer-range 0.02 --seed 42 --tokenizer-dir $PAYLOAD/tokenizer --pairs 8 \
        --device $DEVICE | tee -a $RESULTS"
    step "course pytorch f32" 90 bash -o pipefail -c "$PY bench/course_mrpc.py --model $MODELS/bert-base-rand \
        --epochs 1 --device $DEVICE | tee -a $RESULTS"
    step "course burnbert f32" 150 "$BIN/train" --model "$MODELS/bert-base-rand" --num-epochs 1 \
        --device $DEVICE --output-dir /tmp/burnbert-run
    cp /tmp/burnbert-run/metrics.jsonl /tmp/burnbert-run/all_results.json "$OUT/" 2>/dev/null
    compiled course
fi

# 7. Burn's autotune (a build with `burn/autotune`, if packed): does a tuned matmul choice make
#    the step faster, and what does tuning cost cold and warm? Minimal tuning effort.
if part 7 && [ -x "$BIN/bench-autotune" ]; then
    export CUBECL_AUTOTUNE_LEVEL=minimal
    cubecl_toml "$LOGS/autotune-cold.log"
    bench_alone "autotune train f32 cold" 120 "$BIN/bench-autotune" $TRAIN --dtype f32 --steps 20 --warmup 3
    compiled autotune-cold
    cubecl_toml "$LOGS/autotune-warm.log"
    bench_alone "autotune train f32 warm" 45 "$BIN/bench-autotune" $TRAIN --dtype f32 --steps 20 --warmup 3
    compiled autotune-warm
    unset CUBECL_AUTOTUNE_LEVEL
fi

# 8. bf16 mixed precision next to PyTorch's bf16 autocast, where its time goes, and pure bf16
#    (weights and optimizer state in bf16 too).
if part 8; then
    cubecl_toml "$LOGS/train-bf16.log"
    compare "train bf16" 90 "$BIN/bench" $TRAIN --dtype bf16
    profile "profile train bf16 mixed" $TRAIN --mixed-precision bf16
    bench_alone "train bf16 pure" 45 "$BIN/bench" $TRAIN --dtype bf16 --steps 20 --warmup 3
fi

# 9. Correctness on a MiniLM-shaped model, and inference.
if part 9; then
    cubecl_toml "$LOGS/check-minilm.log"
    step "check minilm-shape" 60 bash -o pipefail -c "$PY bench/cuda_check.py --predict-bin $BIN/predict \
        --model $MODELS/minilm-rand --init-config assets/presets/minilm-l6.json \
        --tokenizer-dir $PAYLOAD/tokenizer --pairs 64 --device $DEVICE | tee -a $RESULTS"
    cubecl_toml "$LOGS/infer.log"
    compare "infer f32" 60 "$BIN/bench" --model-shape $SHAPE --batch $BATCH --seq 128 --mode infer --dtype f32
fi

tar -C "$LOGS" -cJf "$OUT/cubecl-logs.tar.xz" .
echo "== done $(date +%T)"
