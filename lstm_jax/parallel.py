"""Data parallelism on JAX's own runtime: a 1-D ``Mesh`` over devices (and hosts).

The parallel-streams axis of the batch is sharded over the mesh axis ``'streams'``; the
parameters and the optimizer state are replicated. The jitted train step is unchanged: XLA
inserts the gradient all-reduce because the loss is a mean over a sharded axis. On one device
the placement is a no-op and the program is the same.

On a multi-core CPU, JAX shows one CPU device unless told otherwise (``set_cpu_devices``). With
one device per core, streaming inference over several streams runs one independent time loop
per core (``inference_shards``) instead of one loop whose every step's matmul is split across
threads and joined again.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

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


def usable_cores() -> int:
  """The CPU cores this process may run on: its affinity mask (``taskset``, a container's
  cpuset), not the host's count. On a 16-core host pinned to 2, ``os.cpu_count()`` said 16 and
  the long forward ran 8 time loops on 2 cores."""
  try:
    return len(os.sched_getaffinity(0)) or 1
  except (AttributeError, OSError):  # no affinity call on this platform
    return os.cpu_count() or 1


def set_cpu_devices(n: int = 0) -> None:
  """Shows JAX ``n`` CPU devices (0: one per usable core); call right after ``import jax``,
  before any JAX computation (JAX cannot change the count of an initialized backend)."""
  n = n or usable_cores()
  try:
    jax.config.update('jax_num_cpu_devices', int(n))
  except RuntimeError as e:
    raise RuntimeError(f'set_cpu_devices({n}) came after JAX started its CPU backend; call it '
                       'first thing after import jax') from e


def inference_shards(batch_size: int, lstm_sizes: Sequence[int], n_devices: int,
                     platform: str, kernel_loop: bool = False) -> int:
  """How many devices to shard an inference batch over (1: no sharding).

  ``kernel_loop``: a layer runs on the Pallas loop (``ScanConfig.uses_pallas``). One GPU runs
  up to 128 streams as parallel programs of its kernel, so nothing is sharded; the kernel does
  split by streams over devices (``pallas_loop``, for training on several), but that split was
  never timed for inference.

  The most devices, up to ``n_devices``, that split the batch evenly. On CPU only while the
  largest LSTM layer has at most 128 units: per-core loops were 1.07-1.85x faster at 2-32
  streams of 64 and 128 units, while at 256 units they ranged from 0.74x (8 streams) and 0.91x
  (the wide forward) to 1.29x, where one loop's large matmul already keeps both cores busy
  (docs/performance.md, "Streams over CPU cores for inference"). Training stays on one device
  unless asked (``--num_devices``): over the 2 CPU cores the wide train step was 0.96x, the
  long one 1.08-1.19x and the default job 1.26x, but the split changes the gradients' rounding
  with the machine's core count.
  """
  if kernel_loop or (platform == 'cpu' and max(lstm_sizes, default=0) > 128):
    return 1
  return max(d for d in range(1, max(1, min(n_devices, batch_size)) + 1) if batch_size % d == 0)


class Placement:
  """Where training (or streamed inference) arrays live: ``mesh=None`` means the default
  single device."""

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

  @classmethod
  def for_inference(cls, batch_size: int, lstm_sizes: Sequence[int], scan=None,
                    cell: str = 'lstm') -> 'Placement':
    """The streams of an inference batch over this process's devices (``inference_shards``).
    ``scan``, ``cell``: the model's ``ScanConfig`` and cell name, which say whether a layer
    runs on the Pallas loop (only the LSTM cell's layers can)."""
    devices = jax.local_devices()
    kernel_loop = (scan is not None and cell == 'lstm' and
                   any(scan.uses_pallas(batch_size, n, training=False) for n in lstm_sizes))
    n = inference_shards(batch_size, lstm_sizes, len(devices), devices[0].platform, kernel_loop)
    return cls(None if n == 1 else Mesh(np.asarray(devices[:n]), (AXIS,)))

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
