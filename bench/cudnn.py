"""lstmgen's scanned LSTM stack against cuDNN's fused LSTM (jax.experimental.rnn), on a GPU:
python -m bench.cudnn [--dtype=float32]

Times forward + backward of the reference model's recurrent stack (2 x LSTM-256 over
64-wide embeddings, batch 128, 100 steps, no dropout: cuDNN's dropout masks cannot be matched)
in interleaved rounds, both from the same weights, and checks that their outputs agree. Elsewhere
than on a GPU it only runs that check, against jax.experimental.rnn's reference implementation.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import rnn

from bench.timing import interleaved, row
from lstmgen import model as model_lib

B, T, D, H, LAYERS = 128, 100, 64, 256, 2


def cudnn_weights(layers_params) -> jax.Array:
  """lstmgen's per-layer {'wi', 'wh', 'b'} as cuDNN's flat LSTM weights.

  cuDNN's layout: every layer's W_ih [4H, I] and W_hh [4H, H], then every layer's b_ih and b_hh;
  gates in PyTorch's order [i, f, g, o], which is lstmgen's too.
  """
  weights = [w for p in layers_params for w in (p['wi'].T.ravel(), p['wh'].T.ravel())]
  biases = [b for p in layers_params for b in (p['b'], jnp.zeros_like(p['b']))]
  return jnp.concatenate(weights + biases)


def lstmgen_stack(layers_params, x_BxTxD, dtype, kernels):
  """The stack as lstmgen's model runs it: time-major, a projection, then the recurrence."""
  x = x_BxTxD.transpose(1, 0, 2)
  zeros = jnp.zeros((B, H), jnp.float32)
  for p in layers_params:
    xproj = model_lib._project(x, p['wi'], dtype, kernels)  # pylint: disable=protected-access
    x, _ = model_lib.lstm_recurrence(p['wh'], p['b'], xproj, zeros, zeros, dtype, 1, kernels)
  return x.transpose(1, 0, 2)


def cudnn_stack(weights, x_BxTxD, reference: bool):
  zeros = jnp.zeros((LAYERS, B, H), jnp.float32)
  lengths = jnp.full((B,), T, jnp.int32)
  if reference:
    unpacked = rnn.unpack_lstm_weights(weights, D, H, LAYERS, False)
    y, _, _ = rnn.lstm_ref(x_BxTxD, zeros, zeros, *unpacked, lengths, D, H, LAYERS, 0.0, False)
  else:
    y, _, _ = rnn.lstm(x_BxTxD, zeros, zeros, weights, lengths, D, H, LAYERS, 0.0, False)
  return y


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--dtype', default='float32', help="lstmgen's compute dtype.")
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=10, help='Forward + backward passes per round.')
  args = parser.parse_args()
  on_gpu = jax.default_backend() == 'gpu'
  print(f'{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, '
        f'{time.strftime("%Y-%m-%d")}', flush=True)

  model = model_lib.CharLSTM(vocab_size=80, embed_size=D, hidden_size=H, num_layers=LAYERS)
  params = model.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))['params']
  layers = [params[f'lstm_{l}'] for l in range(LAYERS)]
  x = jax.random.normal(jax.random.key(1), (B, T, D))
  w_out = jax.random.normal(jax.random.key(2), (B, T, H))
  kernels = model_lib.use_kernels()

  ours = jax.jit(jax.value_and_grad(
      lambda ps, x: jnp.sum(lstmgen_stack(ps, x, jnp.dtype(args.dtype), kernels) * w_out)))
  theirs = jax.jit(jax.value_and_grad(
      lambda w, x: jnp.sum(cudnn_stack(w, x, reference=not on_gpu) * w_out)))
  weights = cudnn_weights(layers)
  y_ours = lstmgen_stack(layers, x, jnp.dtype(args.dtype), kernels)
  y_theirs = cudnn_stack(weights, x, reference=not on_gpu)
  print(f'  outputs agree to {float(jnp.abs(y_ours - y_theirs).max()):.2e} (max abs difference; '
        f'{"cuDNN" if on_gpu else "jax.experimental.rnn.lstm_ref"})', flush=True)
  if not on_gpu:
    print('  timing needs a GPU (cuDNN); nothing timed here')
    return

  def rate(fn, *fn_args):
    jax.block_until_ready(fn(*fn_args))
    start = time.perf_counter()
    for _ in range(args.steps):
      out = fn(*fn_args)
    jax.block_until_ready(out)
    return args.steps * B * T / (time.perf_counter() - start)

  ours_rates, theirs_rates = interleaved([lambda: rate(ours, layers, x),
                                          lambda: rate(theirs, weights, x)], args.rounds)
  row(f'LSTM stack fwd+bwd, {args.dtype}', np.median(ours_rates), np.median(theirs_rates),
      'chars/s', 'cuDNN')


if __name__ == '__main__':
  main()
