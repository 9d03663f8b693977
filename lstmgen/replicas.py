"""Where the training state lives: replicated on every device, or split by rows over all of them."""

import jax
import numpy as np
from jax.experimental import multihost_utils


def unreplicate(tree):
  """This process's first copy of a replicated tree, read locally.

  Indexing the global array instead would run a computation that the other processes do not join,
  and deadlock them at their next collective.
  """
  return jax.tree.map(lambda x: x.addressable_data(0).reshape(x.shape[1:]), tree)


def gather_rows(tree):
  """The global [batch, ...] host value of a tree split over every device of every process."""

  def gather(x):
    # A host array (a run relaunched at its last step never put its carry on the devices) is
    # already this process's [local devices, rows, ...].
    parts = [s.data for s in x.addressable_shards] if isinstance(x, jax.Array) else [x]
    local = np.concatenate([np.asarray(p) for p in parts])
    local = local.reshape(-1, *x.shape[2:])  # [local devices * rows per device, ...]
    if jax.process_count() > 1:  # Rows are laid out by process, as the batch is.
      local = multihost_utils.process_allgather(local).reshape(-1, *local.shape[1:])
    return local

  return jax.tree.map(gather, tree)
