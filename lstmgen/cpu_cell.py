"""The LSTM cell's per-step elementwise work as fused C++ kernels on XLA's CPU backend.

In the recurrence's scanned steps XLA's CPU backend splits the cell's elementwise work into many
small fusions, copies and converts (in a backward step: the read-ahead slice, the gate-gradient
concatenation, its bf16 convert, the in-place write and the bias-gradient reduce), each its own
pass over [B, 4H] with its own dispatch. `cpu_cell.cc` does each step's work in one pass, in
place in the recurrence's buffers, on this thread and one more of XLA's pool. It also makes the
transposed bf16 copies that bf16 weight gradients multiply (`transpose_to_bf16`), which XLA's
CPU transpose makes at ~1 GB/s.

The kernels are compiled on first use (about a second) with the host's C++ compiler for the
host's CPU (-march=native) into ~/.cache/lstmgen, and registered as XLA FFI targets. Without a
compiler `available()` is False and the model runs its jax.numpy steps: the same arithmetic,
rounded differently in the last bits. Other backends never use the kernels.
"""

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import logging

from lstmgen import hostcpu

_SOURCE = os.path.join(os.path.dirname(__file__), 'cpu_cell.cc')
# Builds not loaded for this long (other sources, JAX versions, compilers or CPUs) are deleted
# when a new one is made, so upgrades do not pile up libraries in the cache.
_UNUSED_DAYS = 30


def _flags() -> tuple[str, ...]:
  # GCC sizes vectors for AVX-512 CPUs at 256 bits unless told otherwise; the loops here are
  # long and simple enough for 512.
  wide = ('-mprefer-vector-width=512',) if platform.machine() in ('x86_64', 'AMD64') else ()
  return ('-O3', '-march=native', *wide, '-std=c++17', '-shared', '-fPIC')


def _cache_dir() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'lstmgen')


def _library_path(compiler: str) -> str:
  """Where the build for this source, jaxlib, compiler and CPU lives (-march=native: a home
  directory shared by machines with different CPUs gets one build per CPU)."""
  with open(_SOURCE, 'rb') as f:
    key = hashlib.sha256(f.read())
  cpu = sorted(hostcpu.cpu_flags(hostcpu.read_cpuinfo()) or ())
  key.update(' '.join((jax.__version__, compiler, *_flags(), jax.ffi.include_dir(),
                       platform.machine(), *cpu)).encode())
  return os.path.join(_cache_dir(), f'cpu_cell_{key.hexdigest()[:16]}.so')


