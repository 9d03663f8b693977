"""lstmgen against its peers, side by side in one process: python -m bench.run [--only=train,...]

Needs the [bench] extra (PyTorch 2.13 CPU). Every figure is measured in this run, on this machine,
and printed next to the peer's with the ratio; machines are shared and noisy, so compare ratios.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench import torch_peer
from bench.timing import interleaved, print_round_ratios, row
from configs import default
from lstmgen import hostmem
from lstmgen import model as model_lib
from lstmgen import replicas, sample, train

VOCAB = 80  # About Grimm's (78) and the tutorial's (~80) vocabulary.


def reference_config(**overrides):
  config = default.get_config()
  for name, value in overrides.items():
    config[name] = value
  return config


def forward_flops_per_char(config, vocab=VOCAB) -> float:
  m, four_h = config.model, 4 * config.model.hidden_size
  flops = 2 * m.embed_size * four_h + 2 * m.hidden_size * four_h
  flops += (m.num_layers - 1) * 2 * (2 * m.hidden_size * four_h)
  return flops + 2 * m.hidden_size * vocab


# The recurrence's step [B, H] @ [H, 4H], and a whole sequence's input projection [T * B, H] @ [H, 4H].
PEAK_SHAPES = ((128, 256, 1024), (12800, 256, 1024))


def jax_matmul_gflops(dtype, m=128, k=256, n=1024) -> float:
  dtype = jnp.dtype(dtype)
  a = jnp.ones((m, k), dtype)
  b = jnp.ones((k, n), dtype)
  f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  f(a, b).block_until_ready()
  reps, start = 0, time.perf_counter()
  while time.perf_counter() - start < 0.5:
    f(a, b).block_until_ready()
    reps += 1
  return 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9


# ----------------------------------------------------------------------------- a. training


def jax_train_runner(config):
  """lstmgen's real pmapped update step as a function of `steps` -> seconds, and its compile time.

  The first call (compile) is timed separately, then two warm-up steps run.
  """
  model = model_lib.from_config(config, VOCAB)
  tx = train.make_optimizer(config)
  root = jax.random.key(0)
  devices = jax.local_devices()
  state = replicas.replicate(train.init_state(model, tx, root, config))
  step = train.make_p_train_step(model, tx, root, config)
  windows = np.random.default_rng(0).integers(0, VOCAB, (len(devices), config.batch_size //
                                                         len(devices), config.seq_len + 1))
  ids = np.arange(config.batch_size, dtype=np.int32).reshape(len(devices), -1)

  def run(steps: int) -> float:
    nonlocal state
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics, _ = step(state, windows, ids)
    jax.block_until_ready(metrics)
    return time.perf_counter() - start

  compile_s = run(1)
  run(2)
  return run, compile_s


def bench_train(steps: int, rounds: int):
  print(f'a. training throughput (2xLSTM-256, batch 128, seq 100, Adam, clip 5, dropout 0.5); '
        f'{rounds} rounds of {steps} steps, lstmgen and torch alternating')
  # The peak is the best of torch.mm and jnp.dot at the recurrence's step shape and at a whole
  # sequence's projection (T * B rows), which runs faster: either library's kernel can be the
  # weaker one on a given CPU (on an AVX2-only EPYC torch's reached 25 GFLOP/s, below what
  # either framework's whole training step achieves).
  peak = {d: max(f(d, *shape) for shape in PEAK_SHAPES
                 for f in (torch_peer.matmul_peak_gflops, jax_matmul_gflops))
          for d in ('float32', 'bfloat16')}
  for dtype in ('float32', 'bfloat16'):
    config = reference_config(dtype=dtype)
    chars = config.batch_size * config.seq_len * steps
    ours_run, compile_s = jax_train_runner(config)
    label = 'fp32' if dtype == 'float32' else 'bf16 (torch: autocast)'
    try:
      peer_run = torch_peer.torch_train_runner(VOCAB, bf16=dtype == 'bfloat16')
    except RuntimeError as e:  # oneDNN has no bf16 LSTM on CPUs without AVX-512 BF16 or AMX.
      ours = np.median([chars / ours_run(steps) for _ in range(rounds)])
      print(f'  train {label:<28} lstmgen {ours:>12,.1f} chars/s  torch cannot '
            f'run it on this CPU: {str(e).splitlines()[0]}', flush=True)
      continue
    # Interleaved rounds: a shared machine's speed drifts by 10-20% within a minute, and both
    # frameworks then see the same drift.
    ours, peer = interleaved([lambda: chars / ours_run(steps), lambda: chars / peer_run(steps)],
                             rounds)
    row(f'train {label}', np.median(ours), np.median(peer), 'chars/s', 'torch')
    print_round_ratios(ours, peer)
    flops = 3 * forward_flops_per_char(config)
    for who, cps in (('lstmgen', np.median(ours)), ('torch', np.median(peer))):
      achieved = cps * flops / 1e9
      print(f'    {who}: {achieved:,.0f} GFLOP/s of model FLOPs = {achieved / peak[dtype]:.0%} of the measured '
            f'{dtype} matmul peak ({peak[dtype]:,.0f} GFLOP/s, best of torch and jax at '
            f'{" and ".join("x".join(map(str, shape)) for shape in PEAK_SHAPES)})')
    if dtype == 'float32':
      print_first_step(compile_s)


def bench_kernels(steps: int, rounds: int):
  """lstmgen's step with and without its fused CPU kernels (config.cpu_kernels), paired rounds."""
  print(f'e. lstmgen with --config.cpu_kernels=False vs True; {rounds} rounds of {steps} steps, '
        f'alternating')
  if not model_lib.use_kernels():
    print('  the kernels are unavailable here (see the warning above); nothing to compare')
    return
  for dtype in ('float32', 'bfloat16'):
    configs = [reference_config(dtype=dtype, cpu_kernels=k) for k in (True, False)]
    chars = configs[0].batch_size * configs[0].seq_len * steps
    runs = [jax_train_runner(config)[0] for config in configs]
    on, off = interleaved([lambda run=run: chars / run(steps) for run in runs], rounds)
    row(f'train {dtype}, kernels', np.median(on), np.median(off), 'chars/s', 'jax.numpy')
    print_round_ratios(on, off)


