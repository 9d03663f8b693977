"""Trains a character LSTM: python -m lstmgen.main --config=configs/grimm.py --workdir=DIR.

The only module that defines training flags; `config` and `workdir` flow down from here.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from lstmgen.cli import command

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, samples.')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file, e.g. configs/grimm.py.',
                                          lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


@command
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from lstmgen import train  # Imported after flag parsing: JAX starts only for a valid command.
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except FloatingPointError as e:
    print(f'lstmgen: error: {e}', file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
