"""Exports a trained run as a model directory: python -m lstmgen.export --workdir=RUN --out=DIR

The directory (config.json, vocab.json, params.npz, meta.json) is what
`python -m lstmgen.generate --checkpoint=DIR` loads, and how the bundled Grimm model is shipped.
"""

import os

from absl import app, flags

from lstmgen import checkpoint, pretrained
from lstmgen.cli import command, parse_flags
from lstmgen.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained run directory.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step to export (default: the latest).')
_OUT = flags.DEFINE_string('out', None, 'Directory to write the model to.')


@command
def main(argv):
  del argv
  from lstmgen import train, writer  # pylint: disable=g-import-not-at-top
  if not _WORKDIR.value or not _OUT.value:
    raise UserError('pass --workdir=RUN_DIR and --out=DIR')
  if os.path.isdir(os.path.join(_OUT.value, 'checkpoints')):
    raise UserError(f'{_OUT.value} holds a training run, whose config.json and vocab.json the '
                    'export would overwrite; pass a new --out directory')
  config, vocab, _, params = train.load_run(_WORKDIR.value, _STEP.value)
  events = writer.read(_WORKDIR.value)
  step = _STEP.value or max(checkpoint.manager(_WORKDIR.value, read_only=True).all_steps())
  val = [e for e in events if 'val_bpc' in e and e['step'] == step]
  note = {'step': step, 'val_bpc': val[-1]['val_bpc'] if val else None}
  pretrained.save(_OUT.value, config, vocab, params, note)
  print(f'exported step {step} of {_WORKDIR.value} to {_OUT.value}: {note}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
