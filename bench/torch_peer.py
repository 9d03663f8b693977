"""PyTorch side of the peer benchmarks: the tutorial's char-LSTM, trained and sampled in torch.

The model is embedding(64) -> 2-layer nn.LSTM(256, dropout 0.5) -> dropout 0.5 -> Linear(256, V).
`load_jax_params` loads lstmgen's fused [i, f, g, o] params into it, so both frameworks sample
from the same weights; `numpy_forward` is a framework-free reference that both must match.
Everything takes numpy arrays and returns numpy arrays or plain python numbers.
"""

import contextlib
import os
import re
import time

import numpy as np
import torch
from torch import nn

from lstmgen import hostcpu


class CharLSTM(nn.Module):
  """The tutorial's model. `forward` takes and returns the (h, c) state so sampling can carry it."""

  def __init__(self, vocab_size, embed=64, hidden=256, layers=2, dropout=0.5):
    super().__init__()
    self.embed = nn.Embedding(vocab_size, embed)
    self.lstm = nn.LSTM(embed, hidden, num_layers=layers, dropout=dropout, batch_first=True)
    self.dropout = nn.Dropout(dropout)
    self.logits = nn.Linear(hidden, vocab_size)

  def forward(self, tokens_BxT, state=None):
    hs_BxTxH, state = self.lstm(self.embed(tokens_BxT), state)
    return self.logits(self.dropout(hs_BxTxH)), state


@contextlib.contextmanager
def _num_threads(threads):
  """Temporarily sets torch's intra-op thread count (a process-wide setting), then restores it."""
  previous = torch.get_num_threads()
  if threads is not None:
    torch.set_num_threads(threads)
  try:
    yield
  finally:
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- training


def _sync(device):
  """Waits for the device's queued work (CUDA runs asynchronously; the CPU does not)."""
  if torch.device(device).type == 'cuda':
    torch.cuda.synchronize(device)


def _train_step(model, optimizer, inputs_BxT, targets_BxT, bf16):
  optimizer.zero_grad(set_to_none=True)
  # Params stay fp32; autocast only changes the dtype the ops compute in.
  with torch.autocast(inputs_BxT.device.type, dtype=torch.bfloat16, enabled=bf16):
    logits_BxTxV, _ = model(inputs_BxT)
    # Loss in fp32 whatever the logits' dtype, as the JAX side does: no bf16 log-softmax over V.
    loss = nn.functional.cross_entropy(
        logits_BxTxV.float().reshape(-1, logits_BxTxV.shape[-1]), targets_BxT.reshape(-1))
  loss.backward()
  nn.utils.clip_grad_norm_(model.parameters(), 5.0)
  optimizer.step()
  return loss


def torch_train_runner(vocab_size, bf16: bool, batch=128, seq_len=100, hidden=256, layers=2,
                       embed=64, threads=None, device='cpu'):
  """A function that runs `steps` training steps on one fixed random batch and returns seconds.

  Two warm-up steps run here. A CPU without bf16 LSTM kernels raises RuntimeError here too.
  On 'cuda', nn.LSTM is cuDNN's.
  """
  torch.manual_seed(0)
  model = CharLSTM(vocab_size, embed, hidden, layers).train().to(device)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  # One fixed batch, made before timing: the benchmark measures the step, not the data.
  tokens = torch.randint(0, vocab_size, (batch, seq_len + 1),
                         generator=torch.Generator().manual_seed(0)).to(device)
  inputs_BxT, targets_BxT = tokens[:, :-1], tokens[:, 1:]

  def run(steps: int) -> float:
    with _num_threads(threads):
      start = time.perf_counter()
      for _ in range(steps):
        _train_step(model, optimizer, inputs_BxT, targets_BxT, bf16)
      _sync(device)
      return time.perf_counter() - start

  run(2)
  return run


# ----------------------------------------------------------------------------- JAX weights


def _unwrap(params):
  # Accept both a bare param dict and flax's {'params': ...} variables.
  return params['params'] if 'params' in params else params


def _num_layers(params):
  return sum(1 for name in params if re.fullmatch(r'lstm_\d+', name))


def _f32(array):
  # np.array copies: from_numpy would share (and warn on) read-only jax-backed buffers.
  return torch.from_numpy(np.array(array, dtype=np.float32))


