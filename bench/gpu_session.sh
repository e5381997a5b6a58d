#!/usr/bin/env bash
# One short session on a lent NVIDIA GPU, in one call: is CUDA correct, and how fast is it next
# to PyTorch? Nothing is built there: `bench/gpu_pack.sh PAYLOAD` packs the programs built here
# and the data they need (see BENCHMARKS.md, "GPU").
#
#   bash bench/gpu_session.sh PAYLOAD OUT
#
# With the device tool: command `bash bench/gpu_session.sh .dev $OUT 2>&1 | tee $OUT/log`,
# carry [".dev"]. The steps run in order of importance, so a run cut short keeps the first results.
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
        --timeout $((limit - 40)) $* | sed 's/^/{\"step\": \"$name\", \"result\": /; s/\$/}/' \
        | tee -a $RESULTS"
}

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
ls "$CUDA_PATH"/lib64/libnvrtc.so* 2>&1 | head -3
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

for archive in "$PAYLOAD"/bin/*.xz; do
    xz -dkf "$archive" && chmod +x "${archive%.xz}"
done
BIN=$PAYLOAD/bin

# CubeCL reads cubecl.toml from the working directory up: log each kernel compilation, to
# count them.
cat > cubecl.toml <<TOML
[compilation.logger]
file = "/tmp/cubecl-compilation.log"
level = "basic"
TOML
trap 'rm -f cubecl.toml' EXIT

# 1. Correctness: logits against transformers on the GPU, tiny fixture and a MiniLM-shaped model.
step "check tiny-bert" 60 bash -o pipefail -c "$PY bench/cuda_check.py --predict-bin $BIN/predict \
    --model assets/fixtures/tiny-bert --pairs 64 --device $DEVICE | tee -a $RESULTS"
step "check minilm-shape" 60 bash -o pipefail -c "$PY bench/cuda_check.py --predict-bin $BIN/predict \
    --model $MODELS/minilm-rand --init-config assets/presets/minilm-l6.json \
    --tokenizer-dir $PAYLOAD/tokenizer --pairs 64 --device $DEVICE | tee -a $RESULTS"

# 2. The issue's target shape: bert-base, train, batch 32 × 128, in each precision.
for dtype in f32 tf32 bf16; do
    compare "train $dtype" 90 "$BIN/bench" --model-shape $SHAPE --batch $BATCH --seq 128 --mode train --dtype $dtype
done

# 3. The course recipe on MRPC, one epoch each, bert-base randomly initialised with BERT's init
#    (made, and checked on a few pairs, by cuda_check.py).
step "check bert-base" 60 bash -o pipefail -c "$PY bench/cuda_check.py --predict-bin $BIN/predict \
    --model $MODELS/bert-base-rand --init-config assets/presets/$COURSE_PRESET.json \
    --initializer-range 0.02 --seed 42 --tokenizer-dir $PAYLOAD/tokenizer --pairs 8 \
    --device $DEVICE | tee -a $RESULTS"
step "course pytorch f32" 90 bash -o pipefail -c "$PY bench/course_mrpc.py --model $MODELS/bert-base-rand \
    --epochs 1 --device $DEVICE | tee -a $RESULTS"
step "course burnbert f32" 150 "$BIN/train" --model "$MODELS/bert-base-rand" --num-epochs 1 \
    --device $DEVICE --output-dir /tmp/burnbert-run
cp /tmp/burnbert-run/metrics.jsonl /tmp/burnbert-run/all_results.json "$OUT/" 2>/dev/null

# 4. Inference, bert-base 32 × 128.
for dtype in f32 bf16; do
    compare "infer $dtype" 60 "$BIN/bench" --model-shape $SHAPE --batch $BATCH --seq 128 --mode infer --dtype $dtype
done

if [ -f /tmp/cubecl-compilation.log ]; then
    wc -l /tmp/cubecl-compilation.log
    xz -c /tmp/cubecl-compilation.log > "$OUT/cubecl-compilation.log.xz"
fi
echo "== done $(date +%T)"
