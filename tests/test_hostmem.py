"""The huge-page re-exec: when it applies, and that it keeps the user's own tunables."""

from lstmgen import hostmem
from tests.conftest import run_module


def test_the_tunable_is_added_once_and_respects_opt_out_and_existing_tunables():
  env = hostmem.with_tunable({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2', 'HOME': '/x'})
  assert env['GLIBC_TUNABLES'] == f'glibc.malloc.arena_max=2:{hostmem.TUNABLE}'
  assert env['HOME'] == '/x'
  assert hostmem.with_tunable({})['GLIBC_TUNABLES'] == hostmem.TUNABLE
  assert not hostmem.wanted(env)  # Already applied: no second re-exec.
  assert not hostmem.wanted({hostmem.OPT_OUT: '1'})


def test_a_reexecuted_command_keeps_its_arguments_and_exit_status(tmp_path):
  proc = run_module('lstmgen.main', '--config=configs/tiny.py', f'--workdir={tmp_path}',
                    f'--config.data.path={tmp_path / "missing.txt"}', check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].endswith(
      f'corpus file {tmp_path / "missing.txt"} does not exist; check --config.data.path')
