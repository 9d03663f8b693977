"""Where the training state lives: replicated on every device, or split by rows over all of them."""

import jax
import numpy as np
from jax.experimental import multihost_utils


def _step_sharding(axis_name: str) -> jax.sharding.NamedSharding:
  """How the pmapped step lays out its outputs: a mesh of every device, one axis, its name."""
  mesh = jax.sharding.Mesh(np.array(jax.devices()), (axis_name,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis_name))


def split_over_devices(tree, axis_name: str = 'batch'):
  """Host arrays of [local devices, ...] as global arrays laid out as the pmapped step's outputs.

  The step's inputs are then laid out like its outputs from the first step on. Laid out otherwise
  (flax's `replicate` names its mesh axis '_device_put_sharded'), the second step compiled the
  whole update again: a second time to first step at every launch.
  """
  sharding = _step_sharding(axis_name)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      tree)


def replicate(tree, axis_name: str = 'batch'):
  """A copy of `tree` on every device, laid out as the pmapped step's outputs."""
  copies = jax.local_device_count()
  return split_over_devices(
      jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (copies, *np.shape(x))), tree),
      axis_name)


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
