#!/usr/bin/env bash
# The GPU half of the speed work in one command, for a session lent a GPU machine (H200 image:
# python3 with JAX, flax, optax, orbax and CUDA PyTorch; no network):
#   here, once:  bash bench/gpu.sh fetch    # the two wheels that image lacks, into .whl/ (ignored)
#   there:       the device tool's run: command "bash bench/gpu.sh", carry [".whl"], timeout_s 450
# Stages run in order of worth, each under its own time limit (7 minutes at most); a failed
# or cut one does not stop the rest. Everything printed is also written to $OUT/gpu.log.
# A dry run here, on the CPU: BENCH_GPU_ARGS='--steps=1 --rounds=1 --batch_sizes=16' bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == fetch ]]; then
  mkdir -p .git/info && { grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude; }
  # Pure-Python wheels: any platform tag matches the GPU machine's Python 3.12.
  exec python3 -m pip download -q --no-deps --only-binary=:all: -d .whl ml-collections tensorboardX
fi

if [[ "${1:-}" == smoke ]]; then
  # A run trained on the GPU with cuDNN layers: twice (the same seed must give the same params),
  # then sampled greedily on the GPU and on the CPU from the same checkpoint.
  d=$(mktemp -d)
  for run in a b; do
    python3 -m lstmgen.main --config=configs/tiny.py --workdir="$d/$run" --config.cudnn=True \
        --config.data.path=README.md --config.num_steps=300 --config.log_every=100 \
        --config.eval_every=300 --config.sample_every=300 2>&1 | grep -E 'validation|error' || exit 1
  done
  python3 - "$d" <<'EOF'
import sys, jax, numpy as np
from lstmgen import train
a, b = (jax.device_get(train.load_run(f'{sys.argv[1]}/{r}')[3]) for r in 'ab')
same = all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
print(f'two GPU runs (cuDNN layers), same seed: params {"bit-identical" if same else "DIFFER"}')
EOF
  gen=(python3 -m lstmgen.generate --workdir="$d/a" --prompt="Once upon a time" --length=200
       --temperature=0)
  "${gen[@]}" > "$d/gpu.txt" && JAX_PLATFORMS=cpu "${gen[@]}" > "$d/cpu.txt" || exit 1
  echo "greedy sample on the GPU:"; cat "$d/gpu.txt"
  cmp -s "$d/gpu.txt" "$d/cpu.txt" && echo "the CPU samples the same text from that checkpoint" \
      || { echo "on the CPU, from the same checkpoint:"; cat "$d/cpu.txt"; }
  exit 0
fi

OUT=${OUT:-$(mktemp -d)}
exec > >(tee "$OUT/gpu.log") 2>&1
if compgen -G '.whl/*.whl' > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/lstmgen-site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/lstmgen-site:$PWD PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU in bench.gpu.
python3 -c 'import ml_collections, tensorboardX' ||
    { echo "lstmgen's dependencies are missing: run 'bash bench/gpu.sh fetch' here and carry .whl"; exit 1; }

stage() {
  local limit=$1; shift
  echo "== $(date -u +%T) $*"
  timeout -k 10 "$limit" "$@" || echo "== FAILED or cut (exit $?): $*"
}

date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
python3 -c 'import jax, flax, optax, orbax.checkpoint; print("jax", jax.__version__, jax.devices(),
"flax", flax.__version__, "optax", optax.__version__)'
# shellcheck disable=SC2086  # BENCH_GPU_ARGS is a list of flags.
stage 180 python3 -m bench.gpu ${BENCH_GPU_ARGS:---rounds=3 --steps=30}
stage 40 python3 -m bench.cudnn --rounds=3
stage 40 python3 -m bench.cudnn --rounds=3 --dtype=bfloat16
# The GPU's fp32 dots are TF32 by default; the tests compare against fp32 references.
# (75 s on a 2-core CPU. One cut short fails a resume check: the SIGTERM stops its training.)
stage 100 env JAX_DEFAULT_MATMUL_PRECISION=highest python3 -m pytest -q -p no:cacheprovider \
    tests/test_gpu_rnn.py tests/test_model.py tests/test_faults.py::test_same_seed_gives_bit_identical_metrics \
    tests/test_train.py::test_a_second_launch_resumes_and_ends_where_one_run_would \
    tests/test_train.py::test_stateful_training_carries_state_and_resumes_exactly
stage 60 bash bench/gpu.sh smoke
echo "== $(date -u +%T) done"
