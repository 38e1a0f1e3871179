"""Data parallelism on JAX's own runtime: a 1-D ``Mesh`` over devices (and hosts).

The parallel-streams axis of the batch is sharded over the mesh axis ``'streams'``; the
parameters and the optimizer state are replicated. The jitted train step is unchanged: XLA
inserts the gradient all-reduce because the loss is a mean over a sharded axis. On one device
the placement is a no-op and the program is the same.
"""
from __future__ import annotations

from typing import Optional

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from lstm_jax import data as data_lib

AXIS = 'streams'


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int) -> None:
  """``jax.distributed.initialize`` for a multi-process run; call before any JAX computation.

  On CPU the cross-process collectives use gloo (JAX's default CPU implementation).
  """
  if num_processes <= 1:
    return
  if not coordinator_address:
    raise data_lib.DataError('--num_processes > 1 needs --coordinator_address=HOST:PORT')
  if not 0 <= process_id < num_processes:
    raise data_lib.DataError(f'--process_id must be in [0, {num_processes}), got {process_id}')
  if jax.distributed.is_initialized():
    return
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


class Placement:
  """Where training arrays live: ``mesh=None`` means the default single device."""

  def __init__(self, mesh: Optional[Mesh]):
    self.mesh = mesh

  @classmethod
  def for_streams(cls, num_devices: int, n_streams: int) -> 'Placement':
    """``num_devices``: 1 = one device, 0 = every device of every process, N = the first N."""
    if num_devices == 1 and jax.process_count() == 1:
      return cls(None)
    devices = jax.devices()
    if num_devices > 0:
      if num_devices > len(devices):
        raise data_lib.DataError(f'--num_devices={num_devices} but only {len(devices)} devices '
                                 f'are visible ({devices[0].platform})')
      devices = devices[:num_devices]
    if n_streams % len(devices):
      raise data_lib.DataError(f'n_streams ({n_streams}) must be a multiple of the number of '
                               f'devices ({len(devices)}) to shard the streams evenly')
    return cls(Mesh(np.asarray(devices), (AXIS,)))

  @property
  def n_devices(self) -> int:
    return 1 if self.mesh is None else self.mesh.size

  def _put(self, tree, spec_for):
    if self.mesh is None:
      return jax.tree.map(jax.numpy.asarray, tree)

    def put(a):
      a = np.asarray(a)
      sharding = NamedSharding(self.mesh, spec_for(a))
      # Each process materializes only the slices its own devices hold.
      return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put, tree)

  def streams(self, tree, axis: int):
    """Shards the parallel-streams axis ``axis`` of every array in ``tree``."""
    return self._put(tree, lambda a: P(*([None] * axis + [AXIS])))

  def replicated(self, tree):
    return self._put(tree, lambda a: P())


def to_host(tree):
  """Host copy of a (replicated or single-device) pytree, also in a multi-process run."""
  def get(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      if not a.is_fully_replicated:
        raise ValueError('to_host needs replicated arrays in a multi-process run')
      return np.asarray(a.addressable_data(0))
    return np.asarray(a)
  return jax.tree.map(get, tree)
