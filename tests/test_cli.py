"""generate and evaluate as a user runs them, on a tiny trained workdir."""

import logging

from lstmgen import cli, train
from tests.conftest import run_module


def generate(workdir, *args, check=True):
  return run_module('lstmgen.generate', f'--workdir={workdir}', *args, check=check)


def test_generate_prints_the_prompt_and_its_continuation(trained_workdir):
  out = generate(trained_workdir, '--prompt=Once upon', '--length=50', '--seed=1').stdout
  assert out.startswith('Once upon') and len(out) == len('Once upon') + 50 + 1
  assert out == generate(trained_workdir, '--prompt=Once upon', '--length=50', '--seed=1').stdout
  assert out != generate(trained_workdir, '--prompt=Once upon', '--length=50', '--seed=2').stdout


def test_generate_batches_samples_separated_by_a_blank_line(trained_workdir):
  out = generate(trained_workdir, '--prompt=The king', '--length=30', '--num_samples=3',
                 '--temperature=1.0').stdout
  samples = out[:-1].split('\n\n')
  assert len(samples) == 3 and all(s.startswith('The king') for s in samples)
  assert len(set(samples)) == 3


def test_generate_from_a_prompt_file_greedy_and_stop(trained_workdir, tmp_path):
  # As Windows Notepad saves it: a BOM, CRLF line ends; read as training reads a corpus.
  (tmp_path / 'prompt.txt').write_bytes('\ufeffA king.\r\nOnce upon a time'.encode('utf-8'))
  greedy = generate(trained_workdir, f'--prompt_file={tmp_path / "prompt.txt"}', '--length=80',
                    '--temperature=0').stdout
  assert greedy.startswith('A king.\nOnce upon a time')
  # Greedy ignores the seed; a top_k over the vocabulary's size keeps every character.
  assert greedy == generate(trained_workdir, '--prompt=A king.\nOnce upon a time', '--length=80',
                            '--temperature=0', '--seed=9', '--top_k=1000').stdout
  continuation = greedy[len('A king.\nOnce upon a time'):-1]
  stop = continuation[5:7]
  stopped = generate(trained_workdir, '--prompt=Once upon a time', '--length=80',
                     '--temperature=0', f'--stop={stop}').stdout
  end = continuation.index(stop) + len(stop)
  assert stopped == 'Once upon a time' + continuation[:end] + '\n' and end < 80


def test_generate_refuses_unknown_prompt_characters_or_skips_them(trained_workdir):
  proc = generate(trained_workdir, '--prompt=Once ZQ€', check=False)
  assert proc.returncode == 2 and proc.stdout == ''
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "lstmgen: error: the prompt has characters not in the model's vocabulary: 'QZ€'")
  proc = generate(trained_workdir, '--prompt=Once ZQ€', '--unknown=skip', '--length=5')
  assert proc.stdout.startswith('Once ') and "characters outside the vocabulary: 'QZ€'" in proc.stderr


