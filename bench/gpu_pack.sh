#!/usr/bin/env bash
# Packs what bench/gpu_session.sh needs on a GPU machine that can build nothing and reach
# nothing: the programs built here (stripped, xz-compressed, about 42 MB) and the MRPC split
# and tokenizer files from the offline Hugging Face cache.
#
#   bash scripts/test                # builds the programs with --features ndarray,wgpu,cuda
#   bash bench/gpu_pack.sh .dev      # a folder that git ignores, carried to the GPU machine
set -euo pipefail
DEST=$1
RELEASE=${CARGO_TARGET_DIR:-$HOME/.cache/burnbert-target}/release
HF=${HF_HOME:-$HOME/.cache/burnbert-hf}/hub
rm -rf "$DEST" && mkdir -p "$DEST/bin" "$DEST/tokenizer" "$DEST/hf/hub"
for program in bench predict train; do
    strip -o "$DEST/bin/$program" "$RELEASE/$program"
    xz -T0 -9 "$DEST/bin/$program"
done
cp "$HF"/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*/{tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$DEST/tokenizer/"
cp -rL "$HF/datasets--nyu-mll--glue" "$DEST/hf/hub/"
du -sh "$DEST"