def load_jax_params(params: dict) -> CharLSTM:
  """An eval-mode CharLSTM with lstmgen's weights: wi.T -> weight_ih, b -> bias_ih, bias_hh = 0."""
  params = _unwrap(params)
  vocab_size, embed = np.shape(params['embed']['embedding'])
  hidden = np.shape(params['lstm_0']['wh'])[0]
  model = CharLSTM(vocab_size, embed, hidden, _num_layers(params))
  with torch.no_grad():
    model.embed.weight.copy_(_f32(params['embed']['embedding']))
    for k in range(model.lstm.num_layers):
      layer = params[f'lstm_{k}']
      # Same gate order (i, f, g, o) in both; torch stores kernels as [4H, in], one bias per matmul.
      getattr(model.lstm, f'weight_ih_l{k}').copy_(_f32(layer['wi']).T)
      getattr(model.lstm, f'weight_hh_l{k}').copy_(_f32(layer['wh']).T)
      getattr(model.lstm, f'bias_ih_l{k}').copy_(_f32(layer['b']))
      getattr(model.lstm, f'bias_hh_l{k}').zero_()
    model.logits.weight.copy_(_f32(params['logits']['kernel']).T)
    model.logits.bias.copy_(_f32(params['logits']['bias']))
  return model.eval()


def random_params(vocab_size, embed=64, hidden=256, layers=2, seed=0, scale=0.1) -> dict:
  """lstmgen-shaped random params (numpy fp32), for checks and benchmarks without a checkpoint."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: (scale * rng.standard_normal(shape)).astype(np.float32)
  params = {'embed': {'embedding': normal(vocab_size, embed)}}
  for k in range(layers):
    params[f'lstm_{k}'] = {'wi': normal(embed if k == 0 else hidden, 4 * hidden),
                           'wh': normal(hidden, 4 * hidden), 'b': normal(4 * hidden)}
  params['logits'] = {'kernel': normal(hidden, vocab_size), 'bias': normal(vocab_size)}
  return params


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def numpy_forward(params, tokens) -> np.ndarray:
  """Logits [B, T, V] from lstmgen params by the plain formula, in float64, from a zero state."""
  params = _unwrap(params)
  p = lambda a: np.asarray(a, np.float64)  # float64 so the reference's own rounding is negligible.
  tokens_BxT = np.asarray(tokens)
  x_BxTxD = p(params['embed']['embedding'])[tokens_BxT]
  for k in range(_num_layers(params)):
    layer = params[f'lstm_{k}']
    wi, wh, b = p(layer['wi']), p(layer['wh']), p(layer['b'])
    H = wh.shape[0]
    h_BxH = np.zeros((tokens_BxT.shape[0], H))
    c_BxH = np.zeros_like(h_BxH)
    hs = []
    for t in range(tokens_BxT.shape[1]):
      i, f, g, o = np.split(x_BxTxD[:, t] @ wi + h_BxH @ wh + b, 4, axis=-1)
      c_BxH = _sigmoid(f) * c_BxH + _sigmoid(i) * np.tanh(g)
      h_BxH = _sigmoid(o) * np.tanh(c_BxH)
      hs.append(h_BxH)
    x_BxTxD = np.stack(hs, axis=1)
  return x_BxTxD @ p(params['logits']['kernel']) + p(params['logits']['bias'])


def torch_logits(model, tokens) -> np.ndarray:
  """The model's logits [B, T, V] (fp32 numpy) from a zero state."""
  with torch.inference_mode():
    logits_BxTxV, _ = model(torch.as_tensor(np.asarray(tokens), dtype=torch.long))
  return logits_BxTxV.numpy()


def max_logit_error(params, tokens) -> float:
  """Max |torch - numpy_forward| over the logits: ~1e-6 when both frameworks compute one model."""
  return float(np.max(np.abs(torch_logits(load_jax_params(params), tokens)
                             - numpy_forward(params, tokens))))


# ----------------------------------------------------------------------------- sampling


def _sample(logits_BxV, temperature, generator):
  probs_BxV = torch.softmax(logits_BxV.float() / temperature, dim=-1)
  return torch.multinomial(probs_BxV, 1, generator=generator)  # [B, 1]