def _build(compiler: str, path: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  # Built under a temporary name and renamed: concurrent processes (several hosts on one
  # machine) never load a half-written library.
  fd, tmp = tempfile.mkstemp(suffix='.so', dir=os.path.dirname(path))
  os.close(fd)
  try:
    subprocess.run([compiler, *_flags(), '-I', jax.ffi.include_dir(), _SOURCE, '-o', tmp],
                   check=True, capture_output=True, text=True)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  _prune(keep=path)


def _prune(keep: str) -> None:
  """Deletes the cache's other builds that no process has loaded for `_UNUSED_DAYS`.

  A load touches its library (`available`), so its mtime is its last use. Deleting one that a
  running process has loaded is harmless on POSIX: the mapping outlives the name.
  """
  cutoff = time.time() - _UNUSED_DAYS * 24 * 3600
  directory = os.path.dirname(keep)
  for name in os.listdir(directory):
    other = os.path.join(directory, name)
    if name.startswith('cpu_cell_') and name.endswith('.so') and other != keep:
      try:
        if os.path.getmtime(other) < cutoff:
          os.remove(other)
      except OSError:  # Gone already (another process pruned it), or not ours to delete.
        pass


@functools.cache
def available() -> bool:
  """Whether the kernels are built (building them now if needed) and registered."""
  if jax.default_backend() != 'cpu' or not hasattr(jax, 'ffi'):  # jax.ffi: jax >= 0.4.36.
    return False
  compiler = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++')
  if not compiler:
    logging.warning('no C++ compiler found (c++, g++ or $CXX): LSTM steps run in jax.numpy, '
                    'slower on the CPU; install one (e.g. apt install g++) to build lstmgen\'s '
                    'kernels, or set --config.cpu_kernels=False to silence this')
    return False
  path = _library_path(compiler)
  try:
    if not os.path.exists(path):
      _build(compiler, path)
    lib = ctypes.cdll.LoadLibrary(path)
    with contextlib.suppress(OSError):  # A read-only cache still works; it just is not pruned.
      os.utime(path)  # Marks it used (see `_prune`).
  except subprocess.CalledProcessError as e:
    logging.warning('building lstmgen\'s CPU kernels failed (%s), so LSTM steps run in jax.numpy: %s',
                    compiler, (e.stderr.strip().splitlines() or ['no message'])[-1])
    return False
  except OSError as e:
    logging.warning('lstmgen\'s CPU kernels could not be built or loaded (%s); LSTM steps run in '
                    'jax.numpy', e)
    return False
  for name in ('LstmCellForwardF32', 'LstmCellForwardBF16', 'LstmCellBackwardF32',
               'LstmCellBackwardBF16', 'TransposeToBf16'):
    jax.ffi.register_ffi_target(f'lstmgen_{name}', jax.ffi.pycapsule(getattr(lib, name)),
                                platform='cpu')
  return True


def _ffi_call(target: str, results, **kwargs):
  """jax.ffi.ffi_call of one of the kernels, built and registered first if need be."""
  if not available():
    raise RuntimeError(f"lstmgen's CPU kernels are unavailable here (see the warning logged "
                       f"above), so {target} cannot run; use kernels=False")
  return jax.ffi.ffi_call(target, results, **kwargs)


def _f32(shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def _target(step: str, dtype) -> str:
  return f'lstmgen_LstmCell{step}{"BF16" if jnp.dtype(dtype) == jnp.bfloat16 else "F32"}'


def forward_step(buf_TxBx4H, cs_TxBxH, hs_TxBxH, t, b_4H, rec_Bx4H, c0_BxH, dtype):
  """Step t of the forward recurrence, in place: gates = buf[t] + b + rec, buf[t] := their
  activations, cs[t] and hs[t] := the new c and h (c_prev is cs[t - 1], or c0 at t = 0).

  Returns (buf, cs, hs, h in `dtype` for the next recurrent matmul). The three buffers are
  updated in place: they must be the caller's last use of them.
  """
  B, H = c0_BxH.shape
  return _ffi_call(_target('Forward', dtype),
                   (_f32(buf_TxBx4H.shape), _f32(cs_TxBxH.shape), _f32(hs_TxBxH.shape),
                    jax.ShapeDtypeStruct((B, H), dtype)),
                   input_output_aliases={0: 0, 1: 1, 2: 2})(
                       buf_TxBx4H, cs_TxBxH, hs_TxBxH, jnp.asarray(t, jnp.int32), b_4H, rec_Bx4H,
                       c0_BxH)


def backward_step(buf_TxBx4H, t, dhs_TxBxH, cs_TxBxH, c0_BxH, dh_BxH, dc_BxH, db_4H, dtype):
  """Step t of the backward recurrence: buf[t] := gate gradients (from the activations there).

  Returns (buf, the gate gradients in `dtype` for the recurrent matmul, the next step's dc,
  db + this step's bias gradient).
  """
  B, H = c0_BxH.shape
  return _ffi_call(_target('Backward', dtype),
                   (_f32(buf_TxBx4H.shape), jax.ShapeDtypeStruct((B, 4 * H), dtype), _f32((B, H)),
                    _f32((4 * H,))),
                   input_output_aliases={0: 0})(
                       buf_TxBx4H, jnp.asarray(t, jnp.int32), dhs_TxBxH, cs_TxBxH, c0_BxH, dh_BxH,
                       dc_BxH, db_4H)


def transpose_to_bf16(x_NxI):
  """x.T in bfloat16, from float32 (XLA's CPU transpose-and-convert of a [12800, 256] operand
  took 5.3 ms on the EPYC)."""
  N, I = x_NxI.shape
  return _ffi_call('lstmgen_TransposeToBf16', jax.ShapeDtypeStruct((I, N), jnp.bfloat16))(
      x_NxI.astype(jnp.float32))
