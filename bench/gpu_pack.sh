#!/usr/bin/env bash
# Packs what bench/gpu_session.sh needs on a GPU machine that can build nothing and reach
# nothing: the programs built here (stripped, in one xz archive) and the MRPC split
# and tokenizer files from the offline Hugging Face cache.
#
#   bash scripts/test                # builds the programs with --features ndarray,wgpu,cuda
#   bash bench/gpu_pack.sh .dev      # a folder that git ignores, carried to the GPU machine
#
# AUTOTUNE_BENCH=PATH also packs PATH as `bench-autotune`: bench built with Burn's autotune,
#   cargo build --release --bin bench --features cuda,burn/autotune
# (copy it away before the next build overwrites it), which gpu_session.sh then measures.
set -euo pipefail
DEST=$1
RELEASE=${CARGO_TARGET_DIR:-$HOME/.cache/burnbert-target}/release
HF=${HF_HOME:-$HOME/.cache/burnbert-hf}/hub
rm -rf "$DEST" && mkdir -p "$DEST/bin" "$DEST/tokenizer" "$DEST/hf/hub"
STAGE=$(mktemp -d)
for program in bench predict train; do
    strip -o "$STAGE/$program" "$RELEASE/$program"
done
if [ -n "${AUTOTUNE_BENCH:-}" ]; then
    strip -o "$STAGE/bench-autotune" "$AUTOTUNE_BENCH"
fi
# One archive with a dictionary larger than any program: they share most of their code (Burn),
# which xz then stores once. About 30 MB for three programs instead of 51 MB one by one.
tar -C "$STAGE" -cf - . | xz -T1 --lzma2=preset=9,dict=384MiB > "$DEST/bin/programs.tar.xz"
rm -rf "$STAGE"
cp "$HF"/models--sentence-transformers--all-MiniLM-L6-v2/snapshots/*/{tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$DEST/tokenizer/"
cp -rL "$HF/datasets--nyu-mll--glue" "$DEST/hf/hub/"
du -sh "$DEST"
