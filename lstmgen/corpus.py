"""Named corpora: downloaded once into a cache folder, written atomically, checked before use."""

import dataclasses
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request

from lstmgen import textfile
from lstmgen.errors import UserError


@dataclasses.dataclass(frozen=True)
class Corpus:
  url: str
  filename: str
  sha256: str = ''  # For immutable sources: the exact bytes.
  gutenberg: bool = False  # Gutenberg re-issues its files: check the START/END markers instead.


CORPORA = {
    'grimm': Corpus('https://www.gutenberg.org/cache/epub/2591/pg2591.txt', 'grimm.txt',
                    gutenberg=True),
    'shakespeare': Corpus(
        'https://raw.githubusercontent.com/karpathy/char-rnn/'
        '6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt',
        'shakespeare.txt',
        sha256='86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'),
}


def cache_dir() -> str:
  return os.environ.get('LSTMGEN_DATA_DIR') or os.path.join(os.path.expanduser('~'), '.cache',
                                                            'lstmgen')


def check(raw: bytes, corpus: Corpus) -> str:
  """Empty when `raw` is what `corpus` should hold, else what is wrong."""
  if corpus.sha256:
    digest = hashlib.sha256(raw).hexdigest()
    return '' if digest == corpus.sha256 else f'sha256 {digest}, expected {corpus.sha256}'
  if corpus.gutenberg:
    text = raw.decode('utf-8', errors='replace')
    if not textfile.has_gutenberg_markers(text):
      return 'no Project Gutenberg START/END markers'
  return ''


def download(url: str, dest: str, corpus: Corpus, timeout: float = 60.0) -> None:
  """Fetches `url` to `dest` with progress on stderr; `dest` appears only once complete and checked."""
  tmp = f'{dest}.part{os.getpid()}'
  os.makedirs(os.path.dirname(dest) or '.', exist_ok=True)
  try:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, 'wb') as f:
      total = int(response.headers.get('Content-Length') or 0)
      done, last = 0, 0.0
      while chunk := response.read(1 << 16):
        f.write(chunk)
        done += len(chunk)
        if time.monotonic() - last > 0.5 or done == total:
          last = time.monotonic()
          of = f' of {total / 1e6:.1f} MB' if total else ' MB'
          print(f'\rdownloading {url}: {done / 1e6:.1f}{of}', end='', file=sys.stderr, flush=True)
    print(file=sys.stderr)
    with open(tmp, 'rb') as f:
      problem = check(f.read(), corpus)
    if problem:
      raise UserError(f'the file downloaded from {url} is not the expected corpus ({problem}); '
                      'pass a local copy with --config.data.path=FILE')
    os.replace(tmp, dest)
  except (urllib.error.URLError, OSError, TimeoutError) as e:
    raise UserError(f'could not download {url} ({e}); you may be offline: pass a local copy with '
                    '--config.data.path=FILE') from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def resolve(name: str) -> str:
  """Path of the cached copy of corpus `name`, downloading it first if needed."""
  if not name:
    raise UserError('no corpus given: pass a text file with --config.data.path=FILE, or name one '
                    f'with --config.data.corpus ({", ".join(CORPORA)})')
  if name not in CORPORA:
    raise UserError(f'unknown corpus {name!r} (known: {", ".join(CORPORA)}); '
                    'or pass a file with --config.data.path=FILE')
  corpus = CORPORA[name]
  dest = os.path.join(cache_dir(), corpus.filename)
  if not os.path.exists(dest):
    download(corpus.url, dest, corpus)
  return dest
