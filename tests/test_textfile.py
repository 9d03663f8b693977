"""Streaming a corpus file: the pieces equal the whole-text cleaning; the id cache is exact."""

import os

import numpy as np
import pytest

from lstmgen import data, textfile
from lstmgen.errors import UserError

BOOK = ('\ufeffThe Project Gutenberg eBook of Märchen\r\nLicence\r\n'
        '*** START OF THE PROJECT GUTENBERG EBOOK MÄRCHEN ***\r\n\r\n\r\n' +
        'Es war einmal ein König — 白雪姫 🐺.\r\nOld Mac line\rends here.\r\n' * 3 +
        '\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK MÄRCHEN ***\r\nMore licence.\r\n')


@pytest.mark.parametrize('chunk_bytes', [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize('strip', [True, False])
def test_pieces_join_to_the_whole_file_cleaned(tmp_path, chunk_bytes, strip):
  path = tmp_path / 'book.txt'
  path.write_bytes(BOOK.encode('utf-8'))
  # Tiny chunks cut CRLFs, multi-byte characters and marker lines everywhere they can.
  pieces = list(textfile.file_cleaner(str(path), strip, chunk_bytes=chunk_bytes)())
  assert ''.join(pieces) == textfile.clean_text(BOOK, strip)
  if strip:
    assert ''.join(pieces).startswith('Es war einmal') and ''.join(pieces).endswith('here.\n')


def test_a_bad_byte_is_located_whatever_the_chunking(tmp_path):
  path = tmp_path / 'bad.txt'
  path.write_bytes('ä line one\nline two \xff end\n'.encode('utf-8').replace(b'\xc3\xbf', b'\xff'))
  for chunk_bytes in (1, 5, 1 << 20):
    with pytest.raises(UserError, match=r'not valid UTF-8 \(byte 21, line 2: '):
      list(textfile.file_cleaner(str(path), chunk_bytes=chunk_bytes)())


def test_ids_are_cached_memory_mapped_and_rebuilt_when_the_corpus_changes(tmp_path):
  path, cache = tmp_path / 'book.txt', str(tmp_path / 'cache')
  path.write_bytes(BOOK.encode('utf-8'))
  vocab, ids = textfile.cached_ids(str(path), None, cache, chunk_bytes=5)
  text = textfile.clean_text(BOOK)
  assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
  assert vocab == data.Vocab.from_text(text) and vocab.decode(ids) == text
  again_vocab, again = textfile.cached_ids(str(path), None, cache)
  assert again_vocab == vocab and again.filename == ids.filename  # Reused, not re-encoded.
  path.write_text('A different book.\n', encoding='utf-8')
  os.utime(path, ns=(1, 1))
  vocab2, ids2 = textfile.cached_ids(str(path), None, cache)
  assert vocab2.decode(ids2) == 'A different book.\n'
  assert sorted(n for n in os.listdir(cache) if not n.endswith('.json')) == [
      os.path.basename(ids2.filename)]  # The old corpus's ids are gone: bounded disk.
  with pytest.raises(UserError, match=r"characters outside the run's vocabulary: 'Abdefknort'"):
    textfile.cached_ids(str(path), data.Vocab(list('i .\n')), cache)


def test_processes_encoding_at_once_tolerate_each_others_cache_cleanup(tmp_path, monkeypatch):
  """Each process of a pod encodes the corpus; one can delete an old cache file the other listed."""
  path = tmp_path / 'tale.txt'
  path.write_text('once upon a time\n', encoding='utf-8')
  cache = str(tmp_path / 'cache')
  os.makedirs(cache)
  listdir = os.listdir
  monkeypatch.setattr(textfile.os, 'listdir', lambda d: [*listdir(d), 'ids-0123456789abcdef.uint8'])
  vocab, ids = textfile.cached_ids(str(path), None, cache)
  assert vocab.decode(ids) == 'once upon a time\n'
