"""Text -> vocabulary -> deterministic batches of character ids.

Everything here is host-side numpy. A training batch is a pure function of (seed, step), so runs
reproduce, a resumed run sees the batches it would have seen, and any number of processes can each
build their own rows of the same global batch.
"""

import json
import os
from collections.abc import Iterator, Sequence

import numpy as np

from lstmgen.errors import UserError

_ENCODE_CHUNK = 1 << 22  # Characters encoded at a time: bounds the temporary code-point arrays.


# ----------------------------------------------------------------------------- vocabulary


class Vocab:
  """The sorted set of a corpus's characters; ids are positions in it."""

  def __init__(self, chars: Sequence[str]):
    self.chars = list(chars)
    self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)
    self._index = {c: i for i, c in enumerate(self.chars)}

  @classmethod
  def from_text(cls, text: str) -> 'Vocab':
    return cls(sorted(set(text)))

  @classmethod
  def load(cls, path: str) -> 'Vocab':
    try:
      with open(path, encoding='utf-8') as f:
        chars = json.load(f)['chars']
    except FileNotFoundError:
      raise UserError(f'vocabulary file {path} does not exist') from None
    except OSError as e:  # A directory, no permission.
      raise UserError(f'cannot read the vocabulary file {path} ({e.strerror}); pass a vocab.json '
                      'file, e.g. another run\'s WORKDIR/vocab.json') from None
    except (ValueError, KeyError, TypeError):
      raise UserError(f'{path} is not an lstmgen vocab.json ({{"chars": [...]}})') from None
    return cls(chars)

  def save(self, path: str) -> None:
    _atomic_write(path, json.dumps({'chars': self.chars}, ensure_ascii=False))

  def __len__(self) -> int:
    return len(self.chars)

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocab) and self.chars == other.chars

  def unknown(self, text: str) -> list[str]:
    """Characters of `text` outside the vocabulary, sorted."""
    return sorted(set(text) - set(self._index))

  @property
  def dtype(self) -> np.dtype:
    """uint16 while the vocabulary allows: corpus ids stay ~2 bytes a char."""
    return np.dtype(np.uint16 if len(self) <= np.iinfo(np.uint16).max else np.int32)

  def encode(self, text: str) -> np.ndarray:
    """Ids of `text`, of `self.dtype`."""
    ids = np.empty(len(text), self.dtype)
    for lo in range(0, len(text), _ENCODE_CHUNK):
      chunk = np.frombuffer(text[lo:lo + _ENCODE_CHUNK].encode('utf-32-le'), np.uint32)
      pos = np.searchsorted(self._codepoints, chunk)
      if (pos >= len(self)).any() or (self._codepoints[np.minimum(pos, len(self) - 1)] != chunk).any():
        raise ValueError(f'characters outside the vocabulary: {self.unknown(text[lo:lo + _ENCODE_CHUNK])}')
      ids[lo:lo + len(chunk)] = pos
    return ids

  def decode(self, ids) -> str:
    return ''.join(self.chars[i] for i in np.asarray(ids).reshape(-1))


def _atomic_write(path: str, content: str) -> None:
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(content)
  os.replace(tmp, path)


# ----------------------------------------------------------------------------- splits and batches


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """By position: the last `val_fraction` of the text is validation (views, no copy)."""
  n_val = int(round(len(ids) * val_fraction))
  return ids[:len(ids) - n_val], ids[len(ids) - n_val:]


def window_starts(num_ids: int, seq_len: int, seed: int, step: int, batch_size: int) -> np.ndarray:
  """Start offsets of the global batch's windows for `step`: a pure function of its arguments."""
  rng = np.random.default_rng([seed, step])
  return rng.integers(0, num_ids - seq_len, size=batch_size)  # A window holds seq_len + 1 ids.


