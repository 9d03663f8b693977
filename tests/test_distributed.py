"""Several processes joined by jax.distributed on 127.0.0.1 train exactly what one process does."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from lstmgen import writer
from tests.conftest import ROOT, device_env, train_cli

ARGS = ('--config.model.dropout=0.3', '--config.log_every=1')


def launch_local(processes, devices, workdir, corpus, *args):
  proc = subprocess.run(
      ['bash', 'launch/local.sh', str(processes), str(devices), '--config=configs/tiny.py',
       f'--workdir={workdir}', f'--config.data.path={corpus}', *args],
      cwd=ROOT, env={**os.environ, 'PYTHON': sys.executable}, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def metrics(workdir):
  return [(e['step'], e.get('train_loss', e.get('val_loss'))) for e in writer.read(str(workdir))]


def assert_same_run(a, b):
  assert [s for s, _ in a] == [s for s, _ in b]
  np.testing.assert_allclose([v for _, v in a], [v for _, v in b], rtol=1e-5)


def run_together(argvs, envs, timeout=300):
  """Starts one process per argv at once, as a cluster would; (status, stdout, stderr) of each."""
  procs = [subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for argv, env in zip(argvs, envs)]
  try:
    outs = [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      p.kill()
  return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def free_port(low=None, high=None) -> str:
  """A port nothing holds: any (as launch/local.sh picks one), or one in [low, high)."""
  rng = np.random.default_rng()
  while True:
    with socket.socket() as s:
      try:
        s.bind(('', 0 if low is None else int(rng.integers(low, high))))
      except OSError:
        continue
      return str(s.getsockname()[1])


def test_two_processes_of_two_devices_equal_one_device_and_resume_across(tmp_path, corpus_file):
  one_device = device_env(1)
  train_cli(tmp_path / 'single', corpus_file, '--config.num_steps=30', *ARGS, env=one_device)
  launch_local(2, 2, tmp_path / 'pod', corpus_file, '--config.num_steps=20', *ARGS)
  single = metrics(tmp_path / 'single')
  assert_same_run(metrics(tmp_path / 'pod'), [m for m in single if m[0] <= 20])
  # Only process 0 writes: one copy of each event.
  assert len(metrics(tmp_path / 'pod')) == len([m for m in single if m[0] <= 20])

  # The 2-process checkpoint resumes in one process, and a 1-process checkpoint in two.
  train_cli(tmp_path / 'pod', corpus_file, '--config.num_steps=30', *ARGS, env=one_device)
  assert_same_run(metrics(tmp_path / 'pod'), single)
  train_cli(tmp_path / 'back', corpus_file, '--config.num_steps=20', *ARGS, env=one_device)
  launch_local(2, 2, tmp_path / 'back', corpus_file, '--config.num_steps=30', *ARGS)
  assert_same_run(metrics(tmp_path / 'back'), single)


def test_a_failing_process_fails_the_launch_and_leaves_nothing_running(tmp_path):
  proc = subprocess.run(
      ['bash', 'launch/local.sh', '2', '1', '--config=configs/tiny.py',
       f'--workdir={tmp_path}', f'--config.data.path={tmp_path / "missing.txt"}'],
      cwd=ROOT, env={**os.environ, 'PYTHON': sys.executable}, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 2
  assert 'corpus file' in proc.stderr and 'does not exist' in proc.stderr
  leftover = subprocess.run(['pgrep', '-f', f'workdir={tmp_path}'], capture_output=True, text=True)
  assert leftover.stdout.strip() == ''


def test_a_busy_coordinator_port_is_one_line(tmp_path, corpus_file):
  with socket.socket() as busy:
    busy.bind(('127.0.0.1', 0))
    busy.listen()
    port = busy.getsockname()[1]
    proc = train_cli(tmp_path, corpus_file, f'--coordinator_address=127.0.0.1:{port}',
                     '--num_processes=1', '--process_id=0', check=False)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  assert f'port {port} cannot be used' in proc.stderr.strip().splitlines()[-1]


def start_long_local_run(workdir, corpus, *args):
  """launch/local.sh with 2 processes of 1 device on a run too long to end by itself."""
  return subprocess.Popen(
      ['bash', 'launch/local.sh', '2', '1', '--config=configs/tiny.py', f'--workdir={workdir}',
       f'--config.data.path={corpus}', '--config.num_steps=100000', '--config.eval_every=100000',
       *args], cwd=ROOT, env={**os.environ, 'PYTHON': sys.executable}, stderr=subprocess.PIPE,
      text=True)


def test_sigterm_to_one_process_stops_every_process_at_the_same_saved_step(tmp_path, corpus_file):
  launcher = start_long_local_run(tmp_path, corpus_file, '--config.checkpoint_every=50',
                                  '--config.log_every=100')
  ckpt = tmp_path / 'checkpoints'
  while not (ckpt.is_dir() and any(d.isdigit() for d in os.listdir(ckpt))):
    assert launcher.poll() is None, launcher.stderr.read()
    time.sleep(0.1)
  second = subprocess.run(['pgrep', '-f', f'process_id=1 .*workdir={tmp_path}'],
                          capture_output=True, text=True).stdout.split()
  os.kill(int(second[0]), signal.SIGTERM)  # Only process 1 is told: a pod preempting one worker.
  try:
    _, err = launcher.communicate(timeout=120)  # Without agreement the pod hangs here.
  finally:
    launcher.terminate()  # local.sh stops its processes when told to.
    launcher.wait()
  assert launcher.returncode == 0, err[-3000:]
  saved = re.findall(r"saved step (\d+) after (?:SIGTERM|another process's stop signal)", err)
  assert len(saved) == 2 and saved[0] == saved[1], err[-3000:]
  assert int(saved[0]) in {int(d) for d in os.listdir(ckpt) if d.isdigit()}


def test_a_stopped_launcher_lets_every_process_save_before_it_exits(tmp_path, corpus_file):
  launcher = start_long_local_run(tmp_path, corpus_file, '--config.checkpoint_every=100000',
                                  '--config.log_every=20')
  while not (tmp_path / 'metrics.jsonl').exists():  # Training is under way, no checkpoint yet.
    assert launcher.poll() is None, launcher.stderr.read()
    time.sleep(0.1)
  launcher.send_signal(signal.SIGTERM)  # What a scheduler or Ctrl-C does to the launcher.
  _, err = launcher.communicate(timeout=120)
  assert launcher.returncode == 0, err[-3000:]
  saved = re.findall(r'saved step (\d+) after SIGTERM', err)
  assert len(saved) == 2 and saved[0] == saved[1], err[-3000:]
  assert os.listdir(tmp_path / 'checkpoints') == [saved[0]]


def launch_slurm(processes, workdir, corpus, *args):
  """What `srun` does: one command per process, told its rank by SLURM_* variables only."""
  port = int(free_port(61440, 65536))  # jax puts the coordinator at 61440 + job id % 4096.
  slurm = {**device_env(1), 'SLURM_JOB_ID': str(port - 61440), 'SLURM_STEP_NODELIST': '127.0.0.1',
           'SLURM_NTASKS': str(processes)}
  argv = [sys.executable, '-m', 'lstmgen.main', '--distributed', '--config=configs/tiny.py',
          f'--workdir={workdir}', f'--config.data.path={corpus}', *args]
  for status, _, err in run_together(
      [argv] * processes,
      [{**slurm, 'SLURM_PROCID': str(i), 'SLURM_LOCALID': str(i)} for i in range(processes)]):
    assert status == 0, err[-3000:]


def test_stateful_two_slurm_processes_equal_one_device_and_resume_in_one(tmp_path, corpus_file):
  args = (*ARGS, '--config.stateful=True')
  one_device = device_env(1)
  train_cli(tmp_path / 'single', corpus_file, '--config.num_steps=20', *args, env=one_device)
  # Each process carries its own rows' state; the checkpoint gathers every row from both. The
  # processes find each other as on a SLURM cluster (--distributed: jax's auto-detection).
  launch_slurm(2, tmp_path / 'pod', corpus_file, '--config.num_steps=10', *args)
  train_cli(tmp_path / 'pod', corpus_file, '--config.num_steps=20', *args, env=one_device)
  pod = [(e['step'], e.get('train_loss', e.get('val_loss'))) for e in writer.read(str(tmp_path / 'pod'))
         if not (e['step'] == 10 and 'val_loss' in e)]  # The first launch's final validation.
  assert_same_run(pod, metrics(tmp_path / 'single'))


_LATE_PEER = '''
import sys, time
import jax, numpy as np
from jax.experimental import multihost_utils
from lstmgen import main
port, pid = sys.argv[1], int(sys.argv[2])
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(f'127.0.0.1:{port}', 2, pid)
jax.devices()  # Start the backend, whose setup waits for every process, as training does.
main.connect_gloo()
# Gloo gives a peer 30 s to turn up at the first collective over a set of devices.
if pid == 1:  # Late for the first over one device per process (Orbax's first barrier)...
  time.sleep(32)
flags = multihost_utils.process_allgather(np.int32(pid))
if pid == 0:  # ...and the other one late for the first over all devices (the first step).
  time.sleep(32)
total = jax.pmap(lambda x: jax.lax.psum(x, 'i'), axis_name='i')(np.ones(2, np.float32))
print(float(total[0]), flags.tolist())
'''


def test_a_process_failing_alone_exits_at_once_and_so_does_its_peer(tmp_path, corpus_file):
  """A cluster where one host lacks the corpus: its process says why and both exit promptly.

  Left to Python's exit, the failing process waited 5 min in jax.distributed's shutdown barrier,
  so a launcher could not see that it had failed.
  """
  port, missing = free_port(), tmp_path / 'missing.txt'
  # Separate workdirs: in a shared one, process 1 may find process 0's config.json (another path)
  # and fail on that instead, as it should; this test wants one known error.
  (status0, _, err0), (status1, _, err1) = run_together(
      [[sys.executable, '-m', 'lstmgen.main', '--config=configs/tiny.py',
        f'--workdir={tmp_path}/{i}', f'--config.data.path={corpus_file if i == 0 else missing}',
        f'--process_id={i}', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2']
       for i in range(2)],
      [device_env(1)] * 2, timeout=150)
  assert status1 == 2, err1[-3000:]
  assert err1.strip().splitlines() == [
      f'lstmgen: error: corpus file {missing} does not exist; check --config.data.path']
  assert status0 == 1, err0[-3000:]
  assert 'if another process of this run failed' in err0.strip().splitlines()[-1]


def test_a_process_reaching_its_first_collective_late_still_joins_it():
  """A loaded machine can put one process's first collective 30+ s after another's (CI did)."""
  port = free_port()
  for status, out, err in run_together([[sys.executable, '-c', _LATE_PEER, port, str(i)]
                                        for i in range(2)], [device_env(2)] * 2, timeout=200):
    assert status == 0, err[-3000:]
    assert out.strip().split('\n')[-1] == '4.0 [0, 1]'
