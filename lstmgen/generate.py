"""Samples text from a trained run.

  python -m lstmgen.generate --workdir=runs/grimm --prompt="Once upon a time" --length=600

stdout holds only the text (each prompt followed by its continuation, samples separated by a blank
line); logs go to stderr. On a terminal a single sample is printed as it is generated.
"""

import math
import sys

from absl import app, flags, logging

from lstmgen.cli import command, parse_flags
from lstmgen.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained run directory (default: the bundled '
                                'Grimm model).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step in --workdir (default: the latest).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'An exported model directory '
                                  '(python -m lstmgen.export) instead of a workdir.')
_PROMPT = flags.DEFINE_string('prompt', '', 'Text the samples start from.')
_PROMPT_FILE = flags.DEFINE_string('prompt_file', None, 'Read the prompt from this UTF-8 file.')
_LENGTH = flags.DEFINE_integer('length', 600, 'Characters to generate after the prompt.')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.5, 'Softmax temperature; 0 is greedy (argmax).')
_TOP_K = flags.DEFINE_integer('top_k', 0, 'Sample among the k most likely characters (0: all).')
_TOP_P = flags.DEFINE_float('top_p', 1.0, 'Sample among the most likely characters holding this mass.')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 1, 'Independent samples, drawn in one batch.')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed: the same seed gives the same text.')
_STOP = flags.DEFINE_string('stop', None, 'End each sample after the first occurrence of this text.')
_UNKNOWN = flags.DEFINE_enum('unknown', 'error', ['error', 'skip'],
                             'Prompt characters outside the vocabulary: fail, or drop them.')
_CHUNK = 64  # Characters per jitted call when streaming to a terminal.


def check_flags(temperature: float, length: int, top_k: int, top_p: float, num_samples: int):
  if math.isnan(temperature) or temperature < 0:
    raise UserError(f'--temperature must be >= 0 (0 is greedy), got {temperature}')
  if length <= 0:
    raise UserError(f'--length must be > 0, got {length}')
  if top_k < 0:
    raise UserError(f'--top_k must be >= 0 (0 keeps all characters), got {top_k}')
  if not 0 < top_p <= 1:
    raise UserError(f'--top_p must be in (0, 1], got {top_p}')
  if num_samples <= 0:
    raise UserError(f'--num_samples must be > 0, got {num_samples}')


def prompt_ids(vocab, prompt: str, unknown: str):
  """The prompt's ids; a prompt with no usable characters is primed with a newline."""
  bad = vocab.unknown(prompt)
  if bad and unknown == 'error':
    raise UserError(f'the prompt has characters not in the model\'s vocabulary: {"".join(bad)!r}; '
                    'remove them or pass --unknown=skip to drop them')
  if bad:
    logging.warning('dropped the prompt\'s characters outside the vocabulary: %r', ''.join(bad))
  prompt = ''.join(c for c in prompt if c not in set(bad))
  seed_text = prompt or ('\n' if '\n' in vocab.chars else vocab.chars[0])
  return prompt, vocab.encode(seed_text)


def cut_at_stop(text: str, stop: str | None) -> tuple[str, bool]:
  if stop and stop in text:
    return text[:text.index(stop) + len(stop)], True
  return text, False


def load_model(workdir: str | None, step: int | None, checkpoint: str | None):
  """(config, vocab, model, params) from a workdir, an exported model, or the bundled one."""
  from lstmgen import pretrained, train  # pylint: disable=g-import-not-at-top
  if workdir and checkpoint:
    raise UserError('pass --workdir or --checkpoint, not both')
  if step is not None and not workdir:
    raise UserError('--step picks a checkpoint of --workdir; pass --workdir too')
  if workdir:
    return train.load_run(workdir, step)
  path = checkpoint or pretrained.BUNDLED_DIR
  if not checkpoint and not pretrained.is_model_dir(path):
    raise UserError('this install has no bundled model; pass --workdir=DIR of a trained run')
  return pretrained.load(path)


@command
def main(argv):
  del argv
  check_flags(_TEMPERATURE.value, _LENGTH.value, _TOP_K.value, _TOP_P.value, _NUM_SAMPLES.value)
  if _PROMPT.value and _PROMPT_FILE.value:
    raise UserError('pass --prompt or --prompt_file, not both')
  import jax  # Imported after the flags are checked: a bad flag fails fast.
  import numpy as np
  from lstmgen import sample

  _, vocab, model, params = load_model(_WORKDIR.value, _STEP.value, _CHECKPOINT.value)
  prompt = _PROMPT.value
  if _PROMPT_FILE.value:  # Read as training reads a corpus: a BOM dropped, CR and CRLF made LF.
    from lstmgen import textfile
    prompt = textfile.read_text(_PROMPT_FILE.value, strip_gutenberg=False,
                                flags=textfile.Flags('--prompt_file', None, 'prompt'))
  prompt, ids = prompt_ids(vocab, prompt, _UNKNOWN.value)
  prompt_BxP = np.tile(ids.astype(np.int32)[None], (_NUM_SAMPLES.value, 1))
  key = jax.random.key(_SEED.value)
  args = dict(temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value)

  if sys.stdout.isatty() and _NUM_SAMPLES.value == 1:
    # Stream: prime once, then continue the carried state chunk by chunk.
    state = jax.jit(sample.prime, static_argnums=0)(model, params, prompt_BxP)
    sys.stdout.write(prompt)
    text, done = '', 0
    while done < _LENGTH.value:
      n = min(_CHUNK, _LENGTH.value - done)
      tokens, state = sample.continue_sampling(model, params, state, key, n, offset=done, **args)
      new_text, stopped = cut_at_stop(text + vocab.decode(tokens[0]), _STOP.value)
      sys.stdout.write(new_text[len(text):])
      sys.stdout.flush()
      text, done = new_text, done + n
      if stopped:
        break
    sys.stdout.write('\n')
    return

  tokens = sample.generate(model, params, prompt_BxP, key, _LENGTH.value, **args)
  texts = [prompt + cut_at_stop(vocab.decode(row), _STOP.value)[0] for row in np.asarray(tokens)]
  sys.stdout.write('\n\n'.join(texts) + '\n')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
