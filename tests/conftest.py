"""Shared fixtures: a small corpus written in the test, and a tiny run trained once per session."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

# Most tests launch the CLI, and every launch compiles the same tiny programs again: a compilation
# cache shared by this session's processes halves a tiny training run (23 s -> 11 s on a 2-core
# EPYC). It is fresh per session, so no test sees programs compiled by an earlier checkout.
_COMPILE_CACHE = tempfile.mkdtemp(prefix='lstmgen-test-jax-cache-')
atexit.register(shutil.rmtree, _COMPILE_CACHE, ignore_errors=True)
os.environ.update(JAX_COMPILATION_CACHE_DIR=_COMPILE_CACHE,
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position  # After the cache is set.
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_WORDS = ('once upon a time there was a king who had a daughter and the wolf came to the '
          'little house in the wood where the old woman lived with her golden bird').split()


def make_text(num_words: int = 3000, seed: int = 0) -> str:
  """A fairy-tale-ish text with a small vocabulary: enough structure for a tiny model to learn."""
  rng = np.random.default_rng(seed)
  sentences, words = [], rng.choice(_WORDS, size=num_words)
  for i in range(0, num_words, 12):
    sentences.append(' '.join(words[i:i + 12]).capitalize() + '.')
  return '\n'.join(sentences) + '\n'


TIMING = ('wall_time', 'chars_per_sec', 'steps_per_sec')


def without_timing(events: list[dict]) -> list[dict]:
  """metrics.jsonl events with the fields that depend on the machine's speed removed."""
  return [{k: v for k, v in e.items() if k not in TIMING} for e in events]


def assert_trees_equal(a, b):
  """Bit-identical pytrees (params, optimizer states)."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope='session')
def corpus_file(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp('corpus') / 'tale.txt'
  path.write_text(make_text(), encoding='utf-8')
  return str(path)


def device_env(n: int) -> dict:
  """Environment for a subprocess that sees `n` CPU devices."""
  return {'XLA_FLAGS': f'--xla_force_host_platform_device_count={n}', 'JAX_PLATFORMS': 'cpu'}


def run_module(module: str, *args: str, env: dict | None = None, timeout: float = 300,
               check: bool = True) -> subprocess.CompletedProcess:
  """Runs `python -m module args` from the repository root, as a user would."""
  full_env = {**os.environ, **(env or {})}
  proc = subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=full_env,
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f'{module} {args} exited {proc.returncode}:\n{proc.stderr[-3000:]}')
  return proc


def train_cli(workdir, corpus, *overrides, env=None, check=True):
  return run_module('lstmgen.main', '--config=configs/tiny.py', f'--workdir={workdir}',
                    f'--config.data.path={corpus}', *overrides, env=env, check=check)


@pytest.fixture(scope='session')
def trained_workdir(tmp_path_factory, corpus_file) -> str:
  workdir = str(tmp_path_factory.mktemp('run'))
  train_cli(workdir, corpus_file, '--config.num_steps=60')
  return workdir
