#!/usr/bin/env bash
# The queue benchmark on one Redis node and on a Redis Cluster of three primaries, side by side:
# starts a private redis-server and a private 3-primary cluster on free ports (no persistence,
# same settings), builds the release binaries, then runs `orderly-bench queue` in turn on the
# node, on the cluster, and on the cluster with the queue split into PARTITIONS partitions
# (default 6, `--partitions`), ROUNDS times (default 3), and stops the servers. Extra arguments
# go to `orderly-bench queue` (defaults: --jobs 20000 --producers 50 --concurrency 50
# --processes 1). Each run prints its JSON result and the CPU seconds each Redis server spent
# on it (how the work spreads over the nodes); docs/performance.md has the figures and what
# they mean.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_command redis-server redis-server
ensure_command redis-cli redis-tools

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orderly-target}"
source scripts/build-release.sh
build_release
bench="$CARGO_TARGET_DIR/release/orderly-bench"

rounds="${ROUNDS:-3}"
partitions="${PARTITIONS:-6}"
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--jobs 20000 --producers 50 --concurrency 50 --processes 1)
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_redis <dir> <port> [extra args...]: a server that keeps nothing on disk.
start_redis() {
  local dir="$1" port="$2"
  shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" "$@" \
    >"$dir/log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 200); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "redis-server did not start on $port" >&2
  exit 1
}

single_port="$(free_port)"
start_redis "$work/single" "$single_port"
server_pids=("${pids[-1]}")

cluster_ports=()
for n in 1 2 3; do
  port="$(free_port)"
  start_redis "$work/node-$n" "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-port "$(free_port)"
  cluster_ports+=("$port")
  server_pids+=("${pids[-1]}")
done
redis-cli --cluster create "${cluster_ports[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
  >"$work/create.log"
for _ in $(seq 200); do
  redis-cli -p "${cluster_ports[0]}" cluster info | grep -q cluster_state:ok && break
  sleep 0.1
done
seeds="$(printf 'redis://127.0.0.1:%s,' "${cluster_ports[@]}")"
seeds="${seeds%,}"

# CPU seconds each server (the node, then the cluster's three) has used so far.
cpu_seconds() {
  local ticks
  ticks="$(getconf CLK_TCK)"
  for pid in "${server_pids[@]}"; do
    awk -v t="$ticks" '{printf "%.2f ", ($14 + $15) / t}' "/proc/$pid/stat"
  done
}

# measured <label> <command...>: runs the bench, then prints its JSON line and each server's CPU
# seconds during the run.
measured() {
  local label="$1"
  shift
  local before after
  before=($(cpu_seconds))
  "$@" | tail -1
  after=($(cpu_seconds))
  printf '%s: redis CPU s (node | cluster nodes):' "$label"
  for i in "${!before[@]}"; do
    awk -v a="${after[$i]}" -v b="${before[$i]}" 'BEGIN {printf " %.2f", a - b}'
    [ "$i" = 0 ] && printf ' |'
  done
  printf '\n'
}

for round in $(seq "$rounds"); do
  echo "== round $round: one node" >&2
  measured "one node" env REDIS_MODE=single REDIS_URL="redis://127.0.0.1:$single_port" \
    "$bench" queue "${args[@]}"
  echo "== round $round: cluster of three primaries" >&2
  measured "cluster" env REDIS_MODE=cluster REDIS_URL="$seeds" "$bench" queue "${args[@]}"
  echo "== round $round: cluster, the queue in $partitions partitions" >&2
  measured "cluster, $partitions partitions" env REDIS_MODE=cluster REDIS_URL="$seeds" \
    "$bench" queue "${args[@]}" --partitions "$partitions"
done
