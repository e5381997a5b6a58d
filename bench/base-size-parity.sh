#!/usr/bin/env bash
# Every family once at its base checkpoint's shape against transformers: random weights at the
# real sizes (no real weights of these families can be fetched here), one forward pass in f32,
# hidden states, logits and loss to 1e-4 (tests/integration/families.rs,
# every_family_matches_transformers_at_base_size). The models take about 4 GB, so they are
# written outside the repository, to DEST (default /tmp/burnbert-base-size), and not committed.
#
#   bash bench/base-size-parity.sh [DEST]
#
# Needs the fixture script's Python environment (assets/fixtures/make_fixtures.py, header), and
# reuses the build of `bash scripts/test` (its target directory, features and CUDA toolkit).
set -euo pipefail
cd "$(dirname "$0")/.."
export BURNBERT_BASE_SIZE_DIR=${1:-/tmp/burnbert-base-size}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burnbert-target}"
CUDA_TOOLKIT="${BURNBERT_CUDA_TOOLKIT:-$HOME/.cache/burnbert-cuda-13.0}"
export BURNBERT_CUDA_TOOLKIT="$CUDA_TOOLKIT"
export LD_LIBRARY_PATH="$CUDA_TOOLKIT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PYTHON=${BURNBERT_FIXTURES_PYTHON:-$HOME/.cache/burnbert-fixtures-venv/bin/python}
(cd assets/fixtures && "$PYTHON" make_fixtures.py base-size)
cargo test --release --workspace --features ndarray,wgpu,cuda,mpi -- \
    --ignored --exact families::every_family_matches_transformers_at_base_size
