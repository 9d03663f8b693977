"""bench.cudnn hands cuDNN the same LSTM stack lstmgen runs (checked against JAX's reference)."""

import jax
import jax.numpy as jnp
import numpy as np

from bench import cudnn
from lstmgen import model as model_lib


def test_cudnn_weights_describe_the_same_lstm_stack():
  model = model_lib.CharLSTM(vocab_size=80, embed_size=cudnn.D, hidden_size=cudnn.H,
                             num_layers=cudnn.LAYERS)
  params = model.init(jax.random.key(0), jnp.zeros((1, 2), jnp.int32))['params']
  layers = [params[f'lstm_{l}'] for l in range(cudnn.LAYERS)]
  # Non-zero biases, so a bias in the wrong slot shows.
  layers = [{**p, 'b': p['b'] + 0.1 * jax.random.normal(jax.random.key(l), p['b'].shape)}
            for l, p in enumerate(layers)]
  x = jax.random.normal(jax.random.key(1), (cudnn.B, cudnn.T, cudnn.D))
  ours = cudnn.lstmgen_stack(layers, x, jnp.float32, kernels=False)
  reference = cudnn.cudnn_stack(cudnn.cudnn_weights(layers), x, reference=True)
  np.testing.assert_allclose(ours, reference, atol=1e-5)
