"""Preemption, crashes and bad input: runs stay exact, nothing is lost, errors are one line."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lstmgen import train, writer
from tests.conftest import ROOT, assert_trees_equal, run_module, train_cli, without_timing

LONG = ('--config.num_steps=1500', '--config.checkpoint_every=50', '--config.log_every=100',
        '--config.eval_every=500', '--config.sample_every=5000', '--config.model.dropout=0.2')


def start_training(workdir, corpus):
  return subprocess.Popen(
      [sys.executable, '-m', 'lstmgen.main', '--config=configs/tiny.py', f'--workdir={workdir}',
       f'--config.data.path={corpus}', *LONG], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(workdir, at_least, proc):
  ckpt = os.path.join(workdir, 'checkpoints')
  while proc.poll() is None:
    if os.path.isdir(ckpt) and any(d.isdigit() and int(d) >= at_least for d in os.listdir(ckpt)):
      return
    time.sleep(0.05)
  raise AssertionError(f'training ended before a checkpoint at step {at_least}: {proc.stderr.read()}')


def assert_same_params(a, b):
  assert_trees_equal(train.load_run(str(a))[3], train.load_run(str(b))[3])


def comparable(workdir):
  return without_timing(writer.read(str(workdir)))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, corpus_file):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  train_cli(workdir, corpus_file, *LONG)
  return workdir


def test_same_seed_gives_bit_identical_metrics(tmp_path, corpus_file, uninterrupted):
  train_cli(tmp_path, corpus_file, *LONG)
  assert comparable(tmp_path) == comparable(uninterrupted)
  other = train_cli(tmp_path / 'seed1', corpus_file, *LONG[:1], '--config.seed=1')
  assert other.returncode == 0
  assert comparable(tmp_path / 'seed1')[0]['train_loss'] != comparable(uninterrupted)[0]['train_loss']


def test_sigkill_then_relaunch_ends_bit_identical(tmp_path, corpus_file, uninterrupted):
  proc = start_training(tmp_path, corpus_file)
  wait_for_checkpoint(tmp_path, 300, proc)
  proc.kill()
  proc.wait()
  train_cli(tmp_path, corpus_file, *LONG)
  assert_same_params(tmp_path, uninterrupted)
  assert comparable(tmp_path) == comparable(uninterrupted)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])  # A preemption; Ctrl-C.
def test_a_stop_signal_saves_exits_zero_and_the_relaunch_continues(tmp_path, corpus_file,
                                                                  uninterrupted, sig):
  proc = start_training(tmp_path, corpus_file)
  wait_for_checkpoint(tmp_path, 100, proc)
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  assert f'after {sig.name}' in err
  stopped = writer.read(str(tmp_path))[-1]['step']
  assert stopped < 1500 and str(stopped) in os.listdir(tmp_path / 'checkpoints')
  train_cli(tmp_path, corpus_file, *LONG)
  assert_same_params(tmp_path, uninterrupted)


def test_a_second_trainer_on_a_busy_workdir_stops_without_touching_it(tmp_path, corpus_file):
  proc = start_training(tmp_path, corpus_file)
  wait_for_checkpoint(tmp_path, 50, proc)
  second = train_cli(tmp_path, corpus_file, *LONG, check=False)
  assert second.returncode == 2
  assert second.stderr.strip().splitlines()[-1] == (
      f'lstmgen: error: another lstmgen run (pid {proc.pid}) is training in {tmp_path}; wait for '
      'it to finish or stop it, or use another --workdir')
  proc.kill()  # The lock dies with its process, even on SIGKILL.
  proc.wait()
  resumed = train_cli(tmp_path, corpus_file, '--config.num_steps=1500', *LONG[1:])
  assert 'resumed from step' in resumed.stderr


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, corpus_file):
  train_cli(tmp_path, corpus_file, '--config.num_steps=40', '--config.checkpoint_every=20')
  latest = tmp_path / 'checkpoints' / '40'
  for root, _, files in os.walk(latest):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  proc = train_cli(tmp_path, corpus_file, '--config.num_steps=60', '--config.checkpoint_every=20')
  assert 'checkpoint at step 40 cannot be read' in proc.stderr and 'trying step 20' in proc.stderr
  assert 'resumed from step 20' in proc.stderr
  assert '40.damaged' in os.listdir(tmp_path / 'checkpoints')  # Set aside once 20 read back.


def test_a_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, corpus_file, monkeypatch):
  from tests.test_train import tiny_config
  train.train_and_evaluate(tiny_config(corpus_file, num_steps=20), str(tmp_path))
  plain = train.cross_entropy
  monkeypatch.setattr(train, 'cross_entropy', lambda logits, targets: plain(logits, targets) * np.nan)
  with pytest.raises(FloatingPointError, match=r'loss became nan at step 21; the last good checkpoint \(step 20\)'):
    train.train_and_evaluate(tiny_config(corpus_file, num_steps=60), str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['20']


def test_a_failure_while_sampling_keeps_that_steps_checkpoint(tmp_path, corpus_file, monkeypatch):
  from tests.test_train import tiny_config

  def broken(*args, **kwargs):
    raise RuntimeError('sampling broke')

  monkeypatch.setattr(train, 'write_samples', broken)
  with pytest.raises(RuntimeError, match='sampling broke'):
    train.train_and_evaluate(tiny_config(corpus_file, num_steps=40, checkpoint_every=10,
                                         sample_every=10), str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10']


BAD_RUNS = [
    (('--config.data.path={missing}',), 'does not exist; check --config.data.path'),
    (('--config.data.path={tmp}',), 'is a directory'),
    (('--config.data.path={empty}',), 'is empty'),
    (('--config.data.path={short}',), 'fewer than seq_len + 1'),
    (('--config.data.path={single}',), 'single distinct character'),
    (('--config.data.path={latin1}',), 'is not valid UTF-8 (byte 3, line 1'),
    (('--config.batch_size=0',), 'config.batch_size must be > 0'),
    (('--config.learning_rate=-1.0',), 'config.learning_rate must be > 0'),
    (('--config.num_steps=-5',), 'config.num_steps must be > 0'),
    (('--config.model.dropout=1.0',), 'config.model.dropout must be in [0, 1)'),
    (('--config.sample_prompt_length=0',), 'config.sample_prompt_length must be > 0'),
    (('--workdir={file}/sub',), 'cannot write to workdir'),
    (('--workdir={file}',), 'is a file, not a folder'),
    (('--config.stateful=True', '--config.batch_size=1024'), 'batch_size=1024 streams of at least'),
]


@pytest.mark.parametrize('args,message', BAD_RUNS)
def test_bad_input_is_one_clear_line(tmp_path, corpus_file, args, message):
  paths = dict(missing=tmp_path / 'nope.txt', tmp=tmp_path, empty=tmp_path / 'empty.txt',
               short=tmp_path / 'short.txt', single=tmp_path / 'single.txt',
               latin1=tmp_path / 'latin1.txt', file=tmp_path / 'a_file')
  paths['empty'].write_text('')
  paths['short'].write_text('abc')
  paths['single'].write_text('a' * 500)
  paths['latin1'].write_bytes('Caf\xe9 au lait\n'.encode('latin-1') * 50)
  paths['file'].write_text('x')
  args = [a.format(**paths) for a in args]
  workdir = next((a.split('=', 1)[1] for a in args if a.startswith('--workdir=')), tmp_path / 'run')
  rest = [a for a in args if not a.startswith('--workdir=')]
  if not any(a.startswith('--config.data.path=') for a in rest):
    rest.append(f'--config.data.path={corpus_file}')
  proc = subprocess.run(
      [sys.executable, '-m', 'lstmgen.main', '--config=configs/tiny.py', f'--workdir={workdir}',
       *rest], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert message in proc.stderr.strip().splitlines()[-1]


def test_bad_config_files_are_one_line_and_configs_load_from_any_directory(tmp_path, corpus_file):
  (tmp_path / 'syntax.py').write_text('def get_config(:\n')
  (tmp_path / 'empty.py').write_text('x = 1\n')
  (tmp_path / 'vocab_dir').mkdir()
  tiny = os.path.join(ROOT, 'configs', 'tiny.py')
  data = f'--config.data.path={corpus_file}'
  for args, message in [
      (('--config=configs/nope.py',), '--config=configs/nope.py: no such file'),
      ((f'--config={tmp_path / "syntax.py"}',), 'cannot be loaded (SyntaxError'),
      ((f'--config={tmp_path / "empty.py"}',), 'defines no get_config()'),
      ((f'--config={tiny}', data, '--config.model.hiden_size=9'), 'did you mean hidden_size?'),
      ((f'--config={tiny}', data, '--config.data.decode_errors=latin1'),
       "decode_errors must be 'strict' or 'replace'"),
      ((f'--config={tiny}', data, f'--config.data.vocab_path={tmp_path / "vocab_dir"}'),
       'cannot read the vocabulary file'),
      ((f'--config={tiny}',), 'no corpus given: pass a text file with --config.data.path'),
      ((f'--config={tiny}', data, 'stray'), 'unexpected arguments: stray')]:
    # From another directory than the repository's: the config files still find configs/.
    proc = subprocess.run([sys.executable, '-m', 'lstmgen.main', f'--workdir={tmp_path / "run"}',
                           *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]


def test_the_workdir_alone_resumes_and_resume_config_changes_fields(tmp_path, corpus_file):
  proc = run_module('lstmgen.main', f'--workdir={tmp_path}', check=False)
  assert proc.returncode == 2 and 'holds no run to resume' in proc.stderr
  train_cli(tmp_path, corpus_file, '--config.num_steps=10')
  proc = run_module('lstmgen.main', f'--workdir={tmp_path}')
  assert 'resumed from step 10' in proc.stderr and 'nothing to train' in proc.stderr
  run_module('lstmgen.main', f'--config=configs/resume.py:{tmp_path}', f'--workdir={tmp_path}',
             '--config.num_steps=20', '--config.log_every=5')
  assert [e['step'] for e in comparable(tmp_path) if 'train_loss' in e] == [10, 15, 20]


def test_unknown_or_mistyped_config_fields_fail_without_a_traceback(tmp_path, corpus_file):
  for bad in ('--config.no_such_field=1', '--config.batch_size=many'):
    proc = train_cli(tmp_path, corpus_file, bad, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert proc.stderr.startswith(f'lstmgen: error: flag {bad}') or proc.stderr.startswith(
        f'lstmgen: error: {bad}: no such config field')


def test_generate_and_evaluate_on_a_workdir_without_checkpoint(tmp_path, corpus_file):
  shutil.copy(corpus_file, tmp_path / 'c.txt')
  train_cli(tmp_path, tmp_path / 'c.txt', '--config.num_steps=5')
  shutil.rmtree(tmp_path / 'checkpoints')
  for module, extra in (('lstmgen.generate', []), ('lstmgen.evaluate', [f'--text={corpus_file}'])):
    proc = subprocess.run([sys.executable, '-m', module, f'--workdir={tmp_path}', *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and 'has no checkpoint yet' in proc.stderr


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, corpus_file, monkeypatch):
  import errno
  import orbax.checkpoint as ocp
  from lstmgen.errors import UserError
  from tests.test_train import tiny_config
  train.train_and_evaluate(tiny_config(corpus_file, num_steps=20), str(tmp_path))

  def disk_full(self, *args, **kwargs):
    os.makedirs(os.path.join(self.directory, '40.orbax-checkpoint-tmp'), exist_ok=True)
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(ocp.CheckpointManager, 'save', disk_full)
  with pytest.raises(UserError, match=r'step 40 \(No space left on device\); the checkpoint at '
                                      r'step 20 is intact'):
    train.train_and_evaluate(tiny_config(corpus_file, num_steps=40), str(tmp_path))
  monkeypatch.undo()
  state = train.train_and_evaluate(tiny_config(corpus_file, num_steps=40), str(tmp_path))
  assert int(state.step) == 40  # The relaunch resumed from step 20 and finished.
