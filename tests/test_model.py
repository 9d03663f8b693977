"""The fast LSTM equals flax.linen's plain LSTMCell, and the model continues sequences."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmgen import dropout
from lstmgen import model as model_lib

B, T, D, H = 3, 7, 5, 6


def _layer_and_inputs(unroll=1, cpu_kernels=False):
  layer = model_lib.LSTMLayer(H, forget_bias=0.5, unroll=unroll, cpu_kernels=cpu_kernels)
  x = jax.random.normal(jax.random.key(1), (T, B, D))
  c0 = jax.random.normal(jax.random.key(2), (B, H))
  h0 = jax.random.normal(jax.random.key(3), (B, H))
  params = layer.init(jax.random.key(0), (c0, h0), x)['params']
  return layer, params, x, (c0, h0)


def _flax_cell_over_time(cell_params, x_TxBxD, carry):
  """The reference: flax.linen.LSTMCell applied step by step (a Python loop, on purpose)."""
  cell = nn.LSTMCell(H)
  c, h = carry
  hs = []
  for t in range(x_TxBxD.shape[0]):
    (c, h), out = cell.apply({'params': cell_params}, (c, h), x_TxBxD[t])
    hs.append(out)
  return jnp.stack(hs), (c, h)


# unroll 3 does not divide T: a partly unrolled last step. cpu_kernels: `cpu_cell`'s fused steps.
@pytest.mark.parametrize('unroll,cpu_kernels', [(1, False), (3, False), (1, True), (3, True)])
def test_fast_layer_equals_flax_lstm_cell_outputs_and_gradients(unroll, cpu_kernels):
  if cpu_kernels and not model_lib.use_kernels():
    pytest.skip('no C++ compiler: cpu_cell kernels unavailable')
  layer, params, x, carry = _layer_and_inputs(unroll, cpu_kernels)
  weights = jax.random.normal(jax.random.key(4), (T, B, H))

  def fast_loss(params, x, carry):
    (c, h), hs = layer.apply({'params': params}, carry, x)
    return jnp.sum(hs * weights) + jnp.sum(c * 0.3) + jnp.sum(h * 0.7)

  def ref_loss(params, x, carry):
    hs, (c, h) = _flax_cell_over_time(model_lib.to_flax_cell_params(params), x, carry)
    return jnp.sum(hs * weights) + jnp.sum(c * 0.3) + jnp.sum(h * 0.7)

  (c, h), hs = layer.apply({'params': params}, carry, x)
  ref_hs, (ref_c, ref_h) = _flax_cell_over_time(model_lib.to_flax_cell_params(params), x, carry)
  np.testing.assert_allclose(hs, ref_hs, atol=1e-5)
  np.testing.assert_allclose(c, ref_c, atol=1e-5)
  np.testing.assert_allclose(h, ref_h, atol=1e-5)

  fast = jax.grad(fast_loss, argnums=(0, 1, 2))(params, x, carry)
  # Differentiate the reference through the fused layout so both gradients share one structure.
  ref = jax.grad(lambda p, x, c: ref_loss(p, x, c), argnums=(0, 1, 2))(params, x, carry)
  for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('gather_inputs', [False, True])  # True: sampling's `input_table` path.
def test_scan_equals_feeding_one_token_at_a_time(gather_inputs):
  model = model_lib.CharLSTM(vocab_size=11, embed_size=4, hidden_size=8, num_layers=2)
  tokens = jax.random.randint(jax.random.key(0), (2, 9), 0, 11)
  params = model.init(jax.random.key(1), tokens)['params']
  logits, carry = model.apply({'params': params}, tokens)
  table = model_lib.input_table(params) if gather_inputs else None
  step_carry, step_logits = None, []
  for t in range(tokens.shape[1]):
    out, step_carry = model.apply({'params': params}, tokens[:, t:t + 1], step_carry,
                                  input_table_Vx4H=table)
    step_logits.append(out)
  np.testing.assert_allclose(logits, jnp.concatenate(step_logits, 1), atol=1e-5)
  for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(step_carry)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_compute_stays_close_to_float32():
  tokens = jax.random.randint(jax.random.key(0), (4, 20), 0, 11)
  kwargs = dict(vocab_size=11, embed_size=8, hidden_size=16, num_layers=2)
  params = model_lib.CharLSTM(**kwargs).init(jax.random.key(1), tokens)['params']
  f32, _ = model_lib.CharLSTM(**kwargs).apply({'params': params}, tokens)
  bf16, _ = model_lib.CharLSTM(**kwargs, dtype=jnp.bfloat16).apply({'params': params}, tokens)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, atol=5e-2)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('kernels', [False, True])
def test_weight_gradient_sums_a_transpose_b_over_time_and_batch(dtype, kernels):
  """On the CPU a bf16 weight gradient is a plain matmul over a transposed copy of `a` (made by
  `cpu_cell` with kernels: sizes that are not whole 32 x 32 tiles)."""
  if kernels and not model_lib.use_kernels():
    pytest.skip('no C++ compiler: cpu_cell kernels unavailable')
  a = jax.random.normal(jax.random.key(0), (5, 13, 37))
  b = jax.random.normal(jax.random.key(1), (5, 13, 6))
  rounded = [np.asarray(x.astype(dtype).astype(jnp.float32), np.float64) for x in (a, b)]
  grad = jax.jit(model_lib._weight_grad, static_argnums=(2, 3))  # pylint: disable=protected-access
  np.testing.assert_allclose(grad(a, b, dtype, kernels), np.einsum('tbi,tbo->io', *rounded),
                             rtol=1e-5, atol=1e-4)


def test_bfloat16_gradients_stay_close_to_float32():
  tokens = jax.random.randint(jax.random.key(0), (4, 20), 0, 11)
  kwargs = dict(vocab_size=11, embed_size=8, hidden_size=16, num_layers=2)
  params = model_lib.CharLSTM(**kwargs).init(jax.random.key(1), tokens)['params']

  def grads(dtype):
    model = model_lib.CharLSTM(**kwargs, dtype=dtype)
    def loss(params):
      logits, _ = model.apply({'params': params}, tokens[:, :-1],
                              input_table_Vx4H=model_lib.input_table(params, dtype))
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))
    return jax.grad(loss)(params)

  for f32, bf16 in zip(jax.tree.leaves(grads(jnp.float32)), jax.tree.leaves(grads(jnp.bfloat16)),
                       strict=True):
    assert np.linalg.norm(bf16 - f32) <= 0.03 * np.linalg.norm(f32)


def test_dropout_mask_of_an_example_does_not_depend_on_its_batch_neighbours():
  model = model_lib.CharLSTM(vocab_size=11, embed_size=4, hidden_size=8, num_layers=2, dropout=0.5)
  tokens = jax.random.randint(jax.random.key(0), (4, 6), 0, 11)
  params = model.init(jax.random.key(1), tokens)['params']
  keys = jax.random.split(jax.random.key(2), 4)
  whole, _ = model.apply({'params': params}, tokens, dropout_keys_B=keys)
  half, _ = model.apply({'params': params}, tokens[2:], dropout_keys_B=keys[2:])
  np.testing.assert_allclose(whole[2:], half, atol=1e-6)
  plain, _ = model.apply({'params': params}, tokens)
  assert not np.allclose(whole, plain)


def test_weight_drop_masks_recurrent_weights_for_the_whole_batch_only_when_keyed():
  model = model_lib.CharLSTM(vocab_size=11, embed_size=4, hidden_size=8, num_layers=2,
                             weight_drop=0.5)
  tokens = jax.random.randint(jax.random.key(0), (4, 6), 0, 11)
  params = model.init(jax.random.key(1), tokens)['params']
  plain, _ = model_lib.CharLSTM(vocab_size=11, embed_size=4, hidden_size=8,
                                num_layers=2).apply({'params': params}, tokens)
  unkeyed, _ = model.apply({'params': params}, tokens)
  np.testing.assert_array_equal(unkeyed, plain)  # Evaluation and sampling never drop weights.
  key = jax.random.key(3)
  loss = lambda p, toks: model.apply({'params': p}, toks, weight_drop_key=key)[0].sum()
  assert not np.allclose(model.apply({'params': params}, tokens, weight_drop_key=key)[0], plain)
  # One mask for every example: a row's output does not depend on its neighbours.
  np.testing.assert_allclose(model.apply({'params': params}, tokens, weight_drop_key=key)[0][2:],
                             model.apply({'params': params}, tokens[2:], weight_drop_key=key)[0],
                             atol=1e-6)
  # Dropped weights get no gradient; about half of each layer's are dropped, per layer differently.
  grads = jax.grad(loss)(params, tokens)
  dropped = [np.asarray(grads[f'lstm_{i}']['wh']) == 0 for i in range(2)]
  assert all(0.3 < d.mean() < 0.7 for d in dropped) and (dropped[0] != dropped[1]).any()
  np.testing.assert_array_equal(np.asarray(grads['lstm_0']['wi']) == 0, False)


@pytest.mark.parametrize('rate', [0.5, 0.25, 0.1, 0.3])  # 1-, 2-, 16- and 16-bit draws.
def test_dropout_keeps_each_entry_independently_with_probability_one_minus_rate(rate):
  keep = np.asarray(dropout.keep(jax.random.key(0), (400, 250), rate))
  # 100,000 draws: the standard error of a frequency is under 0.0016; 0.008 is 5 of them.
  assert abs(keep.mean() - (1 - rate)) < 0.008
  # Draws cut from one random word are independent: neighbours agree as often as chance says.
  agree = (keep[:, 1:] == keep[:, :-1]).mean()
  assert abs(agree - (rate**2 + (1 - rate)**2)) < 0.008
  assert keep.shape == (400, 250)


def test_gathered_input_projections_train_like_multiplied_embeddings():
  """Training gathers layer 0's input projections from `input_table`; gradients reach embed and wi
  through the gather exactly as through embedding @ wi."""
  model = model_lib.CharLSTM(vocab_size=11, embed_size=4, hidden_size=8, num_layers=2, dropout=0.3)
  tokens = jax.random.randint(jax.random.key(0), (3, 9), 0, 11)
  params = model.init(jax.random.key(1), tokens)['params']
  keys = jax.random.split(jax.random.key(2), 3)

  def loss(params, gather):
    table = model_lib.input_table(params) if gather else None
    logits, _ = model.apply({'params': params}, tokens, dropout_keys_B=keys, input_table_Vx4H=table)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0] * jnp.arange(9))

  (plain, plain_grads), (gathered, gathered_grads) = (
      jax.value_and_grad(loss)(params, gather) for gather in (False, True))
  np.testing.assert_allclose(gathered, plain, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(gathered_grads), jax.tree.leaves(plain_grads), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert np.abs(np.asarray(plain_grads['embed']['embedding'])).sum() > 0  # The path is exercised.
