"""Side-by-side timing helpers shared by the benchmarks (no PyTorch needed)."""

import numpy as np


def row(name, ours, peer, unit, peer_name):
  ratio = ours / peer if peer else float('nan')
  print(f'  {name:<34} lstmgen {ours:>12,.1f} {unit:<8} {peer_name} {peer:>12,.1f}   ratio {ratio:6.2f}x',
        flush=True)
  return ratio


def interleaved(runs, rounds: int):
  """Each run's rates over `rounds` rounds, taking turns, the order flipped every round."""
  rates = [[] for _ in runs]
  for r in range(rounds):
    order = list(enumerate(runs))
    for i, run in order if r % 2 == 0 else order[::-1]:
      rates[i].append(run())
  return rates


def print_round_ratios(ours, peer):
  ratios = sorted(o / p for o, p in zip(ours, peer))
  print(f'    per-round ratios {", ".join(f"{x:.2f}" for x in ratios)} (median {np.median(ratios):.2f})')
