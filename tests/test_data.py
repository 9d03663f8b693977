"""Text cleaning, vocabulary, splits and the deterministic batches."""

import numpy as np
import pytest

from lstmgen import data, textfile
from lstmgen.errors import UserError

GUTENBERG = ('\ufeffThe Project Gutenberg EBook of Tales\r\nLicence blurb\r\n'
             '*** START OF THIS PROJECT GUTENBERG EBOOK TALES ***\r\n\r\nOnce upon a time.\r\n'
             'The end.\r\n*** END OF THIS PROJECT GUTENBERG EBOOK TALES ***\r\nMore licence.\r\n')


def test_clean_text_strips_bom_crlf_and_gutenberg_wrapper():
  assert textfile.clean_text(GUTENBERG) == 'Once upon a time.\nThe end.\n'
  kept = textfile.clean_text(GUTENBERG, strip_gutenberg=False)
  assert kept.startswith('The Project') and '\r' not in kept and 'More licence' in kept


def test_clean_text_leaves_files_without_markers_alone(caplog):
  assert textfile.clean_text('First Citizen:\nBefore we proceed.\n') == 'First Citizen:\nBefore we proceed.\n'
  assert not caplog.records
  # Half a wrapper (a file cut before its END marker) is kept whole, with a warning.
  cut = GUTENBERG[:GUTENBERG.index('*** END')]
  assert textfile.clean_text(cut).startswith('The Project')
  assert 'no book between a START and an END' in caplog.text


def test_read_text_errors_name_the_problem(tmp_path):
  with pytest.raises(UserError, match='does not exist'):
    textfile.read_text(str(tmp_path / 'missing.txt'))
  with pytest.raises(UserError, match='is a directory'):
    textfile.read_text(str(tmp_path))
  bad = tmp_path / 'bad.txt'
  bad.write_bytes(b'fine line\nbroken \xff here\n')
  with pytest.raises(UserError, match=r'not valid UTF-8 \(byte 17, line 2.*decode_errors=replace'):
    textfile.read_text(str(bad))
  assert textfile.read_text(str(bad), decode_errors='replace') == 'fine line\nbroken \ufffd here\n'


def test_vocab_is_sorted_and_round_trips_unicode(tmp_path):
  text = 'Märchen: Éva och Åsa — 白雪姫 🐺\n'
  vocab = data.Vocab.from_text(text)
  assert vocab.chars == sorted(set(text))
  ids = vocab.encode(text)
  assert ids.dtype == np.uint16 and vocab.decode(ids) == text
  vocab.save(str(tmp_path / 'vocab.json'))
  assert data.Vocab.load(str(tmp_path / 'vocab.json')) == vocab
  assert vocab.unknown('Märchen!?') == ['!', '?']
  with pytest.raises(ValueError, match='outside the vocabulary'):
    vocab.encode('Z')


def test_split_is_by_position():
  ids = np.arange(100)
  train, val = data.split(ids, 0.1)
  np.testing.assert_array_equal(train, np.arange(90))
  np.testing.assert_array_equal(val, np.arange(90, 100))


def test_batches_are_a_pure_function_of_seed_and_step():
  ids = np.arange(1000, dtype=np.uint16)
  a = data.train_batch(ids, 10, seed=3, step=7, batch_size=8)
  b = data.train_batch(ids, 10, seed=3, step=7, batch_size=8)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (8, 11) and a.dtype == np.int32
  np.testing.assert_array_equal(np.diff(a, axis=1), 1)  # Windows are contiguous text.
  assert not np.array_equal(a, data.train_batch(ids, 10, seed=3, step=8, batch_size=8))
  assert not np.array_equal(a, data.train_batch(ids, 10, seed=4, step=7, batch_size=8))


def test_process_shares_of_a_batch_union_to_the_global_batch():
  ids = np.arange(500, dtype=np.uint16)
  whole = data.train_batch(ids, 5, seed=0, step=2, batch_size=8)
  parts = [data.train_batch(ids, 5, seed=0, step=2, batch_size=8, rows=slice(i, i + 2))
           for i in range(0, 8, 2)]
  np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_batches_reach_the_last_character():
  ids = np.arange(12, dtype=np.uint16)
  starts = np.concatenate([data.window_starts(12, 5, 0, s, 16) for s in range(50)])
  assert starts.min() == 0 and starts.max() == 12 - 5 - 1


@pytest.mark.parametrize('max_chunks', [1, 5, 1000])
def test_eval_streams_score_every_character_but_the_first_once(max_chunks):
  ids = np.arange(1, 1000, dtype=np.uint16)
  blocks = list(data.eval_blocks(ids, num_rows=8, seq_len=7, max_chunks=max_chunks))
  assert len(blocks) == -(-18 // max_chunks)  # 999 ids: 8 streams of 18 chunks of 7.
  inputs, targets, weights = (np.concatenate(a) for a in zip(*blocks))
  assert inputs.shape == targets.shape == weights.shape == (18, 8, 7)
  # Streams are contiguous across blocks: each row's chunks follow one another.
  np.testing.assert_array_equal(inputs[1:, :, 0][weights[1:, :, 0] > 0],
                                inputs[:-1, :, -1][weights[1:, :, 0] > 0] + 1)
  assert weights.sum() == len(ids) - 1
  np.testing.assert_array_equal(np.sort(targets[weights > 0]), ids[1:])
  # Each target follows its input in the text.
  np.testing.assert_array_equal(targets[weights > 0], inputs[weights > 0] + 1)


def test_untrainable_corpora_are_refused():
  with pytest.raises(UserError, match='single distinct character'):
    data.check_trainable(1000, 10, 1)
  with pytest.raises(UserError, match='fewer than seq_len'):
    data.check_trainable(5, 10, 30)


def test_stateful_rows_read_contiguous_streams_and_reset_each_epoch():
  ids = np.arange(1000, dtype=np.uint16)
  seq_len, batch = 7, 4
  epoch = data.chunks_per_epoch(len(ids), seq_len, batch)
  assert epoch == (1000 // 4 - 1) // 7
  batches = [data.stream_batch(ids, seq_len, 3, s, batch) for s in range(2 * epoch + 1)]
  assert [reset for _, reset in batches] == [s % epoch == 0 for s in range(2 * epoch + 1)]
  for s in range(1, 2 * epoch + 1):
    prev, (cur, reset) = batches[s - 1][0], batches[s]
    if not reset:  # Each row's window continues where its previous one ended.
      np.testing.assert_array_equal(cur[:, 0], prev[:, -1])
  # A pure function of (seed, step); a process's rows are those rows of the global batch.
  np.testing.assert_array_equal(data.stream_batch(ids, seq_len, 3, 5, batch)[0], batches[5][0])
  np.testing.assert_array_equal(data.stream_batch(ids, seq_len, 3, 5, batch, slice(2, 4))[0],
                                batches[5][0][2:4])
  # Rows are a quarter of the text apart (read as a ring); each epoch cuts it at a new place.
  starts = batches[0][0][:, 0].astype(int)
  np.testing.assert_array_equal((starts - starts[0]) % 1000, np.arange(batch) * (1000 // batch))
  assert batches[epoch][0][0, 0] != starts[0]


def test_stateful_training_refuses_a_text_too_short_for_its_streams():
  data.check_streams(4 * 9, 7, 4)
  with pytest.raises(UserError, match=r'batch_size=4 streams of at least seq_len \+ 1 = 8'):
    data.check_streams(4 * 8 - 1, 7, 4)
