"""The model one character at a time, for sampling: each step arranged for latency.

Sampling one stream is a chain of matrix-vector products, one per weight matrix and character
(three of 1 MB for the reference model), and XLA's CPU backend runs each on one core in ~11 us,
in cache or not. Here every product whose input is known once layer 0's gates are done goes into
one batched dot, which XLA spreads over the cores: each layer's recurrent product and layer 1's
input product. Layer 0's recurrent product is the one for the *next* character (its gates come
first in every step), so the state carries it. Each member of the batch is the same dot as
before: on the reference model the samples were bit for bit those of feeding `CharLSTM.apply`
one token at a time, fp32 and bf16. Measured on a 2-core AMD EPYC (Zen 4): the three products
38.5 -> 26.6 us per character (19.7 with one stream, whose products are also cut in two by
columns); 600 characters of one stream after a 100-character prompt 29.3 -> 18.6 ms.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstmgen import model as model_lib

# The model's carry, plus layer 0's recurrent product h0 @ wh0 for the next character.
State = tuple[model_lib.Carry, jax.Array]


def _num_layers(params) -> int:
  return sum(name.startswith('lstm_') for name in params)


def enter(params, carry: model_lib.Carry, dtype: Any = jnp.float32) -> State:
  """The step's state from the model's carry (e.g. after priming with a prompt)."""
  return carry, model_lib._matmul(carry[0][1], params['lstm_0']['wh'], dtype)


def leave(state: State) -> model_lib.Carry:
  return state[0]


def _stack_for_batching(ws_IxO, dtype, splits: int):
  """The matrices as one [N * splits, I, O / splits] array: member n * splits + j is w[n]'s j-th
  block of columns."""
  w_NxIxO = jnp.stack(ws_IxO).astype(dtype)
  N, I, O = w_NxIxO.shape
  return w_NxIxO.reshape(N, I, splits, O // splits).transpose(0, 2, 1, 3).reshape(-1, I, O // splits)


def _batched_matmul(x_NxBxI, w_MxIxO, dtype):
  """x[n] @ w[n] for every n, with w from `_stack_for_batching`: one dot, fp32 out [N, B, O]."""
  N, B, _ = x_NxBxI.shape
  splits = w_MxIxO.shape[0] // N
  y_MxBxO = jax.lax.dot_general(jnp.repeat(x_NxBxI, splits, axis=0).astype(dtype), w_MxIxO,
                                (((2,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32)
  return y_MxBxO.reshape(N, splits, B, -1).transpose(0, 2, 1, 3).reshape(N, B, -1)


def make_step(params, vocab_size: int, batch_size: int, dtype: Any = jnp.float32):
  """step(state, token_B) -> (state, logits_BxV): the model fed one token per row.

  Builds what the loop reuses (the input table, the stacked weights) once, outside it.
  """
  L = _num_layers(params)
  lstm = [params[f'lstm_{l}'] for l in range(L)]
  table_Vx4H = model_lib.input_table(params, dtype)
  # Products known after layer 0's gates: every layer's recurrent one, then layer 1's input one.
  # With one stream each is also cut in two by columns: three members on two cores take two
  # rounds of whole products, six halves three rounds of half products (measured: 28.7 -> 19.7
  # us). With 4 or 128 streams halves are slower (36.9 -> 47.1, 981 -> 1341 us).
  splits = 2 if batch_size == 1 else 1
  batched = _stack_for_batching([p['wh'] for p in lstm] + [p['wi'] for p in lstm[1:2]], dtype,
                                splits)
  logits_layer = nn.Dense(vocab_size, dtype=dtype)

  def step(state: State, token_B):
    carry, rec0_Bx4H = state
    c_BxH = carry[0][0]
    _, c_BxH, h_BxH = model_lib._gates(table_Vx4H[token_B] + lstm[0]['b'] + rec0_Bx4H, c_BxH)
    new_carry = [(c_BxH, h_BxH)]
    inputs = [h_BxH] + [h for _, h in carry[1:]] + [h_BxH] * (L > 1)
    products_NxBx4H = _batched_matmul(jnp.stack(inputs), batched, dtype)
    x_BxH = h_BxH
    for l in range(1, L):
      xproj_Bx4H = (products_NxBx4H[L] if l == 1 else
                    model_lib._matmul(x_BxH, lstm[l]['wi'], dtype))
      _, c_BxH, x_BxH = model_lib._gates(xproj_Bx4H + lstm[l]['b'] + products_NxBx4H[l],
                                          carry[l][0])
      new_carry.append((c_BxH, x_BxH))
    logits_BxV = logits_layer.apply({'params': params['logits']}, x_BxH).astype(jnp.float32)
    return (tuple(new_carry), products_NxBx4H[0]), logits_BxV

  return step