def print_first_step(seconds: float):
  cache = jax.config.jax_compilation_cache_dir  # Set by JAX_COMPILATION_CACHE_DIR.
  print(f'  d. time to first step (compile), reference config: {seconds:.1f} s '
        f'(compilation cache: {cache or "off"})', flush=True)


def bench_first_step():
  """d. alone: run it twice with JAX_COMPILATION_CACHE_DIR set to see a relaunch's first step."""
  print_first_step(jax_train_runner(reference_config())[1])


# ----------------------------------------------------------------------------- b. sampling


def bench_sample(rounds: int, length: int = 600, prompt_len: int = 100, torch_device='cpu'):
  """On the CPU, also the TFLearn-style window re-run and the matmul-bound rate."""
  print(f'b. sampling throughput ({length} new chars after a {prompt_len}-char prompt, same weights); '
        f'{rounds} rounds, lstmgen and torch alternating')
  config = reference_config()
  model = model_lib.from_config(config, VOCAB)
  params = train.init_state(model, train.make_optimizer(config), jax.random.key(0), config).params
  torch_model = torch_peer.load_jax_params(jax.device_get(params)).to(torch_device)
  on_cpu = torch_device == 'cpu'
  for streams in (1, 128):
    prompt = np.random.default_rng(0).integers(0, VOCAB, (streams, prompt_len)).astype(np.int32)
    run = lambda: sample.generate(model, params, prompt, jax.random.key(1), length, 1.0)
    run().block_until_ready()

    def ours_rate():
      start = time.perf_counter()
      run().block_until_ready()
      return streams * length / (time.perf_counter() - start)

    peer_rate = lambda: torch_peer.torch_stateful_sample(torch_model, prompt, length, 1.0, 0)[1]
    ours, peer = interleaved([ours_rate, peer_rate], rounds)
    row(f'sample, {streams} stream(s)', np.median(ours), np.median(peer), 'chars/s', 'torch loop')
    print_round_ratios(ours, peer)
    if not on_cpu:
      continue
    if streams == 1:
      _, window = torch_peer.tflearn_window_sample(torch_model, prompt[:1], 60, 1.0, 0)
      row('sample, 1 stream vs re-run window', np.median(ours), window, 'chars/s', 'tflearn-style')
    else:
      peak = jax_matmul_gflops(jnp.float32)
      bound = peak * 1e9 / forward_flops_per_char(config)
      print(f'    matmul-bound rate: {bound:,.0f} chars/s ({peak:,.0f} GFLOP/s jnp.dot at 128x256x1024'
            f' / {forward_flops_per_char(config) / 1e6:.2f} MFLOP per char): lstmgen at '
            f'{np.median(ours) / bound:.0%}')