def train_batch(ids: np.ndarray, seq_len: int, seed: int, step: int, batch_size: int,
                rows: slice = slice(None)) -> np.ndarray:
  """Rows `rows` of the global batch for `step`: int32 windows [len(rows), seq_len + 1].

  Every position of a window is a target for the one before it; only the selected rows are
  gathered, so each process builds just its share.
  """
  starts = window_starts(len(ids), seq_len, seed, step, batch_size)[rows]
  return ids[starts[:, None] + np.arange(seq_len + 1)].astype(np.int32)


def chunks_per_epoch(num_ids: int, seq_len: int, batch_size: int) -> int:
  """Steps in one stateful pass: whole seq_len chunks in each row's stream of num_ids // batch_size."""
  return (num_ids // batch_size - 1) // seq_len


def stream_batch(ids: np.ndarray, seq_len: int, seed: int, step: int, batch_size: int,
                 rows: slice = slice(None)) -> tuple[np.ndarray, bool]:
  """Rows of the global batch for `step` in stateful (truncated-BPTT) training, as char-rnn reads.

  The text is cut into `batch_size` equal streams, one per row, read in consecutive seq_len
  chunks, so a row's window at step s+1 continues its window at step s and the LSTM state can be
  carried across. Each epoch shifts the cut by an offset drawn from (seed, epoch), reading the text
  as a ring, so rows see different stretches from epoch to epoch. Returns the int32 windows
  [len(rows), seq_len + 1] and whether this step starts an epoch (the carried state is reset).
  """
  n = len(ids)
  epoch, chunk = divmod(step, chunks_per_epoch(n, seq_len, batch_size))
  offset = np.random.default_rng([seed, epoch]).integers(0, n)
  starts = (offset + np.arange(batch_size)[rows] * (n // batch_size) + chunk * seq_len)
  return ids[(starts[:, None] + np.arange(seq_len + 1)) % n].astype(np.int32), chunk == 0


def check_trainable(num_train_ids: int, seq_len: int, vocab_size: int) -> None:
  if vocab_size < 2:
    raise UserError('the corpus has a single distinct character: there is nothing to learn; '
                    'use a real text')
  if num_train_ids < seq_len + 1:
    raise UserError(f'the training split has {num_train_ids} characters, fewer than seq_len + 1 = '
                    f'{seq_len + 1}; use a longer text or a smaller --config.seq_len')


def check_streams(num_train_ids: int, seq_len: int, batch_size: int) -> None:
  if chunks_per_epoch(num_train_ids, seq_len, batch_size) < 1:
    raise UserError(f'stateful training cuts the training split ({num_train_ids} characters) into '
                    f'batch_size={batch_size} streams of at least seq_len + 1 = {seq_len + 1}; use '
                    'a longer text, a smaller --config.batch_size or --config.seq_len, or '
                    '--config.stateful=False')


def eval_blocks(ids: np.ndarray, num_rows: int, seq_len: int,
                max_chunks: int = 256) -> Iterator[tuple[np.ndarray, ...]]:
  """Cuts a text into `num_rows` contiguous streams of whole `seq_len` chunks for stateful eval.

  Yields inputs, targets and weights, each [chunks, num_rows, seq_len], in blocks of up to
  `max_chunks` chunks, so memory stays bounded on any text; the LSTM state carries from block to
  block. Every character but the first is a target exactly once (weight 1); padding has weight 0.
  """
  n = len(ids) - 1
  num_chunks = -(-n // (num_rows * seq_len))
  row_len = num_chunks * seq_len
  num_rows = -(-n // row_len)  # Fewer rows when the text is short: padding stays under one row.
  for first in range(0, num_chunks, max_chunks):
    k = min(max_chunks, num_chunks - first)
    pos = np.arange(num_rows)[:, None] * row_len + first * seq_len + np.arange(k * seq_len)
    valid = pos < n
    pos = np.where(valid, pos, 0)
    cut = lambda a: a.reshape(num_rows, k, seq_len).transpose(1, 0, 2)
    yield (cut(ids[pos].astype(np.int32)), cut(ids[pos + 1].astype(np.int32)),
           cut(valid.astype(np.float32)))
