"""Exported models: a run as a small, self-contained directory (config.json, vocab.json, params.npz).

Made by `python -m lstmgen.export`. Parameters only (no optimizer state), float32, in a plain .npz
read with allow_pickle=False: what `python -m lstmgen.generate --checkpoint=DIR` loads, and how the
bundled Grimm model is shipped.
"""

import json
import os

import jax
import numpy as np
from flax import traverse_util

from lstmgen import checkpoint, data
from lstmgen import model as model_lib
from lstmgen.errors import UserError

BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pretrained', 'grimm')
_FILES = ('config.json', 'vocab.json', 'params.npz')


def save(out_dir: str, config, vocab: data.Vocab, params, note: dict | None = None) -> None:
  os.makedirs(out_dir, exist_ok=True)
  checkpoint.save_config(out_dir, config)
  vocab.save(os.path.join(out_dir, 'vocab.json'))
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  np.savez_compressed(os.path.join(out_dir, 'params.npz'),
                      **{k: np.asarray(v, np.float32) for k, v in flat.items()})
  if note:
    with open(os.path.join(out_dir, 'meta.json'), 'w', encoding='utf-8') as f:
      json.dump(note, f, indent=2, sort_keys=True)


def is_model_dir(path: str) -> bool:
  return all(os.path.exists(os.path.join(path, name)) for name in _FILES)


def load(model_dir: str):
  """(config, vocab, model, params) of an exported model directory."""
  if not is_model_dir(model_dir):
    raise UserError(f'{model_dir} is not an exported lstmgen model (it needs {", ".join(_FILES)}); '
                    'make one with python -m lstmgen.export')
  config = checkpoint.load_config(model_dir)
  vocab = data.Vocab.load(os.path.join(model_dir, 'vocab.json'))
  with np.load(os.path.join(model_dir, 'params.npz'), allow_pickle=False) as arrays:
    params = traverse_util.unflatten_dict({k: jax.numpy.asarray(arrays[k]) for k in arrays.files},
                                          sep='/')
  return config, vocab, model_lib.from_config(config, len(vocab)), params
