"""A corpus file as cleaned text in pieces, and as character ids cached on disk, memory-mapped.

Nothing here holds the whole text: the file is decoded a few MB at a time, so a corpus larger than
RAM trains (its ids take 2 bytes a char on disk, and only the pages batches touch are in memory).
The pieces, joined, are exactly `clean_text` of the whole decoded file.
"""

import codecs
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import numpy as np
from absl import logging

from lstmgen.data import Vocab
from lstmgen.errors import UserError

_START = re.compile(r'^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$', re.MULTILINE)
_END = re.compile(r'^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$', re.MULTILINE)
CHUNK_BYTES = 1 << 22
_LONGEST_LINE = 1 << 22  # Characters of one line held back waiting for its end.
_CACHE_FORMAT = 1  # Bump when the cache's content or naming changes.


# ----------------------------------------------------------------------------- cleaning


class Flags(NamedTuple):
  """The flags that name the file and its decode_errors, for the advice in error messages."""
  path: str = '--config.data.path'
  decode_errors: str | None = '--config.data.decode_errors'  # None: the command has none.
  noun: str = 'corpus'  # What the file is to the user.


def _decode(path: str, errors: str, chunk_bytes: int, flags: Flags = Flags()) -> Iterator[str]:
  """The file's UTF-8 text in pieces; a bad byte is reported with its offset and line."""
  decoder = codecs.getincrementaldecoder('utf-8')(errors)
  offset, newlines = 0, 0  # Bytes read before this chunk, and the line ends among them.
  with open(path, 'rb') as f:
    while True:
      raw = f.read(chunk_bytes)
      buffered = decoder.getstate()[0]  # A multi-byte character cut by the previous chunk.
      try:
        yield decoder.decode(raw, final=not raw)
      except UnicodeDecodeError as e:
        data = buffered + raw
        line = newlines + data.count(b'\n', 0, e.start) + 1
        replace = (f', or pass {flags.decode_errors}=replace to substitute U+FFFD'
                   if flags.decode_errors else '')
        raise UserError(
            f'{path} is not valid UTF-8 (byte {offset - len(buffered) + e.start}, line {line}: '
            f'{data[e.start:e.start + 4]!r}); convert it to UTF-8{replace}') from None
      if not raw:
        return
      offset, newlines = offset + len(raw), newlines + raw.count(b'\n')


def _normalize(pieces: Iterable[str]) -> Iterator[str]:
  """Drops leading BOMs and turns CRLF (and lone CR) into LF, in pieces that end at line ends.

  A piece is cut after its last line end, so a CRLF or a Gutenberg marker line is never split
  (lines longer than _LONGEST_LINE characters are passed on in parts).
  """
  pending, leading = '', True
  for piece in pieces:
    if leading:
      piece = piece.lstrip('\ufeff')
      leading = not piece
    text = pending + piece
    cut = max(text.rfind('\n'), text.rfind('\r')) + 1
    if not cut and len(text) > _LONGEST_LINE:
      cut = len(text)  # No line end in sight: pass it on rather than hold it all.
    if cut and text[cut - 1] == '\r':
      cut -= 1  # Its '\n' may start the next piece.
    text, pending = text[:cut], text[cut:]
    if text:
      yield text.replace('\r\n', '\n').replace('\r', '\n')
  if pending:
    yield pending.replace('\r', '\n')


def _gutenberg_span(pieces: Iterable[str]) -> tuple[int, int] | None:
  """[end of the START marker line, start of the END marker line), when both are present."""
  pos, start, end = 0, None, None
  for piece in pieces:
    if start is None and (m := _START.search(piece)):
      start = pos + m.end()
    if end is None and (m := _END.search(piece)):
      end = pos + m.start()
    pos += len(piece)
  if (start is None) != (end is None) or (start is not None and start >= end):
    # Half a Gutenberg wrapper (a file cut short, or edited): kept whole, but say so.
    logging.warning('the corpus has a Project Gutenberg START or END marker but no book between '
                    'a START and an END one, so it is kept whole, licence text included; remove '
                    'the leftover text, or set --config.data.strip_gutenberg=False to silence this')
  return (start, end) if start is not None and end is not None and start < end else None


def _cleaner(normalized: Callable[[], Iterable[str]],
             strip_gutenberg: bool) -> Callable[[], Iterator[str]]:
  """A function giving the cleaned pieces, as often as asked; the markers are searched once."""
  span = _gutenberg_span(normalized()) if strip_gutenberg else None
  return lambda: normalized() if span is None else _book(normalized(), *span)


def _book(pieces: Iterable[str], lo: int, hi: int) -> Iterator[str]:
  """The text in [lo, hi), newlines trimmed at both ends, plus one '\\n'."""
  pos, leading, held = 0, True, ''  # `held`: newlines that end the book unless text follows.
  for piece in pieces:
    part = piece[max(lo - pos, 0):max(min(hi - pos, len(piece)), 0)]
    pos += len(piece)
    if leading:
      part = part.lstrip('\n')
      leading = not part
    body = part.rstrip('\n')
    if body:
      yield held + body
      held = part[len(body):]
    else:
      held += part
  yield '\n'


