"""What a workdir holds: config.json, vocab.json and Orbax checkpoints of the train state.

Everything is JSON or array data (no pickle), so loading a workdir never executes code. A
checkpoint holds one host copy of the state and restores onto whatever devices are present.
"""

import dataclasses
import json
import os

import jax
import ml_collections
from absl import logging
import orbax.checkpoint as ocp

from lstmgen import data
from lstmgen.errors import UserError

# Config fields that define a run's model and data: resuming with different values is refused.
RUN_DEFINING = ('model', 'data.corpus', 'data.path', 'data.val_fraction', 'data.strip_gutenberg',
                'dtype', 'seq_len', 'stateful', 'seed')
# Fields added after runs were saved without them, and the value those runs used.
BACKFILL = {'stateful': False, 'lr_schedule': 'constant', 'model.weight_drop': 0.0,
            'cpu_kernels': False, 'cudnn': False}


def config_path(workdir: str) -> str:
  return os.path.join(workdir, 'config.json')


def vocab_path(workdir: str) -> str:
  return os.path.join(workdir, 'vocab.json')


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  data._atomic_write(config_path(workdir), config.to_json(indent=2, sort_keys=True))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = config_path(workdir)
  if not os.path.exists(path):
    raise UserError(f'{workdir} holds no lstmgen run (no config.json); train one first with '
                    f'python -m lstmgen.main --config=configs/grimm.py --workdir={workdir}')
  with open(path, encoding='utf-8') as f:
    saved = json.load(f)
  for field, value in BACKFILL.items():
    *parents, name = field.split('.')
    node = saved
    for parent in parents:
      node = node.setdefault(parent, {})
    node.setdefault(name, value)
  return ml_collections.ConfigDict(saved)


def flatten(d, prefix='') -> dict:
  """{'model': {'dropout': 0.5}} -> {'model.dropout': 0.5}."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = list(v) if isinstance(v, tuple) else v
  return out


def differing_fields(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict,
                     prefixes=RUN_DEFINING) -> list[str]:
  """Fields under `prefixes` (all fields if empty) whose values differ, as 'field: old -> new'."""
  a, b = flatten(json.loads(old.to_json())), flatten(json.loads(new.to_json()))
  for paths in (a, b):  # Runs saved before paths were made absolute hold them as typed.
    if paths.get('data.path'):
      paths['data.path'] = os.path.abspath(paths['data.path'])
  keys = sorted(k for k in set(a) | set(b)
                if not prefixes or any(k == p or k.startswith(p + '.') for p in prefixes))
  return [f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in keys if a.get(k) != b.get(k)]


def manager(workdir: str, keep: int = 3, read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                         read_only=read_only)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), 'checkpoints'),
                               options=options)


def abstract(tree):
  """Shapes and dtypes of `tree` placed on this process's first device: the restore target."""
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def stored(state) -> dict:
  """The fields of a train state that a checkpoint holds: those that are not None.

  A field added later (the stateful carry) is absent from checkpoints of runs without it, so
  checkpoints written before it existed still restore.
  """
  return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)
          if getattr(state, f.name) is not None}


def save(mngr: ocp.CheckpointManager, step: int, state) -> None:
  mngr.save(step, args=ocp.args.StandardSave(stored(state)), force=True)


def restore(mngr: ocp.CheckpointManager, target, step: int | None = None, move_aside=True):
  """The checkpoint at `step` restored into `target`'s structure.

  Without a step: the latest one that reads back; a damaged one (a disk error, a file truncated
  by hand) is skipped with a warning, so a run never stalls on its newest checkpoint. Once an
  older one has read back, the damaged ones are moved aside (with `move_aside`; never by a
  read-only command): when none reads back, the fault is more likely the target (a state of
  another shape) than every checkpoint, and nothing is touched.
  """
  steps = [step] if step is not None else sorted(mngr.all_steps(), reverse=True)
  damaged = []
  for i, s in enumerate(steps):
    try:
      restored = mngr.restore(s, args=ocp.args.StandardRestore(abstract(stored(target))))
    except Exception as e:  # Orbax raises many types (ValueError, OSError, tensorstore errors).
      damaged.append(s)
      reason = str(e).splitlines()[0][:300]
      if i + 1 == len(steps):
        raise UserError(f'the checkpoint at step {s} in {mngr.directory} cannot be read '
                        f'({reason}); delete it to start over') from None
      logging.warning('the checkpoint at step %d cannot be read (%s); trying step %d', s, reason,
                      steps[i + 1])
      continue
    if move_aside and damaged and jax.process_index() == 0:
      for d in damaged:  # Aside, not deleted: the user may want to look at it.
        path = os.path.join(str(mngr.directory), str(d))
        logging.warning('moving the damaged checkpoint at step %d aside to %s.damaged', d, path)
        os.replace(path, f'{path}.damaged')
      mngr.reload()
    return target.replace(**restored)
