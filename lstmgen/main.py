"""Trains a character LSTM: python -m lstmgen.main --config=configs/grimm.py --workdir=DIR.

The only module that defines training flags; `config` and `workdir` flow down from here.
"""

import contextlib
import os
import socket
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

from lstmgen.cli import command, parse_flags
from lstmgen.errors import UserError

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, samples.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/grimm.py. Optional for a workdir that holds a run: '
    'it resumes with its saved config (configs/resume.py:WORKDIR changes some of its fields).',
    lock_config=True)
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for a multi-process run on a manual '
    'cluster (with --num_processes and --process_id). Not needed on TPU VM pods.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a manual cluster.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index in a manual cluster.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', None, 'Call jax.distributed.initialize() with auto-detection (SLURM, TPU, ...). '
    'Default: on for multi-worker TPU VM slices, else off.')
flags.mark_flags_as_required(['workdir'])


def init_distributed() -> None:
  """Joins the multi-controller runtime when asked, before JAX touches a backend."""
  import jax  # pylint: disable=g-import-not-at-top
  auto = _DISTRIBUTED.value or (_DISTRIBUTED.value is None and
                                ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''))
  if _COORDINATOR.value or auto:
    # Collectives between processes' CPU devices (jax 0.10's default; older versions had none).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if _COORDINATOR.value:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      raise UserError('--coordinator_address needs --num_processes and --process_id')
    if _PROCESS_ID.value == 0:
      check_port_free(_COORDINATOR.value)
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif auto:
    jax.distributed.initialize()  # Detects the cluster: TPU VM slices, SLURM, ...
  if jax.process_count() > 1 and jax.default_backend() == 'cpu':
    connect_gloo()
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)  # Process 0 speaks for the run.


def check_port_free(address: str) -> None:
  """Process 0 hosts the coordinator: a busy port there would crash jax.distributed (seen: a
  segfault, or an RPC-server error in every process)."""
  _, _, port = address.rpartition(':')
  if not port.isdigit():
    raise UserError(f'--coordinator_address={address} needs a port: host:port')
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    try:
      sock.bind(('', int(port)))
    except OSError as e:
      raise UserError(f'--coordinator_address={address}: port {port} cannot be used '
                      f'({e.strerror}); pick a free port') from None


def connect_gloo() -> None:
  """Makes the gloo connections of every later collective now, while the processes are in step.

  Gloo gives a process 30 s to meet its peers when it first connects a set of devices (at the
  first collective over them), and one process can reach the first training step far later than
  another (imports or compiles on a loaded machine, a slow disk): the run then dies with "Gloo
  context initialization failed". So both device sets lstmgen's collectives use are connected
  here, right after a barrier of the coordination service, which waits minutes: all devices (the
  gradient pmean) and one device per process (process_allgather, Orbax's barriers). A made
  connection then waits for a late peer (tested: 100 s late at the first step).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from orbax.checkpoint import multihost  # pylint: disable=g-import-not-at-top
  multihost.get_barrier_sync_fn()(key='lstmgen_connect_gloo', timeout_ms=10 * 60 * 1000)
  ones = np.ones(jax.local_device_count(), np.int32)
  jax.block_until_ready(jax.pmap(lambda x: jax.lax.psum(x, 'all'), axis_name='all')(ones))
  multihost_utils.process_allgather(np.int32(0))


@contextlib.contextmanager
def exit_at_once_if_distributed():
  """In a multi-process run, a process that fails exits right away, with its status.

  Python's normal exit would first wait in jax.distributed's shutdown barrier (5 min) for peers
  that are themselves blocked in a collective waiting for it, and all that time neither
  launch/local.sh nor a pod's scheduler could see it had failed (seen: a process whose corpus
  failed to load hung for 5 min). Its own cleanup has run by then: the training loop's `finally`
  has completed any checkpoint write.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    yield
    return
  try:
    yield
  except SystemExit as e:
    status = e.code if isinstance(e.code, int) else 1
  except UserError as e:
    print(f'lstmgen: error: {e}', file=sys.stderr)
    status = 2
  except jax.errors.JaxRuntimeError as e:  # Mostly a collective whose peer has gone.
    print(f'lstmgen: error: {str(e).splitlines()[0]}; if another process of this run failed, '
          'its own error says why', file=sys.stderr)
    status = 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    status = 1
  else:
    return
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access


@command
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}; flags are written '
                    '--name=value (see --help)')
  config = _CONFIG.value
  if config is None:  # The workdir alone resumes its run.
    from lstmgen import checkpoint  # pylint: disable=g-import-not-at-top
    if not os.path.exists(checkpoint.config_path(_WORKDIR.value)):
      raise UserError(f'{_WORKDIR.value} holds no run to resume; start one with a config file: '
                      f'--config=configs/grimm.py --workdir={_WORKDIR.value}')
    config = checkpoint.load_config(_WORKDIR.value)
  init_distributed()
  from lstmgen import train  # Imported after flag parsing: JAX starts only for a valid command.
  with exit_at_once_if_distributed():
    try:
      train.train_and_evaluate(config, _WORKDIR.value)
    except FloatingPointError as e:
      print(f'lstmgen: error: {e}', file=sys.stderr, flush=True)
      sys.exit(1)


if __name__ == '__main__':
  from lstmgen import hostmem  # pylint: disable=g-import-not-at-top
  hostmem.reexec_with_huge_pages()
  app.run(main, flags_parser=parse_flags)
