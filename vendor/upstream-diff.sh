#!/usr/bin/env bash
# The whole patch of a vendored crate against the published one, file by file: where a port to
# the next Burn starts. Each copy's first commit holds the crate as crates.io published it
# ("vendor: <crate> <version>, unchanged"); everything since is burnbert's.
#
#   bash vendor/upstream-diff.sh              # burn-flex and burn-cubecl
#   bash vendor/upstream-diff.sh burn-flex    # one of them
#   bash vendor/upstream-diff.sh --stat       # the files and how much changed in each
set -euo pipefail
cd "$(dirname "$0")/.."
stat=()
crates=()
for arg in "$@"; do
    case "$arg" in
        --stat) stat=(--stat) ;;
        *) crates+=("$arg") ;;
    esac
done
[ ${#crates[@]} -gt 0 ] || crates=(burn-flex burn-cubecl)
for crate in "${crates[@]}"; do
    dir="vendor/$crate"
    [ -d "$dir" ] || { echo "upstream-diff: no $dir" >&2; exit 2; }
    pristine=$(git log --diff-filter=A --format=%H -- "$dir/Cargo.toml" | tail -1)
    [ -n "$pristine" ] || { echo "upstream-diff: no commit adds $dir/Cargo.toml" >&2; exit 2; }
    echo "# $crate: published sources at $(git log -1 --format='%h (%s)' "$pristine")"
    # The working tree against the pristine commit, so that uncommitted changes show too.
    git diff "${stat[@]}" "$pristine" -- "$dir"
done