def has_gutenberg_markers(text: str) -> bool:
  return bool(_START.search(text) and _END.search(text))


def clean_text(text: str, strip_gutenberg: bool = True) -> str:
  """Drops a BOM, turns CRLF (and lone CR) into LF, keeps a Gutenberg book between its markers."""
  return ''.join(_cleaner(lambda: _normalize([text]), strip_gutenberg)())


def check_file(path: str, flags: Flags = Flags()) -> None:
  if not path:
    raise UserError('no corpus given; pass --config.data.path=FILE or --config.data.corpus=NAME')
  if os.path.isdir(path):
    raise UserError(f'{flags.noun} path {path} is a directory; pass a text file')
  if not os.path.exists(path):
    raise UserError(f'{flags.noun} file {path} does not exist; check {flags.path}')


def file_cleaner(path: str, strip_gutenberg: bool = True, decode_errors: str = 'strict',
                 chunk_bytes: int = CHUNK_BYTES,
                 flags: Flags = Flags()) -> Callable[[], Iterator[str]]:
  """A function giving the cleaned text of a file a few MB at a time, once per call.

  Each call reads the file again; the Gutenberg markers are searched once, by this function.
  `flags` name, in error messages, the flags of the command that reads the file.
  """
  check_file(path, flags)
  return _cleaner(lambda: _normalize(_decode(path, decode_errors, chunk_bytes, flags)),
                  strip_gutenberg)


def read_text(path: str, strip_gutenberg: bool = True, decode_errors: str = 'strict',
              flags: Flags = Flags()) -> str:
  """The whole cleaned text of a file (for prompts and evaluation texts; training streams)."""
  return ''.join(file_cleaner(path, strip_gutenberg, decode_errors, flags=flags)())


# ----------------------------------------------------------------------------- id cache


def cached_ids(path: str, vocab, cache_dir: str, strip_gutenberg: bool = True,
               decode_errors: str = 'strict', chunk_bytes: int = CHUNK_BYTES):
  """(vocab, ids): the corpus's ids as a read-only memmap, encoded once into `cache_dir`.

  `vocab` None builds the vocabulary from the corpus. The cache is keyed by the file's path, size
  and modification time and by the cleaning options and vocabulary, so an edited corpus is
  re-encoded; older caches in `cache_dir` are deleted, so it holds one corpus's ids at most.
  """
  check_file(path)
  stat = os.stat(path)
  source = [_CACHE_FORMAT, os.path.abspath(path), stat.st_size, stat.st_mtime_ns, strip_gutenberg,
            decode_errors]
  key = hashlib.sha256(json.dumps(source + [vocab.chars if vocab else None]).encode()).hexdigest()
  target = os.path.join(cache_dir, f'ids-{key[:16]}')
  if vocab is None and os.path.exists(target + '.vocab.json'):
    vocab = Vocab.load(target + '.vocab.json')
  pieces = None  # The file is read only when the cache lacks something.
  if vocab is None:
    pieces = file_cleaner(path, strip_gutenberg, decode_errors, chunk_bytes)
    chars = set()
    for piece in pieces():
      chars.update(piece)
    vocab = Vocab(sorted(chars))
  ids_path = f'{target}.{vocab.dtype.name}'
  if not os.path.exists(ids_path):
    pieces = pieces or file_cleaner(path, strip_gutenberg, decode_errors, chunk_bytes)
    os.makedirs(cache_dir, exist_ok=True)
    for name in os.listdir(cache_dir):
      if name.startswith('ids-') and not name.startswith(os.path.basename(target)) and '.tmp' not in name:
        try:
          os.remove(os.path.join(cache_dir, name))
        except FileNotFoundError:  # Another process of the same run removed it first.
          pass
    tmp = f'{ids_path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
      for piece in pieces():
        try:
          f.write(vocab.encode(piece).tobytes())
        except ValueError:
          os.remove(tmp)
          raise UserError(f'the corpus {path} has characters outside the run\'s vocabulary: '
                          f'{"".join(vocab.unknown(piece))!r}; train on the text that vocabulary '
                          'was built from (a resumed run: its own corpus, unchanged; '
                          '--config.data.vocab_path: a vocab.json holding these characters), or '
                          'use a new --workdir') from None
    vocab.save(target + '.vocab.json')
    os.replace(tmp, ids_path)  # Complete or absent: concurrent writers produce the same file.
  if os.path.getsize(ids_path) == 0:
    raise UserError(f'the corpus {path} is empty after cleaning; use a real text')
  return vocab, np.memmap(ids_path, dtype=vocab.dtype, mode='r')
