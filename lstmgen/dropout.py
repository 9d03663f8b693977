"""Dropout whose masks are cheap to draw and depend only on their keys.

Dropout between layers is keyed per example (by its index in the global batch), so the masks are
the same on 1 device, N devices or N hosts; weight drop (DropConnect on the recurrent weights) has
one mask for the whole batch per step.
"""

import math

import jax
import jax.numpy as jnp


def draw_bits(rate: float) -> int:
  """Bits per dropout draw: the fewest of 1, 2, 4 or 8 that hold `rate` exactly, else 16."""
  return next((bits for bits in (1, 2, 4, 8) if (rate * 2**bits).is_integer()), 16)


def keep(key, shape, rate: float):
  """A mask of `shape` that is True with probability 1 - rate (to 1/65536 at worst).

  jax.random.bits costs one 32-bit threefry word per element whatever its dtype (measured:
  uint16 as slow as uint32), so each word is cut here into 32 / b draws of b bits. At rate 0.5 a
  draw is one bit: a layer's dropout bits at the reference size took 1.6 ms instead of 53 ms,
  about 7% of a training step on the EPYC.
  """
  bits = draw_bits(rate)
  size = math.prod(shape)
  words = jax.random.bits(key, (-(-size * bits // 32),), jnp.uint32)
  shifts = jnp.arange(0, 32, bits, dtype=jnp.uint32)
  draws = ((words[:, None] >> shifts) & (2**bits - 1)).reshape(-1)[:size].reshape(shape)
  return draws >= round(rate * 2**bits)


def drop(x, keep, rate: float):
  """Inverted dropout: kept entries scaled by 1 / (1 - rate), the rest zero."""
  return jnp.where(keep, x * (1.0 / (1.0 - rate)), 0.0)


def dropout(x_TxBxH, keys_B, rate: float, salt: int):
  """Inverted dropout whose mask for example b depends only on keys_B[b], not on the device."""
  keep_TxBxH = jax.vmap(lambda k: keep(jax.random.fold_in(k, salt), x_TxBxH[:, 0].shape, rate),
                        out_axes=1)(keys_B)
  return drop(x_TxBxH, keep_TxBxH, rate)


def drop_weights(w, key, rate: float):
  """DropConnect on a weight matrix (AWD-LSTM's weight drop): one mask for the whole batch.

  Dropping recurrent weights regularises the recurrence itself, which dropout between layers never
  touches; the mask is fixed for all time steps, so the custom VJP sees a plain matrix.
  """
  return drop(w, keep(key, w.shape, rate), rate)
