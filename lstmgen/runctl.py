"""A run's hold on its workdir, and stopping on SIGTERM at a step every process agrees on."""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from lstmgen import checkpoint, data
from lstmgen.errors import UserError


def make_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'--workdir={workdir} is a file, not a folder; pick a folder for the run')
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test{os.getpid()}')
    open(probe, 'w').close()
    os.remove(probe)
  except OSError as e:
    raise UserError(f'cannot write to workdir {workdir} ({e.strerror}); pick a writable --workdir')


def check_resumable(config, workdir: str) -> None:
  """Refuses to resume a run with fields that define another run (a launch that wrote no
  checkpoint left nothing to resume: it starts over, with any config)."""
  steps = os.path.join(workdir, 'checkpoints')
  if not (os.path.isdir(steps) and any(name.isdigit() for name in os.listdir(steps))):
    return
  # A stateful run's streams and saved carry are laid out by batch row.
  fields = checkpoint.RUN_DEFINING + (('batch_size',) if config.stateful else ())
  if os.path.exists(_corpus_record(workdir)):
    # The corpus is checked by its contents (`check_corpus`): the file may have moved.
    fields = tuple(f for f in fields if f not in ('data.path', 'data.corpus'))
  differ = checkpoint.differing_fields(checkpoint.load_config(workdir), config, fields)
  if differ:
    raise UserError(f'{workdir} holds a run with a different model or data config '
                    f'({"; ".join(differ)}); use a new --workdir or the same settings')


def _corpus_record(workdir: str) -> str:
  return os.path.join(workdir, 'corpus.json')


def corpus_fingerprint(ids: np.ndarray) -> dict:
  """The encoded corpus's length and a hash of its ids: all of them up to 16 MB, else 256
  evenly spaced 64 KB blocks and the end (a multi-GB corpus is not read whole at every launch)."""
  raw = memoryview(np.ascontiguousarray(ids)).cast('B')  # The memmap itself: no copy.
  digest = hashlib.sha256()
  block = 1 << 16
  if len(raw) <= 256 * block:
    digest.update(raw)
  else:
    for start in np.linspace(0, len(raw) - block, 257).astype(np.int64):
      digest.update(raw[start:start + block])
  return {'chars': int(len(ids)), 'sha256': digest.hexdigest()}


def check_corpus(workdir: str, ids: np.ndarray, write: bool, resuming: bool) -> None:
  """Refuses to resume a run on another text than the one it was trained on; records it first.

  An edited corpus moves the train/validation split and changes every batch: the resumed run
  would no longer be the run that was saved. Before its first checkpoint a run has nothing to
  resume, and its record is written again.
  """
  now, path = corpus_fingerprint(ids), _corpus_record(workdir)
  if resuming and os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      then = json.load(f)
    if then != now:
      change = (f'{then["chars"]:,} characters then, {now["chars"]:,} now'
                if then['chars'] != now['chars'] else 'the same length, other text')
      raise UserError(f'the corpus is not the text this run was trained on ({change}); resume '
                      'with that text, or train on this one in a new --workdir')
  elif write:
    data._atomic_write(path, json.dumps(now))  # pylint: disable=protected-access


@contextlib.contextmanager
def exclusive(workdir: str, enabled: bool = True):
  """Holds workdir/.lock for the run: a second trainer on the same workdir stops at once.

  Two trainers would interleave their checkpoints, and Orbax's start-up cleanup of one deletes
  the other's in-flight save. The lock is an flock, so it goes away with the process, even on
  SIGKILL; on filesystems without flock the run goes on unguarded.
  """
  if not enabled:
    yield
    return
  path = os.path.join(workdir, '.lock')
  with open(path, 'a+') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        logging.warning('cannot lock %s (%s); not guarding against a second run', path, e)
      else:
        f.seek(0)
        holder = f.read().strip() or 'unknown'
        raise UserError(f'another lstmgen run (pid {holder}) is training in {workdir}; wait for '
                        'it to finish or stop it, or use another --workdir') from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    try:
      yield
    finally:
      f.truncate(0)  # The pid goes with the lock; the file stays for the next run.
      fcntl.flock(f, fcntl.LOCK_UN)


class Preemption:
  """Remembers a SIGTERM (a preemption) or a first Ctrl-C, so the loop can finish its step, save,
  and exit cleanly. A second Ctrl-C interrupts at once, without saving."""

  def __init__(self):
    self.flag = False
    self.signal_name = None
    try:
      signal.signal(signal.SIGTERM, self._handle)
      signal.signal(signal.SIGINT, self._handle)
    except ValueError:  # Not the main thread (e.g. called from a test runner thread).
      pass

  def _handle(self, signum, frame):
    self.signal_name = signal.Signals(signum).name
    again = ''
    if signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      again = ' (Ctrl-C again stops at once, without saving)'
    logging.warning('%s: finishing this step, saving a checkpoint, then exiting%s',
                    self.signal_name, again)
    self.flag = True

  def agreed(self) -> bool:
    """Whether any process has been told to stop; every process gets the same answer.

    Processes can see a SIGTERM at different steps. If each acted on its own flag, one would
    enter the checkpoint's barrier while the others ran the next step's collectives, and the pod
    would hang; so in a multi-process run the flags are all-gathered at every step.
    """
    if jax.process_count() == 1:
      return self.flag
    return bool(multihost_utils.process_allgather(np.array(self.flag)).any())
