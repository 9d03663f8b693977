"""The model one character at a time, for sampling, each step arranged for latency.

Sampling one stream is a chain of matrix-vector products, one per weight matrix and character
(three of 1 MB for the reference model), and XLA's CPU backend runs each on one core in ~11 us,
in cache or not. Here, for one or two streams, every product whose input is known once layer 0's
gates are done goes into one batched dot, which XLA spreads over the cores: each layer's
recurrent product and layer 1's input product. Layer 0's recurrent product is the one for the
*next* character (its gates come first in every step), so the state carries it. Each member of
the batch is the same dot as before: on the reference model the samples were bit for bit those of
the previous code (which fed `CharLSTM.apply` one token at a time), fp32 and bf16, 1 to 4 and 128
streams. Measured on a 2-core AMD EPYC (Zen 4): 600 characters of one stream after a
100-character prompt 30.5 -> 19.3 ms.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstmgen import model as model_lib

# Streams up to which the batched step is used. Measured on a 2-core EPYC (Zen 4), 600
# characters after 100 (ms), the model's own step -> the batched one: 1 stream 30-31 -> 19-20
# (fp32) and 32 -> 19 (bf16); 2 streams 32-34 -> 26-27 (fp32) but 28 -> 31 (bf16). From 3
# streams on each dot alone keeps both cores busy, and the batched step's three independent
# dots, even unbatched, compete for them: 3 streams 29 -> 51 (fp32).
MAX_BATCHED_STREAMS = 2


class Stepper(NamedTuple):
  """The sampling loop's view of the model: its state is whatever `enter` makes of the carry."""
  enter: Callable  # carry -> state
  step: Callable  # (state, token_B) -> (state, logits_BxV)
  leave: Callable  # state -> carry


def make_stepper(model: model_lib.CharLSTM, params, batch_size: int) -> Stepper:
  """The fastest one-token step for `batch_size` streams; the first layer's input table and any
  stacked weights are built here, once, outside the sampling loop."""
  table_Vx4H = model_lib.input_table(params, model.dtype)
  if batch_size > MAX_BATCHED_STREAMS:
    def step(carry, token_B):
      logits_Bx1xV, carry = model.apply({'params': params}, token_B[:, None], carry,
                                        input_table_Vx4H=table_Vx4H)
      return carry, logits_Bx1xV[:, 0]

    return Stepper(lambda carry: carry, step, lambda carry: carry)
  return _batched_stepper(model, params, table_Vx4H)


def _batched_products_fn(ws_IxO, dtype):
  """products(xs) -> [x @ w for each pair], as one dot with a batch dimension.

  Each product is also cut in two by columns: three members on two cores take two rounds of
  whole products, six halves three rounds of half products (one stream: 28.9 -> 19.6 us).
  """
  N, (I, O) = len(ws_IxO), ws_IxO[0].shape
  # Member n * 2 + j is w[n]'s j-th half of columns.
  w_MxIxO = (jnp.stack(ws_IxO).astype(dtype).reshape(N, I, 2, O // 2).transpose(0, 2, 1, 3)
             .reshape(2 * N, I, O // 2))

  def products(xs_BxI):
    x_MxBxI = jnp.repeat(jnp.stack(xs_BxI), 2, axis=0).astype(dtype)
    y_MxBxO = jax.lax.dot_general(x_MxBxI, w_MxIxO, (((2,), (1,)), ((0,), (0,))),
                                  preferred_element_type=jnp.float32)
    B = x_MxBxI.shape[1]
    return list(y_MxBxO.reshape(N, 2, B, -1).transpose(0, 2, 1, 3).reshape(N, B, O))

  return products


def _batched_stepper(model: model_lib.CharLSTM, params, table_Vx4H) -> Stepper:
  """State: the model's carry and layer 0's recurrent product h0 @ wh0 for the next token."""
  dtype, L = model.dtype, model.num_layers
  lstm = [params[f'lstm_{l}'] for l in range(L)]
  # Products known after layer 0's gates: every layer's recurrent one, then layer 1's input one.
  products_fn = _batched_products_fn([p['wh'] for p in lstm] + [p['wi'] for p in lstm[1:2]], dtype)
  logits_layer = nn.Dense(model.vocab_size, dtype=dtype)

  def enter(carry):
    return carry, model_lib._matmul(carry[0][1], lstm[0]['wh'], dtype)

  def step(state, token_B):
    carry, rec0_Bx4H = state
    c_BxH = carry[0][0]
    _, c_BxH, h_BxH = model_lib._gates(table_Vx4H[token_B] + lstm[0]['b'] + rec0_Bx4H, c_BxH)
    new_carry = [(c_BxH, h_BxH)]
    products_Bx4H = products_fn([h_BxH] + [h for _, h in carry[1:]] + [h_BxH] * (L > 1))
    x_BxH = h_BxH
    for l in range(1, L):
      xproj_Bx4H = (products_Bx4H[L] if l == 1 else
                    model_lib._matmul(x_BxH, lstm[l]['wi'], dtype))
      _, c_BxH, x_BxH = model_lib._gates(xproj_Bx4H + lstm[l]['b'] + products_Bx4H[l],
                                          carry[l][0])
      new_carry.append((c_BxH, x_BxH))
    logits_BxV = logits_layer.apply({'params': params['logits']}, x_BxH).astype(jnp.float32)
    return (tuple(new_carry), products_Bx4H[0]), logits_BxV

  return Stepper(enter, step, lambda state: state[0])
