"""The sampling loop, driven by step functions whose answers are known."""

import jax
import jax.numpy as jnp
import numpy as np

from lstmgen import model as model_lib
from lstmgen import sample

V = 7


def fixed_step(carry, token_B):
  """Logits that depend only on the previous token: next = (token * 3 + 1) % V is the favourite."""
  favourite = (token_B * 3 + 1) % V
  logits = jax.nn.one_hot(favourite, V) * 2.0 + jnp.linspace(0, 1, V)
  return carry + 1, logits


def run(temperature, key=0, top_k=0, top_p=1.0, length=20, batch=3):
  start = jnp.arange(batch) % V
  _, logits = fixed_step(0, start)
  tokens, (count, _) = jax.jit(sample.sample_loop, static_argnums=(0, 4, 6, 7))(
      fixed_step, 0, logits, jax.random.key(key), length, temperature, top_k, top_p)
  return np.asarray(tokens), int(count), np.asarray(start)


def greedy_path(start, length):
  out, token = [], start
  for _ in range(length):
    token = (token * 3 + 1) % V
    out.append(token)
  return np.stack(out, axis=1)


def test_temperature_zero_is_argmax_and_carries_state():
  tokens, count, start = run(0.0)
  np.testing.assert_array_equal(tokens, greedy_path(start, 20))
  assert count == 20  # The carry went through every step.


def test_low_temperature_approaches_argmax():
  tokens, _, start = run(1e-3, key=5)
  np.testing.assert_array_equal(tokens, greedy_path(start, 20))


def test_same_seed_same_text_other_seed_other_text():
  a, _, _ = run(1.0, key=1, length=200)
  np.testing.assert_array_equal(a, run(1.0, key=1, length=200)[0])
  assert not np.array_equal(a, run(1.0, key=2, length=200)[0])
  assert len(np.unique(a)) > 2  # At temperature 1 it really samples.


def test_top_k_1_and_tiny_top_p_are_greedy():
  _, _, start = run(0.0)
  np.testing.assert_array_equal(run(1.0, key=3, top_k=1)[0], greedy_path(start, 20))
  np.testing.assert_array_equal(run(1.0, key=3, top_p=1e-3)[0], greedy_path(start, 20))


def test_top_k_keeps_only_the_k_best():
  logits = jnp.array([[0.0, 3.0, 1.0, 2.0]])
  kept = sample.filter_logits(logits, top_k=2)
  np.testing.assert_array_equal(np.isfinite(kept[0]), [False, True, False, True])


def test_top_p_keeps_the_smallest_set_with_enough_mass():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  np.testing.assert_array_equal(np.isfinite(sample.filter_logits(logits, top_p=0.7)[0]),
                                [True, True, False, False])
  np.testing.assert_array_equal(np.isfinite(sample.filter_logits(logits, top_p=0.9)[0]),
                                [True, True, True, False])


def test_chunked_sampling_draws_the_same_text_as_one_call():
  model = model_lib.CharLSTM(vocab_size=9, embed_size=4, hidden_size=8, num_layers=2)
  prompt = jnp.array([[1, 2, 3]])
  params = model.init(jax.random.key(0), prompt)['params']
  key = jax.random.key(4)
  whole = sample.generate(model, params, prompt, key, 30, 1.0)
  state, chunks = sample.prime(model, params, prompt), []
  for offset in range(0, 30, 8):
    tokens, state = sample.continue_sampling(model, params, state, key, min(8, 30 - offset), 1.0,
                                             offset=offset)
    chunks.append(tokens)
  np.testing.assert_array_equal(whole, np.concatenate(chunks, axis=1))


def test_noise_drawn_in_blocks_gives_the_text_of_one_draw(monkeypatch):
  whole, count, _ = run(1.0, key=3, length=23)
  monkeypatch.setattr(sample, 'NOISE_BLOCK', 5)  # 4 blocks and a rest of 3.
  jax.clear_caches()  # Trace again, with the new block size.
  blocked, blocked_count, _ = run(1.0, key=3, length=23)
  np.testing.assert_array_equal(blocked, whole)
  assert count == blocked_count == 23


def test_draws_follow_softmax_of_logits_over_temperature():
  logits = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
  step = lambda carry, token_B: (carry, jnp.broadcast_to(logits, (token_B.shape[0], 4)))
  for temperature in (1.0, 0.5):
    tokens, _ = jax.jit(sample.sample_loop, static_argnums=(0, 4))(
        step, 0, jnp.broadcast_to(logits, (2000, 4)), jax.random.key(0), 10, temperature)
    freq = np.bincount(np.asarray(tokens).ravel(), minlength=4) / tokens.size
    # 20,000 draws: the standard error of each frequency is under 0.004.
    np.testing.assert_allclose(freq, jax.nn.softmax(logits / temperature), atol=0.015)
