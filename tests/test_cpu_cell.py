"""`cpu_cell`'s fused step kernels compute what the model's jax.numpy steps compute."""

import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmgen import model as model_lib

needs_kernels = pytest.mark.skipif(not model_lib.use_kernels(),
                                   reason='no C++ compiler: cpu_cell kernels unavailable')


def _loss_and_grads(dtype, cpu_kernels, batch=5, hidden=20):
  """A 2-layer model's loss and gradients, odd sizes: rows and units not multiples of a vector."""
  tokens = jax.random.randint(jax.random.key(0), (batch, 9), 0, 13)
  carry = tuple((jax.random.normal(jax.random.key(2 * l + 1), (batch, hidden)),
                 jax.random.normal(jax.random.key(2 * l + 2), (batch, hidden))) for l in range(2))
  model = model_lib.CharLSTM(vocab_size=13, embed_size=6, hidden_size=hidden, num_layers=2,
                             dtype=jnp.dtype(dtype), cpu_kernels=cpu_kernels)
  params = model.init(jax.random.key(9), tokens)['params']
  # Every parameter moved off its initial value (biases start at zero or the forget bias).
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(10), len(leaves))
  params = treedef.unflatten([p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])

  def loss(params, carry):
    logits, (layer0, layer1) = model.apply({'params': params}, tokens, carry)
    # Both final states enter the loss, so dc and dh flow back through both layers.
    return (jax.nn.log_softmax(logits)[..., 3].mean() + 0.3 * jnp.sum(layer1[0]) +
            0.7 * jnp.sum(layer0[1]))

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, carry)


@needs_kernels
@pytest.mark.parametrize('dtype,tol', [('float32', 1e-5), ('bfloat16', 2e-2)])
def test_kernels_give_the_loss_and_gradients_of_the_jax_numpy_steps(dtype, tol):
  (loss, grads), (ref_loss, ref_grads) = (_loss_and_grads(dtype, True),
                                          _loss_and_grads(dtype, False))
  np.testing.assert_allclose(loss, ref_loss, rtol=tol)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
    scale = float(jnp.abs(b).max())
    np.testing.assert_allclose(a, b, atol=tol * scale, err_msg=jax.tree_util.keystr(path))


@needs_kernels
def test_kernels_are_deterministic_across_calls():
  # Rows are shared out between two threads as they come free; the bias gradient must still be
  # summed in one fixed order.
  first = _loss_and_grads('float32', True, batch=64, hidden=32)
  for _ in range(3):
    again = _loss_and_grads('float32', True, batch=64, hidden=32)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
      np.testing.assert_array_equal(a, b)


_FALLBACK = '''
import jax, numpy as np
from lstmgen import cpu_cell, model as model_lib
import test_cpu_cell as t
print('available', cpu_cell.available(), flush=True)
for a, b in zip(jax.tree.leaves(t._loss_and_grads('float32', True)),
                jax.tree.leaves(t._loss_and_grads('float32', False))):
  np.testing.assert_array_equal(a, b)
print('fell back')
'''


def test_without_a_compiler_the_model_falls_back_to_jax_numpy_with_one_warning(tmp_path):
  env = {**os.environ, 'CXX': str(tmp_path / 'no-such-compiler'),
         'XDG_CACHE_HOME': str(tmp_path / 'cache'), 'JAX_PLATFORMS': 'cpu',
         'PYTHONPATH': os.pathsep.join([os.path.dirname(__file__), os.getcwd()])}
  out = subprocess.run([sys.executable, '-c', _FALLBACK], env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  assert 'available False' in out.stdout and 'fell back' in out.stdout
  warnings = [l for l in out.stderr.splitlines() if 'jax.numpy' in l]
  assert len(warnings) == 1, out.stderr
  assert not os.listdir(tmp_path / 'cache' / 'lstmgen')  # No half-written library left behind.


_DIRECT = '''
import jax, jax.numpy as jnp
from lstmgen import model as model_lib
x = jnp.ones((3, 2, 8))
hs, _ = model_lib.lstm_recurrence(jnp.ones((2, 8)) * 0.1, jnp.zeros(8), x, jnp.zeros((2, 2)),
                                  jnp.zeros((2, 2)), jnp.float32, 1, True)
print('ran', float(hs.sum()))
'''


@needs_kernels
def test_the_recurrence_asked_for_kernels_builds_them_itself():
  # Without going through the module (which checks `use_kernels` first), in a fresh process.
  out = subprocess.run([sys.executable, '-c', _DIRECT], capture_output=True, text=True,
                       timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert out.returncode == 0 and 'ran' in out.stdout, out.stderr


_BUILD = '''
from lstmgen import cpu_cell
print('available', cpu_cell.available())
'''


@needs_kernels
def test_a_new_build_deletes_builds_unused_for_a_month_and_keeps_the_rest(tmp_path):
  cache = tmp_path / 'lstmgen'
  cache.mkdir()
  for name, days in (('cpu_cell_old.so', 40), ('cpu_cell_recent.so', 2), ('notes.so', 400)):
    (cache / name).write_bytes(b'')
    past = time.time() - days * 24 * 3600
    os.utime(cache / name, (past, past))
  env = {**os.environ, 'XDG_CACHE_HOME': str(tmp_path), 'JAX_PLATFORMS': 'cpu'}
  out = subprocess.run([sys.executable, '-c', _BUILD], env=env, capture_output=True, text=True,
                       timeout=300)
  assert 'available True' in out.stdout, out.stderr
  names = sorted(os.listdir(cache))
  assert 'cpu_cell_old.so' not in names
  assert {'cpu_cell_recent.so', 'notes.so'} <= set(names) and len(names) == 3  # + the new build.
