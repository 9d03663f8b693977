"""Named-corpus downloads, against a web server on 127.0.0.1 (never the internet)."""

import functools
import hashlib
import http.server
import os
import threading

import pytest

from lstmgen import corpus
from lstmgen.errors import UserError

BOOK = (b'Header\r\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\nOnce upon a time.\r\n'
        b'*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nLicence\r\n')


@pytest.fixture
def server(tmp_path):
  (tmp_path / 'book.txt').write_bytes(BOOK)
  (tmp_path / 'plain.txt').write_bytes(b'no markers here\n')
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
  handler.log_message = lambda *a: None
  httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  yield f'http://127.0.0.1:{httpd.server_address[1]}'
  httpd.shutdown()


@pytest.fixture
def registry(monkeypatch, tmp_path, server):
  monkeypatch.setenv('LSTMGEN_DATA_DIR', str(tmp_path / 'cache'))
  monkeypatch.setitem(corpus.CORPORA, 'book', corpus.Corpus(f'{server}/book.txt', 'book.txt',
                                                            gutenberg=True))
  monkeypatch.setitem(corpus.CORPORA, 'hashed', corpus.Corpus(
      f'{server}/book.txt', 'hashed.txt', sha256=hashlib.sha256(BOOK).hexdigest()))
  monkeypatch.setitem(corpus.CORPORA, 'wrong', corpus.Corpus(f'{server}/plain.txt', 'wrong.txt',
                                                             gutenberg=True))
  monkeypatch.setitem(corpus.CORPORA, 'tampered', corpus.Corpus(f'{server}/book.txt', 't.txt',
                                                                sha256='0' * 64))
  monkeypatch.setitem(corpus.CORPORA, 'offline', corpus.Corpus('http://127.0.0.1:9/x.txt', 'o.txt'))
  return tmp_path / 'cache'


def test_download_once_into_the_cache(registry, capsys):
  path = corpus.resolve('book')
  assert path == str(registry / 'book.txt')
  assert open(path, 'rb').read() == BOOK
  assert 'downloading' in capsys.readouterr().err  # Progress is shown.
  os.utime(path, (0, 0))
  assert corpus.resolve('book') == path and os.stat(path).st_mtime == 0  # Not fetched again.
  assert open(corpus.resolve('hashed'), 'rb').read() == BOOK


@pytest.mark.parametrize('name,problem', [('wrong', 'START/END markers'), ('tampered', 'sha256')])
def test_a_download_that_fails_its_check_is_not_kept(registry, name, problem):
  with pytest.raises(UserError, match=f'{problem}.*--config.data.path'):
    corpus.resolve(name)
  assert not os.listdir(registry)  # Neither the file nor a partial download stays.


def test_offline_without_a_cached_copy_says_to_pass_a_path(registry):
  with pytest.raises(UserError, match='offline: pass a local copy with --config.data.path'):
    corpus.resolve('offline')


def test_unknown_corpus_name():
  with pytest.raises(UserError, match="unknown corpus 'nope'"):
    corpus.resolve('nope')
