"""One LSTM layer as cuDNN's fused LSTM (jax.experimental.rnn), for `config.cudnn` on a GPU.

cuDNN runs a whole layer, its input projection, recurrence and their gradients, as library calls.
lstmgen keeps its own parameters ({'wi', 'wh', 'b'}, gates [i, f, g, o]: PyTorch's and cuDNN's
order) and packs them into cuDNN's flat weight vector on every call; autodiff through the packing
carries cuDNN's flat weight gradient back to them, so checkpoints are the same either way. One
layer per call: dropout between layers stays lstmgen's own, a function of (seed, step), where
cuDNN's would come from its own generator. float32 only (TF32 matmuls, as XLA's dots on the GPU):
jax.experimental.rnn has no bf16 LSTM.
"""

import jax
import jax.numpy as jnp
from jax.experimental import rnn


def available(wanted: bool, dtype) -> bool:
  """Whether a layer runs on cuDNN: wanted, a CUDA GPU backend, float32 compute."""
  return wanted and jax.default_backend() == 'gpu' and jnp.dtype(dtype) == jnp.float32


def flat_weights(wi_Ix4H, wh_Hx4H, b_4H) -> jax.Array:
  """One layer's weights in cuDNN's layout: W_ih [4H, I], W_hh [4H, H], b_ih, b_hh (zero)."""
  return jnp.concatenate([wi_Ix4H.T.ravel(), wh_Hx4H.T.ravel(), b_4H, jnp.zeros_like(b_4H)])


def lstm_layer(wi_Ix4H, wh_Hx4H, b_4H, x_TxBxI, c0_BxH, h0_BxH):
  """(h_TxBxH, (c_T, h_T)) of one layer, as `model.lstm_recurrence` returns them.

  On a GPU: cuDNN. Elsewhere jax.experimental.rnn's reference, from the same packed weights (how
  the tests check this path on a CPU).
  """
  T, B, I = x_TxBxI.shape
  H = wh_Hx4H.shape[0]
  weights = flat_weights(wi_Ix4H, wh_Hx4H, b_4H)
  x_BxTxI = x_TxBxI.transpose(1, 0, 2)  # cuDNN's calls here are batch-first.
  lengths = jnp.full((B,), T, jnp.int32)
  h0, c0 = h0_BxH[None], c0_BxH[None]  # [layers, B, H]
  if jax.default_backend() == 'gpu':
    y_BxTxH, hT, cT = rnn.lstm(x_BxTxI, h0, c0, weights, lengths, I, H, 1, 0.0, False)
  else:
    unpacked = rnn.unpack_lstm_weights(weights, I, H, 1, False)
    y_BxTxH, hT, cT = rnn.lstm_ref(x_BxTxI, h0, c0, *unpacked, lengths, I, H, 1, 0.0, False)
  return y_BxTxH.transpose(1, 0, 2), (cT[0], hT[0])
