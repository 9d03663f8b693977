#!/usr/bin/env bash
# Runs lstmgen on NUM_PROCESSES processes on this machine, each with DEVICES_PER_PROCESS CPU devices,
# joined by jax.distributed on 127.0.0.1 (gloo collectives): a pod slice in miniature.
#
#   launch/local.sh NUM_PROCESSES DEVICES_PER_PROCESS --config=configs/tiny.py --workdir=DIR ...
#
# Waits for all processes; if any fails, stops the others and exits with its status. Stopped itself
# (SIGTERM, Ctrl-C), it passes the SIGTERM on, so every process finishes its step and saves, and
# waits for them (up to $LSTMGEN_STOP_GRACE seconds, default 120) before killing any. Leaves no
# process behind. $PYTHON is the interpreter (default: python).
set -uo pipefail

if [[ $# -lt 2 || ! $1 =~ ^[1-9][0-9]*$ || ! $2 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS <lstmgen.main arguments>" >&2
  exit 2
fi
num_processes=$1
devices=$2
shift 2
python=${PYTHON:-python}
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

pids=()
running=()  # Launched and not yet waited for.
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  sleep 1
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  wait 2>/dev/null
}
stop() {
  for pid in "${running[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  local ticks=$((${LSTMGEN_STOP_GRACE:-120} * 10))
  while ((ticks-- > 0)) && kill -0 "${running[@]}" 2>/dev/null; do sleep 0.1; done
  local status=0
  for pid in "${running[@]}"; do
    kill -KILL "$pid" 2>/dev/null && status=137  # Still running after the grace period.
    wait "$pid"
    rc=$?
    ((status == 0)) && status=$rc
  done
  exit $status
}
trap stop INT TERM

for ((i = 0; i < num_processes; i++)); do
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices ${XLA_FLAGS:-}" JAX_PLATFORMS=cpu \
    "$python" -m lstmgen.main --coordinator_address="127.0.0.1:$port" \
    --num_processes="$num_processes" --process_id="$i" "$@" &
  pids+=($!)
  running+=($!)
done

status=0
while [[ ${#running[@]} -gt 0 ]]; do
  wait -n -p finished "${running[@]}"
  rc=$?
  running=("${running[@]/$finished}")
  running=(${running[@]})  # Drop the emptied entry.
  if [[ $rc -ne 0 ]]; then
    status=$rc
    echo "launch/local.sh: process $finished exited with status $rc; stopping the others" >&2
    cleanup
    break
  fi
done
exit $status
