"""`config.cudnn`: a layer run as cuDNN's LSTM is the same model as the scanned one.

On a CPU `gpu_rnn.lstm_layer` runs jax.experimental.rnn's reference from the same packed weights
cuDNN gets, so these tests check the packing, the carry and the wiring into the model; on a GPU
(`bench/gpu.sh` runs them there) the first checks cuDNN itself.
"""

import jax
import jax.numpy as jnp
import numpy as np

from lstmgen import gpu_rnn
from lstmgen import model as model_lib


def _loss_and_grads(cudnn: bool, batch=5, hidden=12, vocab=11):
  """A 2-layer model's training loss and gradients: dropout, weight drop, a carried state."""
  tokens = jax.random.randint(jax.random.key(0), (batch, 7), 0, vocab)
  carry = tuple((jax.random.normal(jax.random.key(2 * l + 1), (batch, hidden)),
                 jax.random.normal(jax.random.key(2 * l + 2), (batch, hidden))) for l in range(2))
  model = model_lib.CharLSTM(vocab_size=vocab, embed_size=6, hidden_size=hidden, num_layers=2,
                             dropout=0.5, weight_drop=0.25, cpu_kernels=False, cudnn=cudnn)
  params = model.init(jax.random.key(9), tokens)['params']
  leaves, treedef = jax.tree.flatten(params)  # Every parameter off its initial value.
  keys = jax.random.split(jax.random.key(10), len(leaves))
  params = treedef.unflatten([p + 0.2 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  dropout_keys = jax.random.split(jax.random.key(3), batch)

  def loss(params, carry):
    # As train_step calls it: layer 0's projections offered as rows of the input table.
    logits, (layer0, layer1) = model.apply(
        {'params': params}, tokens, carry, dropout_keys_B=dropout_keys,
        weight_drop_key=jax.random.key(4), input_table_Vx4H=model_lib.input_table(params))
    return (jax.nn.log_softmax(logits)[..., 3].mean() + 0.3 * jnp.sum(layer1[0]) +
            0.7 * jnp.sum(layer0[1]))

  # Full fp32 matmuls: on a GPU both paths would otherwise round through TF32, differently.
  with jax.default_matmul_precision('highest'):
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, carry)


def test_cudnn_layers_give_the_loss_and_gradients_of_the_scan(monkeypatch):
  expected = _loss_and_grads(cudnn=False)
  # Off a GPU the flag is ignored; forced on, the layers go through gpu_rnn's packed weights.
  monkeypatch.setattr(gpu_rnn, 'available', lambda wanted, dtype: wanted)
  (loss, grads), (ref_loss, ref_grads) = _loss_and_grads(cudnn=True), expected
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.abs(b).max()),
                               err_msg=jax.tree_util.keystr(path))


def test_cudnn_flag_changes_nothing_off_a_gpu_or_in_bfloat16():
  assert not gpu_rnn.available(True, jnp.bfloat16)
  if jax.default_backend() == 'gpu':
    return
  assert not gpu_rnn.available(True, jnp.float32)
  for a, b in zip(jax.tree.leaves(_loss_and_grads(cudnn=True)),
                  jax.tree.leaves(_loss_and_grads(cudnn=False))):
    np.testing.assert_array_equal(a, b)


def test_flat_weights_are_cudnns_single_layer_layout():
  I, H = 3, 2
  wi, wh, b = (jnp.arange(n, dtype=jnp.float32).reshape(s) for n, s in
               ((I * 4 * H, (I, 4 * H)), (H * 4 * H, (H, 4 * H)), (4 * H, (4 * H,))))
  w_ih, w_hh, b_ih, b_hh = jax.experimental.rnn.unpack_lstm_weights(
      gpu_rnn.flat_weights(wi, wh, b), I, H, 1, False)
  np.testing.assert_array_equal(w_ih[0], wi.T)
  np.testing.assert_array_equal(w_hh[0], wh.T)
  np.testing.assert_array_equal(b_ih[0], b)
  np.testing.assert_array_equal(b_hh[0], 0)
