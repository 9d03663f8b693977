#!/usr/bin/env bash
# Trains lstmgen on a Cloud TPU VM slice: creates it if needed, installs lstmgen on every worker,
# runs the same command on all of them (jax.distributed auto-detects the slice). Safe to rerun:
# an existing slice is reused, the install is idempotent, and training resumes from the workdir.
#
#   launch/tpu_vm.sh NAME ZONE ACCELERATOR_TYPE WORKDIR [lstmgen.main arguments...]
#   launch/tpu_vm.sh lstm-v4 us-central2-b v4-8 gs://my-bucket/runs/grimm --config=configs/grimm.py
#
# WORKDIR may be a gs:// path (Orbax writes checkpoints there; every worker sees the same run) or
# a local path (then only worker 0's disk holds metrics and samples). Environment:
#   RUNTIME_VERSION (default tpu-ubuntu2204-base), REPO (default: this checkout's origin URL),
#   REF (default: this checkout's commit), PROJECT (default: gcloud's configured project).
set -euo pipefail

if [[ $# -lt 4 ]]; then
  echo "usage: $0 NAME ZONE ACCELERATOR_TYPE WORKDIR [lstmgen.main arguments...]" >&2
  exit 2
fi
name=$1 zone=$2 accelerator=$3 workdir=$4
shift 4
runtime=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
repo=${REPO:-$(git config --get remote.origin.url)}
ref=${REF:-$(git rev-parse HEAD)}
project_flag=()
[[ -n "${PROJECT:-}" ]] && project_flag=(--project="$PROJECT")

if ! gcloud compute tpus tpu-vm describe "$name" --zone="$zone" "${project_flag[@]}" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$name" --zone="$zone" --accelerator-type="$accelerator" \
    --version="$runtime" "${project_flag[@]}"
fi

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all "${project_flag[@]}" --command="$1"
}

# Install (or update to $ref) on every worker.
on_all_workers "set -e
  [ -d lstmgen ] || git clone '$repo' lstmgen
  cd lstmgen && git fetch -q origin && git checkout -q '$ref'
  python3 -m pip install -q -U 'jax[tpu]' -e ."

# The same command on every worker; quoting keeps user arguments intact.
args=$(printf ' %q' "$@")
on_all_workers "cd lstmgen && python3 -m lstmgen.main --distributed --workdir='$workdir'$args"
