"""Sampling's one-character step equals the model fed one token at a time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstmgen import decode
from lstmgen import model as model_lib
from lstmgen import sample

V = 11


def _model_and_params(num_layers, dtype=jnp.float32):
  model = model_lib.CharLSTM(vocab_size=V, embed_size=4, hidden_size=8, num_layers=num_layers,
                             dtype=dtype)
  tokens = jax.random.randint(jax.random.key(0), (5, 12), 0, V)
  return model, model.init(jax.random.key(1), tokens)['params'], tokens


@pytest.mark.parametrize('num_layers', [1, 2, 3])  # 3: layer 2's input product is not batched.
@pytest.mark.parametrize('batch_size', [1, 2, 5])  # 1 and 2: the batched step.
def test_step_equals_the_model_one_token_at_a_time(num_layers, batch_size):
  model, params, tokens = _model_and_params(num_layers)
  tokens = tokens[:batch_size]
  _, carry = model.apply({'params': params}, tokens[:, :5])  # A primed, non-zero state.
  stepper = decode.make_stepper(model, params, batch_size)
  step = jax.jit(stepper.step)
  state = stepper.enter(carry)
  for t in range(5, tokens.shape[1]):
    state, logits = step(state, tokens[:, t])
    ref_logits, carry = model.apply({'params': params}, tokens[:, t:t + 1], carry)
    np.testing.assert_allclose(logits, ref_logits[:, 0], rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(stepper.leave(state)), jax.tree.leaves(carry)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('batch_size', [1, 5])
def test_bfloat16_step_stays_close_to_the_bfloat16_model(batch_size):
  model, params, tokens = _model_and_params(2, jnp.bfloat16)
  tokens = tokens[:batch_size]
  _, carry = model.apply({'params': params}, tokens[:, :5])
  stepper = decode.make_stepper(model, params, batch_size)
  _, logits = stepper.step(stepper.enter(carry), tokens[:, 5])
  ref_logits, _ = model.apply({'params': params}, tokens[:, 5:6], carry)
  np.testing.assert_allclose(logits, ref_logits[:, 0], atol=2e-2)


@pytest.mark.parametrize('batch_size', [1, 5])
def test_generate_draws_what_the_models_own_logits_give(batch_size):
  """The whole sampler against a plain reference: model.apply per token and the same noise."""
  model, params, tokens = _model_and_params(2)
  tokens = tokens[:batch_size]
  prompt, key, length = tokens[:, :6], jax.random.key(7), 25
  got = sample.generate(model, params, prompt, key, length, 0.8)
  logits, carry = model.apply({'params': params}, prompt)
  logits, want = logits[:, -1], []
  for p in range(length):
    noise = jax.random.gumbel(jax.random.fold_in(key, p), logits.shape)
    token = jnp.argmax(logits / 0.8 + noise, axis=-1)
    want.append(token)
    logits, carry = model.apply({'params': params}, token[:, None], carry)
    logits = logits[:, 0]
  np.testing.assert_array_equal(got, np.stack(want, axis=1))
  assert len(np.unique(got)) > 2  # It really sampled.
