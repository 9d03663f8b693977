"""The real train_and_evaluate on a tiny config: learning, resuming, and 1 vs N devices."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

from configs import tiny
from lstmgen import checkpoint, data, hostcpu, train, writer
from lstmgen import model as model_lib
from lstmgen.errors import UserError
from tests.conftest import assert_trees_equal, device_env, train_cli, without_timing


def tiny_config(corpus_file, **overrides):
  config = tiny.get_config()
  config.data.path = corpus_file
  for name, value in overrides.items():
    target = config
    *parents, leaf = name.split('__')
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def params_of(workdir):
  return train.load_run(workdir)[3]


def test_training_lowers_the_loss_and_writes_the_run(tmp_path, corpus_file):
  config = tiny_config(corpus_file, num_steps=60)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 60
  events = writer.read(str(tmp_path))
  losses = [e['train_loss'] for e in events if 'train_loss' in e]
  vals = [e['val_bpc'] for e in events if 'val_bpc' in e]
  assert losses[-1] < losses[0] - 0.5 and vals[-1] < vals[0]
  assert all('chars_per_sec' in e and e['chars_per_sec'] > 0 for e in events[1:] if 'train_loss' in e)
  vocab = data.Vocab.load(str(tmp_path / 'vocab.json'))
  init = train.init_state(model_lib.from_config(config, len(vocab)), train.make_optimizer(config),
                          jax.random.fold_in(jax.random.key(config.seed), train.INIT), config)
  for before, after in zip(jax.tree.leaves(init.params), jax.tree.leaves(state.params)):
    assert before.shape == after.shape and not np.allclose(before, after)
  for name in ('config.json', 'vocab.json', 'samples.txt', 'metrics.jsonl'):
    assert os.path.exists(tmp_path / name)
  assert os.listdir(tmp_path / 'tensorboard')
  saved = json.load(open(tmp_path / 'config.json'))
  assert saved['model']['hidden_size'] == 32 and saved['data']['path'] == corpus_file
  assert 'temperature 0.1' in open(tmp_path / 'samples.txt').read()


def test_a_second_launch_resumes_and_ends_where_one_run_would(tmp_path, corpus_file):
  full = train.train_and_evaluate(tiny_config(corpus_file, num_steps=40), str(tmp_path / 'full'))
  train.train_and_evaluate(tiny_config(corpus_file, num_steps=20), str(tmp_path / 'split'))
  resumed = train.train_and_evaluate(tiny_config(corpus_file, num_steps=40), str(tmp_path / 'split'))
  assert int(resumed.step) == 40
  assert_trees_equal(full.params, resumed.params)
  assert_trees_equal(full.opt_state, resumed.opt_state)
  full_events = without_timing(writer.read(str(tmp_path / 'full')))
  split_events = without_timing(writer.read(str(tmp_path / 'split')))
  assert [e['step'] for e in split_events if 'val_bpc' in e] == [20, 40]
  assert [e for e in split_events if 'val_bpc' in e] == [e for e in full_events if 'val_bpc' in e]


def test_a_run_resumes_from_anywhere_with_its_corpus_moved_but_not_edited(tmp_path, corpus_file, monkeypatch):
  (tmp_path / 'data').mkdir()
  (tmp_path / 'data' / 'c.txt').write_text(open(corpus_file).read())
  monkeypatch.chdir(tmp_path / 'data')
  train.train_and_evaluate(tiny_config('c.txt', num_steps=10), str(tmp_path / 'run'))
  saved = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert saved['data']['path'] == str(tmp_path / 'data' / 'c.txt')
  monkeypatch.chdir(tmp_path)
  resumed = train.train_and_evaluate(tiny_config('data/c.txt', num_steps=20), str(tmp_path / 'run'))
  assert int(resumed.step) == 20
  # A run saved before paths were made absolute holds the path as typed, relative to its launch.
  saved['data']['path'] = 'data/c.txt'
  (tmp_path / 'run' / 'config.json').write_text(json.dumps(saved))
  resumed = train.train_and_evaluate(tiny_config(str(tmp_path / 'data' / 'c.txt'), num_steps=25),
                                     str(tmp_path / 'run'))
  assert int(resumed.step) == 25
  # The corpus is known by its contents: moved, it resumes; edited, it is refused.
  os.rename(tmp_path / 'data' / 'c.txt', tmp_path / 'moved.txt')
  resumed = train.train_and_evaluate(tiny_config(str(tmp_path / 'moved.txt'), num_steps=30),
                                     str(tmp_path / 'run'))
  assert int(resumed.step) == 30
  with open(tmp_path / 'moved.txt', 'a') as f:
    f.write('The king came home.\n')
  with pytest.raises(UserError, match=r'not the text this run was trained on \([\d,]+ characters '
                                      r'then, [\d,]+ now\)'):
    train.train_and_evaluate(tiny_config(str(tmp_path / 'moved.txt'), num_steps=35),
                             str(tmp_path / 'run'))


def tensorboard_scalars(workdir, tag) -> list[int]:
  """The steps of a scalar as TensorBoard shows them: a launch's START marker at step p (its
  purge step) hides what earlier files logged from step p on."""
  import struct
  from tensorboardX.proto import event_pb2
  steps = []
  for path in sorted(glob.glob(os.path.join(workdir, 'tensorboard', '*')), key=os.path.getmtime):
    data, i = open(path, 'rb').read(), 0
    while i < len(data):
      length = struct.unpack('<Q', data[i:i + 8])[0]
      event = event_pb2.Event.FromString(data[i + 12:i + 12 + length])
      i += length + 16
      if event.HasField('session_log') and event.session_log.status == event.session_log.START:
        steps = [s for s in steps if s < event.step]
      steps += [event.step for v in event.summary.value if v.tag == tag]
  return steps


def test_tensorboard_shows_a_resumed_run_as_one_run(tmp_path, corpus_file):
  train.train_and_evaluate(tiny_config(corpus_file, num_steps=30, log_every=5), str(tmp_path / 'full'))
  # As if killed after step 25 with its checkpoint at 20: the resumed run logs 25 and 30 again.
  train.train_and_evaluate(tiny_config(corpus_file, num_steps=25, log_every=5,
                                       checkpoint_every=20), str(tmp_path / 'split'))
  shutil.rmtree(tmp_path / 'split' / 'checkpoints' / '25')
  train.train_and_evaluate(tiny_config(corpus_file, num_steps=30, log_every=5), str(tmp_path / 'split'))
  expected = [5, 10, 15, 20, 25, 30]
  assert tensorboard_scalars(tmp_path / 'full', 'train_loss') == expected
  assert tensorboard_scalars(tmp_path / 'split', 'train_loss') == expected
  assert not tensorboard_scalars(tmp_path / 'split', 'wall_time')


def test_checkpoints_are_bounded(tmp_path, corpus_file):
  train.train_and_evaluate(tiny_config(corpus_file, num_steps=50, checkpoint_every=10,
                                       keep_checkpoints=2), str(tmp_path))
  assert sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints')) == [40, 50]


def test_resuming_with_a_different_model_is_refused(tmp_path, corpus_file):
  train.train_and_evaluate(tiny_config(corpus_file, num_steps=10), str(tmp_path))
  with pytest.raises(UserError, match=r'different model or data config \(model.hidden_size: 32 -> 64'):
    train.train_and_evaluate(tiny_config(corpus_file, num_steps=20, model__hidden_size=64),
                             str(tmp_path))
  assert checkpoint.manager(str(tmp_path)).latest_step() == 10
  # The seed keys the data order and dropout of every step.
  with pytest.raises(UserError, match=r'seed: 0 -> 5'):
    train.train_and_evaluate(tiny_config(corpus_file, num_steps=20, seed=5), str(tmp_path))
  # A launch with nothing to train leaves the saved config as it was.
  train.train_and_evaluate(tiny_config(corpus_file, num_steps=5), str(tmp_path))
  assert checkpoint.load_config(str(tmp_path)).num_steps == 10
  # Without a checkpoint there is nothing to resume: any config starts over.
  shutil.rmtree(tmp_path / 'checkpoints')
  state = train.train_and_evaluate(tiny_config(corpus_file, num_steps=5, model__hidden_size=64),
                                   str(tmp_path))
  assert state.params['lstm_0']['wh'].shape == (64, 256)


def test_bfloat16_compute_trains_close_to_float32(tmp_path, corpus_file, monkeypatch, caplog):
  # As if on an AVX2-only CPU: the bf16 run (only) is told that float32 is faster there.
  monkeypatch.setattr(hostcpu, 'read_cpuinfo', lambda: 'flags\t: sse2 avx avx2 fma\n')
  runs, warned = {}, {}
  for dtype in ('float32', 'bfloat16'):
    caplog.clear()
    train.train_and_evaluate(tiny_config(corpus_file, num_steps=40, dtype=dtype),
                             str(tmp_path / dtype))
    runs[dtype] = [e['val_loss'] for e in writer.read(str(tmp_path / dtype)) if 'val_loss' in e][-1]
    warned[dtype] = any('no bf16 units' in r.getMessage() for r in caplog.records)
  assert abs(runs['bfloat16'] - runs['float32']) < 0.02 * runs['float32']
  assert warned == {'float32': False, 'bfloat16': True}


def _losses(workdir):
  return [(e['step'], e.get('train_loss'), e.get('val_loss')) for e in writer.read(workdir)]


def test_four_devices_match_one_device_with_dropout(tmp_path, corpus_file):
  args = ('--config.num_steps=20', '--config.log_every=1', '--config.model.dropout=0.3')
  train_cli(tmp_path / 'one', corpus_file, *args, env=device_env(1))
  train_cli(tmp_path / 'four', corpus_file, *args, env=device_env(4))
  one, four = _losses(str(tmp_path / 'one')), _losses(str(tmp_path / 'four'))
  assert len(one) == len(four) > 20
  for (s1, t1, v1), (s4, t4, v4) in zip(one, four):
    assert s1 == s4
    np.testing.assert_allclose([x for x in (t1, v1) if x is not None],
                               [x for x in (t4, v4) if x is not None], rtol=1e-5)
  # A checkpoint written on 4 devices resumes on 1.
  train_cli(tmp_path / 'four', corpus_file, '--config.num_steps=30', '--config.log_every=1',
            '--config.model.dropout=0.3', env=device_env(1))
  assert writer.read(str(tmp_path / 'four'))[-1]['step'] == 30


def test_batch_must_divide_over_devices(tmp_path, corpus_file):
  proc = train_cli(tmp_path, corpus_file, '--config.batch_size=6', env=device_env(4), check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      'lstmgen: error: config.batch_size=6 does not divide evenly over 4 devices; use a multiple of 4')


def test_stateful_training_carries_state_and_resumes_exactly(tmp_path, corpus_file):
  # 32 rows of 32-char chunks: an epoch of the tiny text is ~13 steps, so the run crosses two.
  config = lambda steps: tiny_config(corpus_file, num_steps=steps, stateful=True, batch_size=32,
                                     seq_len=32, model__dropout=0.3)
  full = train.train_and_evaluate(config(40), str(tmp_path / 'full'))
  assert full.carry is not None and np.abs(np.asarray(full.carry[0][1])).max() > 0
  train.train_and_evaluate(config(25), str(tmp_path / 'split'))  # Stops mid-epoch.
  resumed = train.train_and_evaluate(config(40), str(tmp_path / 'split'))
  assert_trees_equal(full, resumed)  # Params, optimizer state and every row's carry.
  vals = lambda run: [e for e in without_timing(writer.read(str(tmp_path / run))) if 'val_bpc' in e]
  assert vals('full') == [e for e in vals('split') if e['step'] != 25]
  # Carrying the state changes training: it is not the random-window run.
  plain = train.train_and_evaluate(tiny_config(corpus_file, num_steps=40, batch_size=32,
                                               seq_len=32, model__dropout=0.3),
                                   str(tmp_path / 'plain'))
  assert not np.allclose(np.asarray(plain.params['logits']['kernel']),
                         np.asarray(full.params['logits']['kernel']))
  with pytest.raises(UserError, match=r'stateful: True -> False'):
    train.train_and_evaluate(tiny_config(corpus_file, num_steps=50, batch_size=32, seq_len=32,
                                         model__dropout=0.3), str(tmp_path / 'full'))
  # A stateful run's rows are its streams: another batch size is refused, not read as damage.
  with pytest.raises(UserError, match=r'batch_size: 32 -> 16'):
    train.train_and_evaluate(tiny_config(corpus_file, num_steps=50, stateful=True, batch_size=16,
                                         seq_len=32, model__dropout=0.3), str(tmp_path / 'full'))
  # Relaunched at its last step, a finished run has nothing to do and returns its state.
  assert_trees_equal(full, train.train_and_evaluate(config(40), str(tmp_path / 'full')))
  # A state of another shape reads no checkpoint back: an error, and none is set aside as damaged.
  mngr = checkpoint.manager(str(tmp_path / 'full'))
  with pytest.raises(UserError, match=r'cannot be read'):
    checkpoint.restore(mngr, full.replace(carry=jax.tree.map(lambda x: x[:16], full.carry)))
  assert not [d for d in os.listdir(tmp_path / 'full' / 'checkpoints') if 'damaged' in d]


def test_stateful_training_on_two_devices_matches_one_and_resumes_on_one(tmp_path, corpus_file):
  args = ('--config.log_every=1', '--config.model.dropout=0.3', '--config.stateful=True',
          '--config.model.weight_drop=0.25')  # Its mask is per step, the same on every device.
  train_cli(tmp_path / 'one', corpus_file, '--config.num_steps=30', *args, env=device_env(1))
  train_cli(tmp_path / 'two', corpus_file, '--config.num_steps=15', *args, env=device_env(2))
  train_cli(tmp_path / 'two', corpus_file, '--config.num_steps=30', *args, env=device_env(1))
  # Every step's loss, and the validations at 20 and 30 (the stop adds one at 15).
  one, two = ([x for s, t, v in _losses(str(tmp_path / run)) if s != 15 or v is None
               for x in (s, t, v) if x is not None] for run in ('one', 'two'))
  assert len(one) == len(two) > 60
  np.testing.assert_allclose(two, one, rtol=1e-5)


def test_cosine_schedule_decays_the_learning_rate_to_one_percent(tmp_path, corpus_file):
  config = tiny_config(corpus_file, num_steps=40, lr_schedule='cosine', log_every=10)
  np.testing.assert_allclose([float(train.lr_factor(config, s)) for s in (0, 20, 40, 80)],
                             [1.0, 0.505, 0.01, 0.01], rtol=1e-6)
  train.train_and_evaluate(config, str(tmp_path))
  rates = [e['learning_rate'] for e in writer.read(str(tmp_path)) if 'learning_rate' in e]
  assert len(rates) == 4 and rates == sorted(rates, reverse=True)
  assert rates[0] < config.learning_rate and rates[-1] < 0.05 * config.learning_rate


def test_checkpoints_from_before_the_carry_field_still_resume(tmp_path, corpus_file):
  import flax
  import orbax.checkpoint as ocp

  @flax.struct.dataclass
  class OldTrainState:  # TrainState as the first release saved it.
    step: jax.Array
    params: dict
    opt_state: tuple

  config = tiny_config(corpus_file, num_steps=10)
  state = train.train_and_evaluate(config, str(tmp_path))
  mngr = checkpoint.manager(str(tmp_path))
  mngr.save(20, args=ocp.args.StandardSave(OldTrainState(state.step + 10, state.params,
                                                         state.opt_state)), force=True)
  mngr.wait_until_finished()
  mngr.close()
  resumed = train.train_and_evaluate(tiny_config(corpus_file, num_steps=25), str(tmp_path))
  assert int(resumed.step) == 25
  assert '20.damaged' not in os.listdir(tmp_path / 'checkpoints')  # Step 20 restored, not set aside.
  assert train.load_run(str(tmp_path))[0].lr_schedule == 'constant'


def test_workdirs_saved_before_a_field_existed_get_the_value_they_ran_with(tmp_path, corpus_file):
  config = tiny_config(corpus_file, num_steps=10)
  train.train_and_evaluate(config, str(tmp_path))
  saved = json.loads((tmp_path / 'config.json').read_text())
  del saved['stateful'], saved['lr_schedule'], saved['model']['weight_drop']
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  loaded = checkpoint.load_config(str(tmp_path))
  assert (loaded.stateful, loaded.lr_schedule, loaded.model.weight_drop) == (False, 'constant', 0.0)
  assert int(train.train_and_evaluate(tiny_config(corpus_file, num_steps=15), str(tmp_path)).step) == 15
  with pytest.raises(UserError, match=r'model.weight_drop: 0.0 -> 0.25'):
    train.train_and_evaluate(tiny_config(corpus_file, num_steps=20, model__weight_drop=0.25),
                             str(tmp_path))
