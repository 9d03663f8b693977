"""The character LSTM language model: embedding -> LSTM layers scanned over time -> logits.

Each layer computes its input projection for all time steps as one matmul outside the scan (the
first layer's is gathered from a V x 4H table, `input_table`), so the scanned body holds only
`h @ W_hh`, the bias and the gates. The recurrence has a custom VJP (what cuDNN
does): the backward scan keeps only `dgates @ W_hh^T`, and the weight gradient is one large matmul
after it. Both scans work in one T x B x 4H buffer, in place: input projections, then the
activations, then the gate gradients. On the CPU each step's elementwise work is one fused C++
kernel (`cpu_cell`) when it can be built; on a GPU a layer can instead be cuDNN's fused LSTM
(`gpu_rnn`, `config.cudnn`). Parameters use one fused [i, f, g, o] layout;
`to_flax_cell_params` maps a layer onto `flax.linen.LSTMCell`'s parameters, against which tests
check outputs and gradients.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from lstmgen import cpu_cell
from lstmgen import dropout as dropout_lib
from lstmgen import gpu_rnn

Carry = tuple[tuple[jax.Array, jax.Array], ...]  # Per layer: (c_BxH, h_BxH), fp32.


def _gates(gates_Bx4H, c_BxH):
  """The LSTM cell's elementwise work on pre-activations laid out [i, f, g, o]."""
  H = c_BxH.shape[-1]
  # sigmoid(x) = 0.5 * tanh(x / 2) + 0.5, so one tanh over all 4H columns does every gate: one
  # cheap op in one fused loop instead of exp + divide on three slices and tanh on the fourth.
  is_g = (jnp.arange(4 * H) // H) == 2
  scale = jnp.where(is_g, 1.0, 0.5)
  acts_Bx4H = jnp.tanh(gates_Bx4H * scale) * scale + jnp.where(is_g, 0.0, 0.5)
  i, f, g, o = jnp.split(acts_Bx4H, 4, axis=-1)
  c_BxH = f * c_BxH + i * g
  h_BxH = o * jnp.tanh(c_BxH)
  return acts_Bx4H, c_BxH, h_BxH


def _matmul(a, b, dtype):
  return jnp.dot(a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


def _matmul_nt(a_NxK, b_MxK, dtype):
  """a @ b.T as one dot contracting both operands' last axes, fp32 out.

  XLA's CPU backend runs this form fast and on the bf16 units; a materialised transpose of b
  (or g @ w.T, which it upcasts to fp32 in bf16) was slower: in the backward recurrence, 100
  steps of [128, 1024] @ [1024, 256] took 53 ms against 38 ms this way in fp32 (2-core EPYC).
  """
  return jax.lax.dot_general(a_NxK.astype(dtype), b_MxK.astype(dtype), (((1,), (1,)), ((), ())),
                             preferred_element_type=jnp.float32)


def _flat_matmul(x_TxBxI, w_IxO, dtype):
  """x @ w over all time steps at once, on a 2-D view."""
  T, B, I = x_TxBxI.shape
  return _matmul(x_TxBxI.reshape(T * B, I), w_IxO, dtype).reshape(T, B, -1)


def _weight_grad(a_TxBxI, b_TxBxO, dtype, kernels=False):
  """a^T @ b summed over every time step and example (a weight gradient): [I, O], fp32.

  XLA's CPU backend runs a dot that contracts both operands' leading axis on its fp32 path even
  in bf16, and folds a plain transpose of `a` back into that form. Transposed as a 3-D array
  first, `a` is really copied, and the dot is an ordinary one that runs on the bf16 units: at the
  reference size 40 -> 15 ms per weight gradient, and bf16 training 17% faster on a 2-core Xeon
  with AMX. In fp32 the copy costs more than it saves (training 6% slower), and other backends
  contract leading axes natively. Either way time and batch are merged first: XLA's CPU dot
  transposes 3-D operands into copies when contracting over (T, B) (measured in fp32: 47 ms
  instead of 28). With `kernels`, `cpu_cell` makes the transposed bf16 copy.
  """
  T, B, I = a_TxBxI.shape
  a = a_TxBxI.astype(dtype)
  b_NxO = b_TxBxO.reshape(T * B, -1).astype(dtype)
  if jax.default_backend() != 'cpu' or jnp.dtype(dtype) == jnp.float32:
    return jax.lax.dot_general(a.reshape(T * B, I), b_NxO, (((0,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)
  if kernels:
    aT_IxN = cpu_cell.transpose_to_bf16(a_TxBxI.reshape(T * B, I))
  else:
    aT_IxN = jnp.transpose(a, (2, 0, 1)).reshape(I, T * B)
  return jnp.dot(aT_IxN, b_NxO, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _project(x_TxBxI, w_IxO, dtype, kernels=False):
  """x @ w over all time steps, with both backward matmuls in `dtype` too.

  Autodiff of a bf16 matmul with an fp32 result transposes into fp32 matmuls (an fp32 cotangent
  against the upcast weight): at the reference size that made the input gradient 45 ms of fp32
  instead of a few ms on the CPU's bf16 units.
  """
  return _flat_matmul(x_TxBxI, w_IxO, dtype)


def _project_fwd(x_TxBxI, w_IxO, dtype, kernels):
  return _flat_matmul(x_TxBxI, w_IxO, dtype), (x_TxBxI, w_IxO)


def _project_bwd(dtype, kernels, residuals, g_TxBxO):
  x_TxBxI, w_IxO = residuals
  T, B, I = x_TxBxI.shape
  dx_NxI = _matmul_nt(g_TxBxO.reshape(T * B, -1), w_IxO, dtype)
  dw_IxO = _weight_grad(x_TxBxI, g_TxBxO, dtype, kernels)
  return dx_NxI.reshape(T, B, I).astype(x_TxBxI.dtype), dw_IxO.astype(w_IxO.dtype)


_project.defvjp(_project_fwd, _project_bwd)


# ----------------------------------------------------------------------------- recurrence


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def lstm_recurrence(wh_Hx4H, b_4H, xproj_TxBx4H, c0_BxH, h0_BxH, dtype=jnp.float32, unroll=1,
                    kernels=False):
  """Runs the LSTM over time given the input projections x @ wi (without the bias `b_4H`).

  Returns (h_TxBxH, (c_T, h_T)). The bias is added in each step's gate loop and its gradient
  summed in the backward loop, where the gates are in cache: outside, each was one more pass over
  a T x B x 4H array in memory. `kernels`: each step's elementwise work is `cpu_cell`'s kernel
  (CPU only; see `use_kernels`).
  """
  hs_TxBxH, cT, hT, _ = _forward(wh_Hx4H, b_4H, xproj_TxBx4H, c0_BxH, h0_BxH, dtype, unroll,
                                 kernels)
  return hs_TxBxH, (cT, hT)


def use_kernels(wanted: bool = True) -> bool:
  """Whether the recurrence runs on `cpu_cell`'s kernels: wanted, the CPU backend, and built."""
  return wanted and cpu_cell.available()


def _forward(wh_Hx4H, b_4H, xproj_TxBx4H, c0_BxH, h0_BxH, dtype, unroll, kernels):
  wh_Hx4H = wh_Hx4H.astype(dtype)  # Cast once, not per step.
  if kernels:
    return _forward_kernels(wh_Hx4H, b_4H, xproj_TxBx4H, c0_BxH, h0_BxH, dtype, unroll)

  def step(carry, t):
    c_BxH, h_BxH, buf_TxBx4H = carry
    xproj_Bx4H = jax.lax.dynamic_index_in_dim(buf_TxBx4H, t, keepdims=False)
    acts, c_BxH, h_BxH = _gates(xproj_Bx4H + b_4H + _matmul(h_BxH, wh_Hx4H, dtype), c_BxH)
    # Step t's activations overwrite its own (now spent) input projection: the input buffer is
    # reused in place, where scan outputs would cost a fresh zero-filled T x B x 4H array per call
    # (measured: 13 ms of a 100-step layer at the reference size, ~5% of a training step).
    buf_TxBx4H = jax.lax.dynamic_update_index_in_dim(buf_TxBx4H, acts, t, 0)
    return (c_BxH, h_BxH, buf_TxBx4H), (c_BxH, h_BxH)

  (cT, hT, acts_TxBx4H), (cs_TxBxH, hs_TxBxH) = jax.lax.scan(
      step, (c0_BxH, h0_BxH, xproj_TxBx4H), jnp.arange(xproj_TxBx4H.shape[0]), unroll=unroll)
  return hs_TxBxH, cT, hT, (acts_TxBx4H, cs_TxBxH)


def _forward_kernels(wh_Hx4H, b_4H, xproj_TxBx4H, c0_BxH, h0_BxH, dtype, unroll):
  """`_forward` on `cpu_cell`'s kernel, which also writes c and h into their T x B x H arrays in
  place (as scan outputs they were two more copies per step, 33 us each on the EPYC)."""
  def step(carry, t):
    hcast_BxH, buf_TxBx4H, cs_TxBxH, hs_TxBxH = carry
    buf_TxBx4H, cs_TxBxH, hs_TxBxH, hcast_BxH = cpu_cell.forward_step(
        buf_TxBx4H, cs_TxBxH, hs_TxBxH, t, b_4H, _matmul(hcast_BxH, wh_Hx4H, dtype), c0_BxH, dtype)
    return (hcast_BxH, buf_TxBx4H, cs_TxBxH, hs_TxBxH), None

  T, B, H = (*xproj_TxBx4H.shape[:2], c0_BxH.shape[-1])
  states = jnp.zeros((T, B, H), jnp.float32)
  (_, acts_TxBx4H, cs_TxBxH, hs_TxBxH), _ = jax.lax.scan(
      step, (h0_BxH.astype(dtype), xproj_TxBx4H, states, states), jnp.arange(T), unroll=unroll)
  return hs_TxBxH, cs_TxBxH[-1], hs_TxBxH[-1], (acts_TxBx4H, cs_TxBxH)


def _recurrence_fwd(wh_Hx4H, b_4H, xproj_TxBx4H, c0_BxH, h0_BxH, dtype, unroll, kernels):
  hs_TxBxH, cT, hT, (acts, cs) = _forward(wh_Hx4H, b_4H, xproj_TxBx4H, c0_BxH, h0_BxH, dtype,
                                          unroll, kernels)
  return (hs_TxBxH, (cT, hT)), (wh_Hx4H, c0_BxH, h0_BxH, acts, cs, hs_TxBxH)


def _recurrence_bwd(dtype, unroll, kernels, residuals, cotangents):
  del unroll  # Only the forward scan unrolls (see `_backward_scan`).
  wh_Hx4H, c0_BxH, h0_BxH, acts_TxBx4H, cs_TxBxH, hs_TxBxH = residuals
  dhs_TxBxH, (dcT, dhT) = cotangents
  wh_cast_Hx4H = wh_Hx4H.astype(dtype)  # Cast once, not per step.
  backward_scan = _backward_scan_kernels if kernels else _backward_scan
  dc0, dh0, db_4H, dgates_TxBx4H = backward_scan(wh_cast_Hx4H, c0_BxH, acts_TxBx4H, cs_TxBxH,
                                                 dhs_TxBxH, dcT, dhT, dtype)
  hprev_TxBxH = jnp.concatenate([h0_BxH[None], hs_TxBxH[:-1]])
  dwh_Hx4H = _weight_grad(hprev_TxBxH, dgates_TxBx4H, dtype, kernels)
  return dwh_Hx4H.astype(wh_Hx4H.dtype), db_4H, dgates_TxBx4H, dc0, dh0


def _backward_scan_kernels(wh_Hx4H, c0_BxH, acts_TxBx4H, cs_TxBxH, dhs_TxBxH, dcT, dhT, dtype):
  """(dc0, dh0, db, gate gradients in the activations' buffer), each step one kernel call."""
  def step(carry, t):
    dc_BxH, dh_BxH, db_4H, buf_TxBx4H = carry
    # The kernel reads step t's dh_out, c and c_prev out of the whole arrays itself.
    buf_TxBx4H, dgates_Bx4H, dc_BxH, db_4H = cpu_cell.backward_step(
        buf_TxBx4H, t, dhs_TxBxH, cs_TxBxH, c0_BxH, dh_BxH, dc_BxH, db_4H, dtype)
    return (dc_BxH, _matmul_nt(dgates_Bx4H, wh_Hx4H, dtype), db_4H, buf_TxBx4H), None

  (dc0, dh0, db_4H, dgates_TxBx4H), _ = jax.lax.scan(
      step, (dcT, dhT, jnp.zeros(acts_TxBx4H.shape[-1]), acts_TxBx4H),
      jnp.arange(acts_TxBx4H.shape[0]), reverse=True)
  return dc0, dh0, db_4H, dgates_TxBx4H


def _backward_scan(wh_Hx4H, c0_BxH, acts_TxBx4H, cs_TxBxH, dhs_TxBxH, dcT, dhT, dtype):
  """`_backward_scan_kernels` in jax.numpy."""
  cprev_TxBxH = jnp.concatenate([c0_BxH[None], cs_TxBxH[:-1]])

  def step(carry, xs):
    # acts_Bx4H (step t's activations) rides in the carry, read from the buffer one step ahead:
    # every read of the buffer then follows the previous in-place write, and XLA needs no copy of
    # it (reading slot t in the same step as writing it cost a 52 MB copy per step).
    dc_BxH, dh_BxH, db_4H, acts_Bx4H, buf_TxBx4H = carry
    t, dh_out, c, c_prev = xs
    i, f, g, o = jnp.split(acts_Bx4H, 4, axis=-1)
    tanh_c = jnp.tanh(c)
    dh_BxH = dh_BxH + dh_out
    dc_BxH = dc_BxH + dh_BxH * o * (1 - tanh_c * tanh_c)
    # dc * f is both the next step's dc and a factor of the forget gate's gradient. Computed once
    # and used in the gate gradients written to the buffer, it is read before the read-ahead
    # below overwrites acts_Bx4H; computed apart, XLA copied acts_Bx4H every step to keep it
    # (measured: a 30 us copy in each ~500 us backward step, bf16, 2-core EPYC).
    dcf_BxH = dc_BxH * f
    dgates_Bx4H = jnp.concatenate([
        dc_BxH * g * i * (1 - i),
        dcf_BxH * c_prev * (1 - f),
        dc_BxH * i * (1 - g * g),
        dh_BxH * tanh_c * o * (1 - o),
    ], axis=-1)
    # As in the forward pass, step t's gate gradients overwrite its spent activations in place.
    buf_TxBx4H = jax.lax.dynamic_update_index_in_dim(buf_TxBx4H, dgates_Bx4H, t, 0)
    next_acts = jax.lax.dynamic_index_in_dim(buf_TxBx4H, jnp.maximum(t - 1, 0), keepdims=False)
    return (dcf_BxH, _matmul_nt(dgates_Bx4H, wh_Hx4H, dtype), db_4H + dgates_Bx4H.sum(0),
            next_acts, buf_TxBx4H), None

  (dc0, dh0, db_4H, _, dgates_TxBx4H), _ = jax.lax.scan(
      step, (dcT, dhT, jnp.zeros(acts_TxBx4H.shape[-1]), acts_TxBx4H[-1], acts_TxBx4H),
      (jnp.arange(acts_TxBx4H.shape[0]), dhs_TxBxH, cs_TxBxH, cprev_TxBxH), reverse=True)
  # The backward scan is never unrolled: in an unrolled body the read-ahead of the next step's
  # activations is fused into readers XLA may order after the next write, and it then copies the
  # whole buffer every iteration (measured: unroll=2 doubled the time of a layer's gradient).
  return dc0, dh0, db_4H, dgates_TxBx4H


lstm_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


# ----------------------------------------------------------------------------- modules


def _recurrent_init(key, shape, dtype=jnp.float32):
  """One orthogonal [H, H] block per gate, as flax.linen.LSTMCell initialises them."""
  hidden = shape[0]
  keys = jax.random.split(key, 4)
  return jnp.concatenate([nn.initializers.orthogonal()(k, (hidden, hidden), dtype) for k in keys], -1)


class LSTMLayer(nn.Module):
  """One LSTM layer over a whole time-major sequence."""
  hidden_size: int
  forget_bias: float = 1.0
  dtype: Any = jnp.float32
  unroll: int = 1
  weight_drop: float = 0.0
  cpu_kernels: bool = True  # Use `cpu_cell`'s fused step kernels where they can run.
  cudnn: bool = False  # Run as cuDNN's LSTM where it can (a CUDA GPU, float32; `gpu_rnn`).

  @nn.compact
  def __call__(self, carry, x_TxBxD, weight_drop_key=None, xproj_TxBx4H=None):
    """`xproj_TxBx4H`, when given, is already x @ wi (gathered from `input_table`)."""
    H = self.hidden_size
    wi = self.param('wi', nn.initializers.lecun_normal(), (x_TxBxD.shape[-1], 4 * H))
    wh = self.param('wh', _recurrent_init, (H, 4 * H))
    b = self.param('b', lambda k, s: jnp.zeros(s).at[H:2 * H].set(self.forget_bias), (4 * H,))
    if weight_drop_key is not None and self.weight_drop > 0:
      wh = dropout_lib.drop_weights(wh, weight_drop_key, self.weight_drop)
    if x_TxBxD.shape[0] == 1:
      # One token (sampling three or more streams; one or two use `decode`'s batched step): no
      # loop at all, where a scan of length 1 costs ~10x the arithmetic.
      c_BxH, h_BxH = carry
      if xproj_TxBx4H is None:
        xproj_TxBx4H = _matmul(x_TxBxD[0], wi, self.dtype)[None]
      gates_Bx4H = xproj_TxBx4H[0] + b + _matmul(h_BxH, wh, self.dtype)
      _, c_BxH, h_BxH = _gates(gates_Bx4H, c_BxH)
      return (c_BxH, h_BxH), h_BxH[None]
    if gpu_rnn.available(self.cudnn, self.dtype):
      # cuDNN projects the inputs itself: layer 0's gathered projections go unused.
      hs_TxBxH, carry = gpu_rnn.lstm_layer(wi, wh, b, x_TxBxD, *carry)
      return carry, hs_TxBxH
    kernels = use_kernels(self.cpu_kernels)
    if xproj_TxBx4H is None:
      xproj_TxBx4H = _project(x_TxBxD, wi, self.dtype, kernels)
    hs_TxBxH, carry = lstm_recurrence(wh, b, xproj_TxBx4H, *carry, self.dtype, self.unroll,
                                      kernels)
    return carry, hs_TxBxH


class CharLSTM(nn.Module):
  """Character LSTM LM. Takes and returns the per-layer carry so sequences can be continued."""
  vocab_size: int
  embed_size: int = 64
  hidden_size: int = 256
  num_layers: int = 2
  dropout: float = 0.0
  forget_bias: float = 1.0
  dtype: Any = jnp.float32
  unroll: int = 1
  weight_drop: float = 0.0  # DropConnect rate on each layer's recurrent weights (training only).
  cpu_kernels: bool = True
  cudnn: bool = False

  def initial_carry(self, batch_size: int) -> Carry:
    zeros = jnp.zeros((batch_size, self.hidden_size), jnp.float32)
    return tuple((zeros, zeros) for _ in range(self.num_layers))

  @nn.compact
  def __call__(self, tokens_BxT, carry: Carry | None = None, dropout_keys_B=None,
               weight_drop_key=None, input_table_Vx4H=None):
    """Logits [B, T, V] (fp32) and the carry after the last token.

    Dropout is applied only when `dropout_keys_B` (one PRNG key per example) is given, weight drop
    only when `weight_drop_key` (one key for the whole batch) is. `input_table_Vx4H`
    (`input_table(params)`) gives the first layer's input projections as rows to gather.
    """
    if carry is None:
      carry = self.initial_carry(tokens_BxT.shape[0])
    x = nn.Embed(self.vocab_size, self.embed_size, name='embed')(tokens_BxT.T)  # Row gather.
    xproj = None if input_table_Vx4H is None else input_table_Vx4H[tokens_BxT.T]
    new_carry = []
    for layer in range(self.num_layers):
      layer_key = None if weight_drop_key is None else jax.random.fold_in(weight_drop_key, layer)
      layer_carry, x = LSTMLayer(self.hidden_size, self.forget_bias, self.dtype, self.unroll,
                                 self.weight_drop, self.cpu_kernels, self.cudnn,
                                 name=f'lstm_{layer}')(
                                     carry[layer], x, layer_key, xproj if layer == 0 else None)
      new_carry.append(layer_carry)
      if dropout_keys_B is not None and self.dropout > 0:
        x = dropout_lib.dropout(x, dropout_keys_B, self.dropout, layer)
    T, B, H = x.shape
    logits = nn.Dense(self.vocab_size, dtype=self.dtype, name='logits')(x.reshape(T * B, H))
    return logits.astype(jnp.float32).reshape(T, B, -1).transpose(1, 0, 2), tuple(new_carry)


def from_config(config, vocab_size: int) -> CharLSTM:
  m = config.model
  return CharLSTM(vocab_size=vocab_size, embed_size=m.embed_size, hidden_size=m.hidden_size,
                  num_layers=m.num_layers, dropout=m.dropout, forget_bias=m.forget_bias,
                  weight_drop=m.weight_drop, dtype=jnp.dtype(config.dtype),
                  unroll=config.scan_unroll, cpu_kernels=config.cpu_kernels,
                  cudnn=config.cudnn)


def input_table(params, dtype=jnp.float32):
  """Each character's first-layer input projection, embedding @ wi: [V, 4H].

  Gathering its rows replaces multiplying every embedding by wi (7.5% of the reference model's
  FLOPs per character): the table is one small matmul per call. (The gradient flows back through
  the gather as a scatter-add into the table.)
  """
  return _matmul(params['embed']['embedding'], params['lstm_0']['wi'], dtype)


def to_flax_cell_params(layer_params) -> dict:
  """Maps one LSTMLayer's fused params onto flax.linen.LSTMCell's (ii, if, ..., hi, hf, ...)."""
  split = lambda w: jnp.split(w, 4, axis=-1)
  cell = {}
  for name, wi, wh, b in zip('ifgo', split(layer_params['wi']), split(layer_params['wh']),
                             split(layer_params['b'])):
    cell[f'i{name}'] = {'kernel': wi}
    cell[f'h{name}'] = {'kernel': wh, 'bias': b}
  return cell
