"""Compares runs side by side: python -m lstmgen.compare RUN_DIR [RUN_DIR ...] [--plot=curves.png]

Prints one row per run (the config fields that differ between the runs, seed, steps, final train
loss, best validation bits/char, median chars/s) and optionally draws the train and validation
curves against step and against wall time.
"""

import json
import os

import numpy as np
from absl import app, flags

from lstmgen import checkpoint, writer
from lstmgen.cli import command, parse_flags
from lstmgen.errors import UserError

_PLOT = flags.DEFINE_string('plot', None, 'Write the curves to this PNG file.')


def summarize(workdir: str) -> dict:
  events = writer.read(workdir)  # None yet in a run that has only just started: a row of NaNs.
  train = [e for e in events if 'train_loss' in e]
  val = [e for e in events if 'val_bpc' in e]
  speeds = [e['chars_per_sec'] for e in train if 'chars_per_sec' in e]
  return {'steps': events[-1]['step'] if events else 0,
          'train_loss': train[-1]['train_loss'] if train else float('nan'),
          'best_val_bpc': min(e['val_bpc'] for e in val) if val else float('nan'),
          'chars_per_sec': float(np.median(speeds)) if speeds else float('nan')}


def table(workdirs: list[str]) -> str:
  configs = [checkpoint.load_config(w) for w in workdirs]
  differ = sorted({d.split(':')[0] for c in configs[1:]
                   for d in checkpoint.differing_fields(configs[0], c, prefixes=())})
  differ = [f for f in differ if f not in ('seed', 'num_steps')]
  flat = [checkpoint.flatten(json.loads(c.to_json())) for c in configs]
  header = ['run', *differ, 'seed', 'steps', 'train loss', 'best val bpc', 'chars/s']
  rows = [header]
  for w, f in zip(workdirs, flat):
    s = summarize(w)
    rows.append([os.path.basename(os.path.normpath(w)), *(str(f.get(k)) for k in differ),
                 str(f.get('seed')), str(s['steps']), f'{s["train_loss"]:.4f}',
                 f'{s["best_val_bpc"]:.4f}', f'{s["chars_per_sec"]:,.0f}'])
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  return '\n'.join('  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def plot(workdirs: list[str], path: str) -> None:
  import matplotlib  # Imported here: only --plot needs it.
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
  for i, w in enumerate(workdirs):
    events = writer.read(w)
    name = os.path.basename(os.path.normpath(w))
    t0 = events[0]['wall_time'] if events else 0.0
    for key, style, label in (('train_loss', '-', 'train'), ('val_loss', 'o--', 'val')):
      points = [(e['step'], e['wall_time'] - t0, e[key] / np.log(2)) for e in events if key in e]
      if points:
        steps, times, bpc = zip(*points)
        for ax, x in zip(axes, (steps, np.array(times) / 60)):
          ax.plot(x, bpc, style, color=f'C{i}', label=f'{name} {label}', markersize=3)
  axes[0].set(xlabel='step', ylabel='bits per character', title='against step')
  axes[1].set(xlabel='wall time (minutes)', title='against wall time')
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  try:
    fig.savefig(path, dpi=110)
  except ValueError as e:  # An extension matplotlib cannot write.
    raise UserError(f'cannot write the curves to {path} ({e}); name a .png file') from None


@command
def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    raise UserError('name at least one run directory: python -m lstmgen.compare RUN_DIR ...')
  print(table(workdirs))
  if _PLOT.value:
    plot(workdirs, _PLOT.value)
    print(f'curves written to {_PLOT.value}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
