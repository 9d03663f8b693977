"""lstmgen against PyTorch's cuDNN LSTM on one GPU: python -m bench.gpu [--batch_sizes=128,1024]

a. The reference model's training step (as bench.run's a.: 2xLSTM-256, seq 100, Adam, clip 5,
   dropout 0.5) with each recurrence lstmgen has on a GPU, the scan (float32, bfloat16; also
   with `--config.scan_unroll`) and cuDNN (`--config.cudnn=True`, float32), against PyTorch's nn.LSTM, which is cuDNN's, in fp32 and
   under bf16 autocast. The figures decide `config.cudnn`'s default.
b. Sampling 600 characters after a 100-character prompt, 1 and 128 streams, against PyTorch's
   stateful loop on the same GPU, same weights.

Every figure comes from this run, in interleaved rounds, with the ratio. Elsewhere than on a GPU it
runs on the CPU, without the cuDNN variant (a dry run: `--steps=1 --rounds=1 --batch_sizes=8`).
bench/gpu.sh runs it on a lent GPU machine, with the GPU checks.
"""

import argparse
import time

import jax
import numpy as np
import torch

from bench import torch_peer
from bench.run import (VOCAB, bench_sample, forward_flops_per_char, jax_train_runner,
                       reference_config)
from bench.timing import interleaved, print_round_ratios, row
from lstmgen import gpu_rnn

TORCH_DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def bench_train(batch_sizes, steps: int, rounds: int, unroll: int):
  print(f'a. training throughput, {rounds} rounds of {steps} steps, all variants and torch '
        'alternating (compile excluded)')
  for batch in batch_sizes:
    for dtype in ('float32', 'bfloat16'):
      bf16 = dtype == 'bfloat16'
      variants = {}
      # The scan, the scan unrolled (a GPU pays for every loop iteration), cuDNN.
      kinds = [(1, False)] + [(unroll, False)] * (unroll > 1)
      kinds += [(1, True)] * gpu_rnn.available(True, dtype)
      for scan_unroll, cudnn in kinds:
        config = reference_config(dtype=dtype, batch_size=batch, cudnn=cudnn,
                                  scan_unroll=scan_unroll)
        run, compile_s = jax_train_runner(config)
        kind = 'cuDNN' if cudnn else f'scan{f" unroll {scan_unroll}" if scan_unroll > 1 else ""}'
        label = f'train b{batch} {"bf16" if bf16 else "fp32"} {kind}'
        print(f'  {label}: first step (compile) {compile_s:.1f} s', flush=True)
        variants[label] = run
      peer = torch_peer.torch_train_runner(VOCAB, bf16=bf16, batch=batch, device=TORCH_DEVICE)
      chars = batch * config.seq_len * steps
      rates = interleaved([lambda run=run: chars / run(steps) for run in variants.values()] +
                          [lambda: chars / peer(steps)], rounds)
      for label, ours in zip(variants, rates):
        row(label, np.median(ours), np.median(rates[-1]), 'chars/s',
            'torch' + (' autocast' if bf16 else ''))
        print_round_ratios(ours, rates[-1])
        tflops = np.median(ours) * 3 * forward_flops_per_char(config) / 1e12
        print(f'    {tflops:.2f} TFLOP/s of model FLOPs', flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--batch_sizes', default='128,1024', help='Comma-separated global batches.')
  parser.add_argument('--steps', type=int, default=50, help='Training steps per round.')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--unroll', type=int, default=10,
                      help='Also time the scan with this scan_unroll (1: not).')
  parser.add_argument('--only', default='train,sample', help='Comma-separated: train, sample.')
  args = parser.parse_args()
  device = jax.devices()[0]
  gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device'
  print(f'{device.device_kind} ({jax.default_backend()}) x{jax.device_count()}, jax '
        f'{jax.__version__}; torch {torch.__version__} on {TORCH_DEVICE} ({gpu}, cuDNN '
        f'{torch.backends.cudnn.version()}); {time.strftime("%Y-%m-%d")}', flush=True)
  # The reference batch, sampling, then larger batches: what matters most first, should a time
  # limit cut the run short.
  batches = [int(b) for b in args.batch_sizes.split(',')] if 'train' in args.only else []
  if batches:
    bench_train(batches[:1], args.steps, args.rounds, args.unroll)
  if 'sample' in args.only:
    bench_sample(args.rounds, torch_device=TORCH_DEVICE)
  if batches[1:]:
    bench_train(batches[1:], args.steps, args.rounds, args.unroll)


if __name__ == '__main__':
  main()
