"""Train state, pure train and eval steps, and the training loop (the only place with side effects)."""

import functools
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lstmgen import checkpoint, corpus, data, hostcpu, replicas, runctl, sample, textfile
from lstmgen import model as model_lib
from lstmgen.errors import UserError
from lstmgen.writer import MetricWriter

# fold_in tags under the root key: one independent stream per use.
INIT, DROPOUT, SAMPLE, WEIGHT_DROP = 0, 1, 2, 3


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  carry: Any = None  # Stateful training: every row's LSTM state, [batch_size, hidden] per leaf.


# ----------------------------------------------------------------------------- config and data


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses values no run can use, naming the field and the fix."""
  positive = {'batch_size': config.batch_size, 'seq_len': config.seq_len,
              'num_steps': config.num_steps, 'learning_rate': config.learning_rate,
              'grad_clip_norm': config.grad_clip_norm, 'log_every': config.log_every,
              'eval_every': config.eval_every, 'checkpoint_every': config.checkpoint_every,
              'sample_every': config.sample_every, 'sample_length': config.sample_length,
              'eval_batch_size': config.eval_batch_size, 'keep_checkpoints': config.keep_checkpoints,
              'sample_prompt_length': config.sample_prompt_length,
              'model.hidden_size': config.model.hidden_size, 'model.embed_size': config.model.embed_size,
              'model.num_layers': config.model.num_layers, 'scan_unroll': config.scan_unroll}
  for name, value in positive.items():
    if not 0 < value < float('inf'):
      raise UserError(f'config.{name} must be > 0, got {value}; set --config.{name}=...')
  for field in ('dropout', 'weight_drop'):
    if not 0 <= config.model[field] < 1:
      raise UserError(f'config.model.{field} must be in [0, 1), got {config.model[field]}')
  if not 0 <= config.data.val_fraction < 1:
    raise UserError(f'config.data.val_fraction must be in [0, 1), got {config.data.val_fraction}')
  if config.lr_schedule not in ('constant', 'cosine'):
    raise UserError(f"config.lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")
  if config.data.decode_errors not in ('strict', 'replace'):
    raise UserError("config.data.decode_errors must be 'strict' or 'replace', got "
                    f'{config.data.decode_errors!r}')
  if config.dtype not in ('float32', 'bfloat16'):
    raise UserError(f"config.dtype must be 'float32' or 'bfloat16', got {config.dtype!r}")
  if any(not t >= 0 for t in config.sample_temperatures):
    raise UserError(f'config.sample_temperatures must be >= 0, got {config.sample_temperatures}')
  devices = jax.device_count()
  if config.batch_size % devices:
    raise UserError(f'config.batch_size={config.batch_size} does not divide evenly over {devices} '
                    f'devices; use a multiple of {devices}')


def corpus_path(config: ml_collections.ConfigDict) -> str:
  return config.data.path or corpus.resolve(config.data.corpus)


def load_vocab_and_ids(config, workdir: str) -> tuple[data.Vocab, np.ndarray]:
  """The run's vocabulary (the workdir's, a given one, or the corpus's) and the corpus's ids.

  The ids are encoded once into workdir/cache and memory-mapped, so the corpus can exceed RAM.
  """
  saved = checkpoint.vocab_path(workdir)
  given = saved if os.path.exists(saved) else config.data.vocab_path
  return textfile.cached_ids(corpus_path(config), data.Vocab.load(given) if given else None,
                             os.path.join(workdir, 'cache'), config.data.strip_gutenberg,
                             config.data.decode_errors)


# ----------------------------------------------------------------------------- train state


def lr_factor(config, step):
  """The learning rate at `step` as a fraction of config.learning_rate.

  'cosine' decays to 1% at config.num_steps (so changing num_steps mid-run changes the rest of
  the schedule). Applied by scaling Adam's update, which is linear in the rate, so the optimizer
  state, and every checkpoint's structure, is the same for all schedules.
  """
  if config.lr_schedule == 'constant':
    return 1.0
  progress = jnp.minimum(step / config.num_steps, 1.0)
  return 0.01 + 0.99 * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))


def make_optimizer(config) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm),
                     optax.adam(config.learning_rate))


def init_state(model, tx, key, config) -> TrainState:
  params = model.init(key, jnp.zeros((1, config.seq_len), jnp.int32))['params']
  carry = model.initial_carry(config.batch_size) if config.stateful else None
  return TrainState(step=jnp.array(0, jnp.int32), params=params, opt_state=tx.init(params),
                    carry=carry)


# ----------------------------------------------------------------------------- update and eval steps


def cross_entropy(logits_BxTxV, targets_BxT):
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)


def train_step(state: TrainState, windows_BxT1, example_ids_B, carry=None, reset_B=None, *,
               model, tx, dropout_key, weight_drop_key, lr_factor_fn):
  """One update on this device's rows; gradients and metrics averaged over all devices.

  Stateful training passes each row's carry from the previous step (zeroed where `reset_B`, at the
  start of an epoch) and gets the new one back; gradients stop at the window's start (truncated
  BPTT). Otherwise every window starts from zeros and the returned carry is None.
  """
  step_key = jax.random.fold_in(dropout_key, state.step)
  # Keyed by the example's index in the global batch: the same masks on 1 device, N, or N hosts.
  keys_B = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(example_ids_B)
  if carry is not None:
    carry = jax.tree.map(lambda x: jnp.where(reset_B[:, None], 0.0, x), carry)

  def loss_fn(params):
    # Layer 0's input projections are gathered from a V x 4H table, not multiplied out per char
    # (7.5% of the FLOPs; +3-4% in paired runs of the step on a Xeon, in bench.run within noise).
    logits, new_carry = model.apply({'params': params}, windows_BxT1[:, :-1], carry,
                                    dropout_keys_B=keys_B,
                                    input_table_Vx4H=model_lib.input_table(params, model.dtype),
                                    weight_drop_key=jax.random.fold_in(weight_drop_key, state.step))
    return cross_entropy(logits, windows_BxT1[:, 1:]).mean(), new_carry

  (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = jax.lax.pmean(grads, 'batch')
  loss = jax.lax.pmean(loss, 'batch')
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  updates = jax.tree.map(lambda u: u * lr_factor_fn(state.step), updates)
  params = optax.apply_updates(state.params, updates)
  metrics = {'train_loss': loss, 'grad_norm': optax.tree.norm(grads)}
  state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  return state, metrics, (new_carry if carry is not None else None)


def make_p_train_step(model, tx, root_key, config):
  """train_step compiled for every local device, the state donated (updated in place)."""
  return jax.pmap(
      functools.partial(train_step, model=model, tx=tx,
                        lr_factor_fn=functools.partial(lr_factor, config),
                        dropout_key=jax.random.fold_in(root_key, DROPOUT),
                        weight_drop_key=jax.random.fold_in(root_key, WEIGHT_DROP)),
      axis_name='batch', donate_argnums=(0, 3))


def eval_stream_loss(model, params, carry, inputs_NxRxS, targets_NxRxS, weights_NxRxS):
  """Summed NLL (nats), target count and final carry over chunks of contiguous streams."""
  table_Vx4H = model_lib.input_table(params, model.dtype)

  def chunk(carry, xs):
    inputs, targets, weights = xs
    logits, carry = model.apply({'params': params}, inputs, carry, input_table_Vx4H=table_Vx4H)
    return carry, (jnp.sum(cross_entropy(logits, targets) * weights), jnp.sum(weights))

  carry, (nll_N, count_N) = jax.lax.scan(chunk, carry, (inputs_NxRxS, targets_NxRxS, weights_NxRxS))
  return jnp.sum(nll_N), jnp.sum(count_N), carry


eval_stream_loss_jit = jax.jit(eval_stream_loss, static_argnums=0)


def evaluate(model, params, ids: np.ndarray, num_rows: int, seq_len: int) -> dict:
  """Loss in nats and bits per character over every character of `ids` but the first."""
  totals, carry = [], None
  for inputs, targets, weights in data.eval_blocks(ids, num_rows, seq_len):
    carry = carry or model.initial_carry(inputs.shape[1])
    nll, count, carry = eval_stream_loss_jit(model, params, carry, inputs, targets, weights)
    totals.append((nll, count))
  nll, count = np.sum(jax.device_get(totals), axis=0, dtype=np.float64)
  loss = nll / count
  return {'val_loss': float(loss), 'val_bpc': float(loss / np.log(2))}


# ----------------------------------------------------------------------------- the loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains (or resumes) the run in `workdir` to config.num_steps; returns the final state."""
  validate(config)
  if config.data.path:  # Saved absolute: the run resumes from any directory.
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.path = os.path.abspath(config.data.path)
  runctl.make_workdir(workdir)
  runctl.check_resumable(config, workdir)
  with runctl.exclusive(workdir, enabled=jax.process_index() == 0):
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  is_chief = jax.process_index() == 0

  # Input pipeline: the corpus's ids (memory-mapped); batches gathered per step.
  vocab, ids = load_vocab_and_ids(config, workdir)
  train_ids, val_ids = data.split(ids, config.data.val_fraction)
  data.check_trainable(len(train_ids), config.seq_len, len(vocab))
  if config.stateful:
    data.check_streams(len(train_ids), config.seq_len, config.batch_size)
  if is_chief:
    vocab.save(checkpoint.vocab_path(workdir))
  logging.info('corpus: %d characters (%d train, %d validation), vocabulary of %d',
               len(ids), len(train_ids), len(val_ids), len(vocab))
  if len(val_ids) < 2:
    logging.info('no validation text (data.val_fraction=%g): no validation loss is computed, and '
                 'samples are primed from the training text', config.data.val_fraction)

  # Model, optimizer, state: restored from the latest checkpoint when there is one.
  model = model_lib.from_config(config, len(vocab))
  tx = make_optimizer(config)
  root_key = jax.random.key(config.seed)
  state = init_state(model, tx, jax.random.fold_in(root_key, INIT), config)
  mngr = checkpoint.manager(workdir, config.keep_checkpoints)
  runctl.check_corpus(workdir, ids, write=is_chief, resuming=mngr.latest_step() is not None)
  if mngr.latest_step() is not None:
    state = checkpoint.restore(mngr, state)
    logging.info('resumed from step %d', int(state.step))
  start = int(state.step)
  if is_chief and start < config.num_steps:  # A launch with nothing to train changes nothing.
    checkpoint.save_config(workdir, config)
  writer = MetricWriter(workdir, enabled=is_chief, resumed_at=start)

  # Update step over every local device; each process builds its own rows of the global batch.
  devices = jax.local_devices()
  local_batch = config.batch_size // jax.process_count()
  rows = slice(jax.process_index() * local_batch, (jax.process_index() + 1) * local_batch)
  example_ids = np.arange(rows.start, rows.stop, dtype=np.int32).reshape(len(devices), -1)
  p_train_step = make_p_train_step(model, tx, root_key, config)
  # The carry is per row, so it is split over devices, not replicated like the rest of the state.
  carry = replicas.split_over_devices(jax.tree.map(
      lambda x: np.asarray(x)[rows].reshape(len(devices), -1, x.shape[-1]), state.carry))
  state = replicas.replicate(state.replace(carry=None))

  def host_state():
    return jax.device_get(replicas.unreplicate(state)).replace(
        carry=replicas.gather_rows(carry))

  def save(step):
    try:
      checkpoint.save(mngr, step, host_state())
      mngr.wait_until_finished()  # Surface a failed write (a full disk) here, at its step.
    except OSError as e:
      # Orbax writes into a temporary directory and renames it when complete, so a failed save
      # leaves the previous checkpoint as the latest one.
      raise UserError(f'could not save the checkpoint at step {step} ({e.strerror or e}); the '
                      f'checkpoint at step {mngr.latest_step()} is intact; free disk space and '
                      'relaunch to continue from it') from None
    writer.flush()

  chars_per_step = config.batch_size * config.seq_len
  pending, last_log = [], None  # Metrics since the last log; (time, step) of the last log.
  preemption = runctl.Preemption()

  def flush(step):
    """Reads the pending metrics (blocking once), stops on NaN, logs the interval's means."""
    nonlocal pending, last_log
    if not pending:
      return
    stacked = jax.device_get(replicas.unreplicate(pending))
    losses = np.array([m['train_loss'] for m in stacked])
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
      kept = (f'the last good checkpoint (step {mngr.latest_step()}) is kept in {workdir}'
              if mngr.latest_step() is not None else 'no checkpoint had been written yet')
      raise FloatingPointError(
          f'loss became {losses[bad[0]]} at step {step - len(losses) + bad[0] + 1}; {kept}; lower '
          '--config.learning_rate or check the data')
    now = time.time()
    event = {'step': step, 'wall_time': now, 'train_loss': float(losses.mean()),
             'learning_rate': config.learning_rate * float(lr_factor(config, step - 1)),
             'grad_norm': float(np.mean([m['grad_norm'] for m in stacked]))}
    if last_log is not None and step > last_log[1]:
      steps_per_sec = (step - last_log[1]) / (now - last_log[0])
      event.update(steps_per_sec=steps_per_sec, chars_per_sec=steps_per_sec * chars_per_step)
      eta = (config.num_steps - step) / steps_per_sec
      logging.info('step %d/%d  loss %.4f  %.0f chars/s  %.2f steps/s  ETA %dm%02ds', step,
                   config.num_steps, event['train_loss'], event['chars_per_sec'], steps_per_sec,
                   eta // 60, eta % 60)
    else:
      logging.info('step %d/%d  loss %.4f', step, config.num_steps, event['train_loss'])
    writer.write(event)
    pending, last_log = [], (now, step)

  def paused(fn, *args):
    """Runs fn outside the timed interval, so chars/s measures training alone."""
    nonlocal last_log
    t = time.time()
    out = fn(*args)
    if last_log is not None:
      last_log = (last_log[0] + time.time() - t, last_log[1])
    return out

  def eval_and_sample(step, do_eval, do_sample):
    params = replicas.unreplicate(state.params)
    if do_eval and len(val_ids) > 1:
      event = {'step': step, 'wall_time': time.time(),
               **evaluate(model, params, val_ids, config.eval_batch_size, config.seq_len)}
      logging.info('step %d  validation loss %.4f nats/char  %.4f bits/char', step,
                   event['val_loss'], event['val_bpc'])
      writer.write(event)
    if do_sample and is_chief:
      write_samples(config, model, params, vocab, val_ids if len(val_ids) > 1 else train_ids,
                    step, root_key, writer, workdir)

  # Train loop.
  if advice := hostcpu.bf16_warning(config.dtype, jax.default_backend(), hostcpu.read_cpuinfo()):
    logging.warning(advice)
  if start >= config.num_steps:
    logging.info('the run is at step %d, which reaches num_steps=%d: nothing to train; to go on, '
                 'raise it: --config=configs/resume.py:%s --config.num_steps=N', start,
                 config.num_steps, workdir)
  else:
    logging.info('training steps %d..%d on %d devices (%d processes), %d chars per step', start,
                 config.num_steps, jax.device_count(), jax.process_count(), chars_per_step)
  try:
    for step in range(start, config.num_steps):
      if config.stateful:
        windows, reset = data.stream_batch(train_ids, config.seq_len, config.seed, step,
                                           config.batch_size, rows)
        reset = np.full(example_ids.shape, reset)
      else:
        windows = data.train_batch(train_ids, config.seq_len, config.seed, step,
                                   config.batch_size, rows)
        reset = None
      state, metrics, carry = p_train_step(
          state, windows.reshape(*example_ids.shape, -1), example_ids, carry, reset)
      pending.append(metrics)
      if len(pending) > 1:  # At most one step queued ahead, so a SIGTERM is acted on promptly.
        jax.block_until_ready(pending[-2])
      done = step + 1
      stop = preemption.agreed()
      if done == start + 1:  # The first step compiles: time from its end (no event of its own,
        jax.block_until_ready(metrics)  # so a resumed run logs at the steps one run would).
        last_log = (time.time(), done)
      is_end = done == config.num_steps
      if done % config.log_every == 0 or is_end or stop:
        flush(done)
      # The checkpoint comes before evaluating and sampling: a preemption's grace period, or a
      # failure in either, never costs it.
      if done % config.checkpoint_every == 0 or is_end or stop:
        flush(done)  # Never checkpoint a state whose loss has not been checked.
        paused(save, done)
      if stop:
        logging.warning('saved step %d after %s; relaunch the same command to continue', done,
                        preemption.signal_name or "another process's stop signal")
      do_eval = done % config.eval_every == 0 or is_end  # Only those due: a stop is prompt.
      do_sample = done % config.sample_every == 0 or is_end
      if do_eval or do_sample:
        paused(eval_and_sample, done, do_eval, do_sample)
      if stop:
        break
  finally:
    mngr.wait_until_finished()  # An in-flight save completes even when the loop raised.
    mngr.close()
    writer.close()
  return replicas.unreplicate(state).replace(carry=replicas.gather_rows(carry))


def write_samples(config, model, params, vocab, source_ids, step, root_key, writer, workdir):
  """Samples at each temperature, primed with a random window of `source_ids` (as the tutorial)."""
  key = jax.random.fold_in(jax.random.fold_in(root_key, SAMPLE), step)
  length = min(config.sample_prompt_length, len(source_ids) - 1)
  start = np.random.default_rng([config.seed, step, SAMPLE]).integers(0, len(source_ids) - length)
  prompt = source_ids[start:start + length].astype(np.int32)[None]
  lines = []
  for t, temperature in enumerate(config.sample_temperatures):
    out = sample.generate(model, params, prompt, jax.random.fold_in(key, t), config.sample_length,
                          temperature)
    text = vocab.decode(prompt[0]) + vocab.decode(out[0])
    logging.info('sample at step %d, temperature %.2f:\n%s', step, temperature, text)
    writer.text(f'sample/temperature_{temperature}', text, step)
    lines.append(f'--- step {step}, temperature {temperature}\n{text}\n')
  with open(os.path.join(workdir, 'samples.txt'), 'a', encoding='utf-8') as f:
    f.writelines(lines)


# ----------------------------------------------------------------------------- inference restore


def load_run(workdir: str, step: int | None = None):
  """(config, vocab, model, params) of a trained workdir, on this machine's default device."""
  config = checkpoint.load_config(workdir)
  vocab = data.Vocab.load(checkpoint.vocab_path(workdir))
  model = model_lib.from_config(config, len(vocab))
  mngr = checkpoint.manager(workdir, read_only=True)
  if mngr.latest_step() is None:
    raise UserError(f'{workdir} has no checkpoint yet; train it first (python -m lstmgen.main '
                    f'--config=... --workdir={workdir}) or pick another --workdir')
  if step is not None and step not in mngr.all_steps():
    raise UserError(f'{workdir} has no checkpoint at step {step}; it has {list(mngr.all_steps())}')
  target = jax.eval_shape(lambda: init_state(model, make_optimizer(config), jax.random.key(0),
                                             config))
  state = checkpoint.restore(mngr, target, step, move_aside=False)
  mngr.close()
  return config, vocab, model, state.params