def torch_stateful_sample(model, prompt_ids, length, temperature, seed):
  """char-rnn sampling: prime (h, c) on the prompt once, then feed one char at a time.

  Returns (ids [B, length], chars_per_sec); the time includes priming, the rate counts B * length.
  Runs on the model's device.
  """
  device = next(model.parameters()).device
  generator = torch.Generator(device).manual_seed(seed)
  prompt_BxP = torch.as_tensor(np.asarray(prompt_ids), dtype=torch.long, device=device)
  out = []
  with torch.inference_mode():
    start = time.perf_counter()
    logits_BxPxV, state = model(prompt_BxP)
    next_Bx1 = _sample(logits_BxPxV[:, -1], temperature, generator)
    out.append(next_Bx1)
    for _ in range(length - 1):
      logits_Bx1xV, state = model(next_Bx1, state)
      next_Bx1 = _sample(logits_Bx1xV[:, -1], temperature, generator)
      out.append(next_Bx1)
    ids_BxL = torch.cat(out, dim=1).cpu()  # Waits for the device.
    seconds = time.perf_counter() - start
  return ids_BxL.numpy(), prompt_BxP.shape[0] * length / seconds


def tflearn_window_sample(model, prompt_ids, length, temperature, seed):
  """TFLearn SequenceGenerator.generate: per new char, rerun the last P chars from a zero state.

  Returns (ids [1, length], chars_per_sec). O(P) LSTM steps per char: the slow baseline.
  """
  generator = torch.Generator().manual_seed(seed)
  window_1xP = torch.as_tensor(np.asarray(prompt_ids), dtype=torch.long)
  out = []
  with torch.inference_mode():
    start = time.perf_counter()
    for _ in range(length):
      logits_1xPxV, _ = model(window_1xP)  # No state passed: zero (h, c), as TFLearn does.
      next_1x1 = _sample(logits_1xPxV[:, -1], temperature, generator)
      out.append(next_1x1)
      window_1xP = torch.cat([window_1xP[:, 1:], next_1x1], dim=1)
    seconds = time.perf_counter() - start
  return torch.cat(out, dim=1).numpy(), window_1xP.shape[0] * length / seconds


# ----------------------------------------------------------------------------- machine


def _seconds_per_call(fn, min_seconds=0.2, repeats=3):
  """Best-of-`repeats` mean time per call, each repeat running at least `min_seconds`."""
  fn()  # Warm-up: first calls pick kernels and allocate.
  best = float('inf')
  for _ in range(repeats):
    calls, start = 0, time.perf_counter()
    while True:
      fn()
      calls += 1
      elapsed = time.perf_counter() - start
      if elapsed >= min_seconds:
        break
    best = min(best, elapsed / calls)
  return best


def _matmul_gflops(m, k, n, dtype):
  generator = torch.Generator().manual_seed(0)
  a = torch.randn(m, k, generator=generator).to(dtype)
  b = torch.randn(k, n, generator=generator).to(dtype)
  out = torch.empty(m, n, dtype=dtype)  # Preallocated: time the matmul, not the allocator.
  return 2 * m * k * n / _seconds_per_call(lambda: torch.mm(a, b, out=out)) / 1e9


def matmul_peak_gflops(dtype='float32', m=128, k=256, n=1024, threads=None) -> float:
  """torch.mm GFLOP/s at [m, k] @ [k, n] (default: the recurrence's step)."""
  torch_dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[dtype]
  with _num_threads(threads):
    return _matmul_gflops(m, k, n, torch_dtype)


def describe_machine() -> str:
  """One line: CPU model, core and thread counts, AMX/AVX-512/AVX2 flags, torch version."""
  info = hostcpu.read_cpuinfo()
  model = re.search(r'^model name\s*:\s*(.*)$', info, re.M)
  wide = sorted(f for f in hostcpu.cpu_flags(info) or () if f.startswith(('amx', 'avx512', 'avx2')))
  # What torch's own dispatcher detected, which can differ from the flags (e.g. under a VM).
  capability = getattr(torch.backends.cpu, 'get_cpu_capability', lambda: 'unknown')()
  return (f"CPU: {model.group(1) if model else 'unknown'}; os.cpu_count={os.cpu_count()}; "
          f"torch threads={torch.get_num_threads()}; flags: {' '.join(wide) or 'none'}; "
          f"torch {torch.__version__} (cpu capability {capability})")