# ----------------------------------------------------------------------------- c. memory

_PEAK_RSS = ("print(int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))"
             ".split()[1]) * 1024)")  # VmHWM, not ru_maxrss: the latter survives fork + exec.
_MEMORY_CHILD = '''
import sys, numpy as np, jax
from configs import default
from lstmgen import data, train
config = default.get_config()
config.data.path, config.data.strip_gutenberg = sys.argv[1], False
vocab, ids = train.load_vocab_and_ids(config, sys.argv[2])
train_ids, val_ids = data.split(ids, 0.1)
for step in range(20):
  data.train_batch(train_ids, 100, 0, step, 128)
''' + _PEAK_RSS


def bench_memory(megabytes: int = 100):
  print(f'c. memory: peak RSS loading and batching a {megabytes} MB corpus')
  tmp = os.path.join(os.environ.get('TMPDIR', '/tmp'), 'lstmgen_bench')
  os.makedirs(tmp, exist_ok=True)
  path = os.path.join(tmp, f'synthetic_{megabytes}mb.txt')
  if not os.path.exists(path):
    words = np.array('once upon a time there was a king who had three daughters and a wolf'.split())
    rng = np.random.default_rng(0)
    with open(path, 'w') as f:
      while f.tell() < megabytes * 1e6:
        f.write(' '.join(rng.choice(words, 100_000)) + '\n')
  size = os.path.getsize(path)
  base = subprocess.run([sys.executable, '-c', 'import jax, lstmgen.train\n' + _PEAK_RSS],
                        capture_output=True, text=True, check=True)
  shutil.rmtree(os.path.join(tmp, 'cache'), ignore_errors=True)  # Measure the encoding pass too.
  out = subprocess.run([sys.executable, '-c', _MEMORY_CHILD, path, tmp], capture_output=True,
                       text=True, check=True)
  peak, imports = int(out.stdout.split()[-1]), int(base.stdout.split()[-1])
  print(f'  corpus {size / 1e6:.0f} MB: peak RSS {peak / 1e6:,.0f} MB ({imports / 1e6:,.0f} MB of '
        f'it is Python + JAX before any data); target <= 2 x corpus + 500 MB = '
        f'{(2 * size + 5e8) / 1e6:,.0f} MB')


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--only', default='train,sample,memory',
                      help='Comma-separated: train, sample, memory, first_step, kernels.')
  parser.add_argument('--steps', type=int, default=5, help='Training steps per round.')
  parser.add_argument('--rounds', type=int, default=5,
                      help='Timed rounds per framework (training and sampling), alternating with '
                           'the peer.')
  parser.add_argument('--corpus_mb', type=int, default=100, help='Synthetic corpus size for c.')
  args = parser.parse_args()
  print(f'machine: {torch_peer.describe_machine()}; jax {jax.__version__} on '
        f'{jax.devices()[0].platform} x{jax.device_count()}; load average '
        f'{os.getloadavg()[0]:.2f}; GLIBC_TUNABLES={os.environ.get("GLIBC_TUNABLES", "")!r}; '
        f'{time.strftime("%Y-%m-%d")}', flush=True)
  todo = args.only.split(',')
  if 'train' in todo:
    bench_train(args.steps, args.rounds)
  if 'sample' in todo:
    bench_sample(args.rounds)
  if 'memory' in todo:
    bench_memory(args.corpus_mb)
  if 'first_step' in todo:  # Also printed by 'train'.
    bench_first_step()
  if 'kernels' in todo:
    bench_kernels(args.steps, args.rounds)


if __name__ == '__main__':
  hostmem.reexec_with_huge_pages()  # As lstmgen.main does: both frameworks measured under it.
  main()