def test_generate_bad_flags_and_missing_runs_are_one_line_errors(trained_workdir, tmp_path):
  for args, message in [(('--temperature=-1',), '--temperature must be >= 0'),
                        (('--temperature=nan',), '--temperature must be >= 0'),
                        (('--length=0',), '--length must be > 0'),
                        (('--prompt=a', '--prompt_file=p.txt'), 'not both')]:
    proc = generate(trained_workdir, *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr and 'Traceback' not in proc.stderr
  proc = generate(tmp_path, check=False)
  assert proc.returncode == 2 and 'no config.json' in proc.stderr and 'Traceback' not in proc.stderr
  proc = run_module('lstmgen.generate', '--step=5', check=False)  # Not the bundled model's.
  assert proc.returncode == 2 and 'pass --workdir too' in proc.stderr


def test_evaluate_reports_bits_per_char_and_unknown_characters(trained_workdir, tmp_path):
  (tmp_path / 'other.txt').write_text('Once upon a time the wolf came. Zebra!\n', encoding='utf-8')
  out = run_module('lstmgen.evaluate', f'--workdir={trained_workdir}',
                   f'--text={tmp_path / "other.txt"}').stdout
  lines = out.strip().splitlines()
  assert lines[0].startswith('2 characters (2 distinct') and "'!Z'" in lines[0]
  nats, bits = float(lines[1].split()[1]), float(lines[1].split()[3])
  assert abs(bits - nats / 0.6931471805599453) < 1e-3 and 0 < bits < 5


def test_evaluate_export_and_compare_mistakes_are_one_line_errors(trained_workdir, tmp_path):
  (tmp_path / 'latin1.txt').write_bytes('Caf\xe9 au lait\n'.encode('latin-1'))
  (tmp_path / 'a_file').write_text('x')
  evaluate = ('lstmgen.evaluate', f'--workdir={trained_workdir}')
  for args, message in [
      ((*evaluate, f'--text={tmp_path / "latin1.txt"}', '--streams=0'), '--streams must be > 0'),
      ((*evaluate, f'--text={tmp_path / "nope.txt"}'), 'does not exist; check --text'),
      ((*evaluate, f'--text={tmp_path / "latin1.txt"}'), 'pass --decode_errors=replace'),
      (('lstmgen.export', f'--workdir={trained_workdir}', f'--out={trained_workdir}'),
       'holds a training run'),
      (('lstmgen.export', f'--workdir={trained_workdir}', f'--out={tmp_path / "a_file"}'),
       'a_file: File exists'),
      (('lstmgen.compare', trained_workdir, f'--plot={tmp_path / "c.xyz"}'), 'name a .png file')]:
    proc = run_module(*args, check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
  # The replacement the advice names works.
  proc = run_module(*evaluate, f'--text={tmp_path / "latin1.txt"}', '--decode_errors=replace')
  assert 'bits/char' in proc.stdout


def test_compare_tables_the_differences_and_draws_the_curves(trained_workdir, corpus_file, tmp_path):
  from tests.conftest import train_cli
  other = tmp_path / 'wider'
  train_cli(other, corpus_file, '--config.num_steps=60', '--config.model.hidden_size=48',
            '--config.seed=3')
  out = run_module('lstmgen.compare', trained_workdir, str(other),
                   f'--plot={tmp_path / "curves.png"}').stdout.splitlines()
  assert out[0].split()[:3] == ['run', 'model.hidden_size', 'seed']
  assert out[1].split()[1:4] == ['32', '0', '60'] and out[2].split()[:4] == ['wider', '48', '3', '60']
  assert float(out[1].split()[5]) > 0  # best validation bits/char
  assert open(tmp_path / 'curves.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
  # A run that has only just started (no metrics yet) gets its row, not an error.
  (tmp_path / 'fresh').mkdir()
  (tmp_path / 'fresh' / 'config.json').write_bytes(open(f'{trained_workdir}/config.json', 'rb').read())
  out = run_module('lstmgen.compare', trained_workdir, str(tmp_path / 'fresh'),
                   f'--plot={tmp_path / "curves.png"}').stdout.splitlines()
  assert out[2].split()[:3] == ['fresh', '0', '0']


def test_loading_a_run_never_unpickles(trained_workdir, monkeypatch):
  import pickle
  from lstmgen import train

  def refuse(*args, **kwargs):
    raise AssertionError('a workdir was unpickled')

  monkeypatch.setattr(pickle, 'load', refuse)
  monkeypatch.setattr(pickle, 'loads', refuse)
  config, vocab, _, params = train.load_run(trained_workdir)
  assert config.model.hidden_size == 32 and len(vocab) > 10 and params['lstm_0']['wh'].shape == (32, 128)



def test_logs_keep_lstmgen_info_and_other_libraries_warnings_only():
  def kept(path, level):
    record = logging.LogRecord('absl', level, path, 1, 'message', (), None)
    return cli._OwnLogsOnly().filter(record)  # pylint: disable=protected-access

  assert kept(train.__file__, logging.INFO)
  # A virtual environment inside a checkout named lstmgen (as CI makes one): not our logs.
  assert not kept('/ci/lstmgen/.venv/lib/python3.11/site-packages/jax/_src/distributed.py',
                  logging.INFO)
  assert kept('/site-packages/jax/_src/xla_bridge.py', logging.WARNING)
  assert not kept('/site-packages/orbax/checkpoint/checkpoint_manager.py', logging.WARNING)
