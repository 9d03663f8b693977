"""Bits per character of a trained run on any text file.

  python -m lstmgen.evaluate --workdir=runs/grimm --text=some_book.txt
"""

from absl import app, flags

from lstmgen.cli import command, parse_flags
from lstmgen.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained run directory.')
_TEXT = flags.DEFINE_string('text', None, 'UTF-8 text file to score (cleaned as in training).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step to use (default: the latest).')
_BATCH = flags.DEFINE_integer('streams', 64, 'Contiguous streams the text is cut into.')
_DECODE_ERRORS = flags.DEFINE_enum('decode_errors', None, ['strict', 'replace'],
                                   "Invalid UTF-8 in --text: fail, or read it as U+FFFD "
                                   "(default: the run's config.data.decode_errors).")
flags.mark_flags_as_required(['workdir', 'text'])


@command
def main(argv):
  del argv
  from lstmgen import textfile, train

  if _BATCH.value <= 0:
    raise UserError(f'--streams must be > 0, got {_BATCH.value}')
  config, vocab, model, params = train.load_run(_WORKDIR.value, _STEP.value)
  text = textfile.read_text(_TEXT.value, config.data.strip_gutenberg,
                            _DECODE_ERRORS.value or config.data.decode_errors,
                            flags=textfile.Flags('--text', '--decode_errors', 'text'))
  unknown = vocab.unknown(text)
  if unknown:
    known = ''.join(c for c in text if c not in set(unknown))
    print(f'{len(text) - len(known)} characters ({len(unknown)} distinct: {"".join(unknown)!r}) '
          'are not in the vocabulary and were skipped', flush=True)
    text = known
  if len(text) < 2:
    raise UserError(f'{_TEXT.value} has fewer than 2 scoreable characters')
  result = train.evaluate(model, params, vocab.encode(text), _BATCH.value, config.seq_len)
  print(f'{_TEXT.value}: {result["val_loss"]:.4f} nats/char  {result["val_bpc"]:.4f} bits/char  '
        f'over {len(text) - 1} characters')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
