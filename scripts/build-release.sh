#!/usr/bin/env bash
# Builds the release binaries every script runs (api, worker, bench) in one cargo invocation, so
# `scripts/run.sh` and `bench/run.sh` resolve the same features and share one build: whichever
# runs first builds, the other finds it done. Sourced; uses CARGO_TARGET_DIR.
build_release() {
  local target="${CARGO_TARGET_DIR:-$HOME/.cache/orderly-target}"
  if [ ! -x "$target/release/orderly-api" ]; then
    echo "building the release binaries into $target: a first build compiles about 400 crates," >&2
    echo "roughly 15 minutes on 2 cores; later builds reuse it and take seconds to minutes" >&2
  else
    echo "building the release binaries (incremental)" >&2
  fi
  cargo build --release --locked --bin orderly-api --bin orderly-worker --bin orderly-bench
}
