"""Data-parallel training over processes: ``torchrun --nproc_per_node N -m asymnet.run STUDY.yaml``.

Every process (rank) holds the whole model and trains on its slice of each global minibatch: NCCL on
GPUs, gloo on CPUs. The design makes a run's arithmetic independent of the number of processes:

- **One random stream.** Every rank draws the *global* batch (rows, dequantisation, heating noise) from
  the same generator and keeps its own rows (:meth:`Shard.take`, :meth:`Shard.draw`). The ranks'
  generators therefore never diverge, a checkpoint's generator state is the single-process state, and a
  run resumes under any world size that divides the batch. The price is that each rank draws the
  noise of the whole batch, which is small beside the network's forward and backward passes.
- **One all-reduce per step.** The gradients (and the figures the step reports) are averaged in one
  flat buffer after the backward pass. DistributedDataParallel's autograd hooks are not used: a
  walkback step evaluates the network K times before one backward, and the local STDP rule writes
  gradients without autograd, so neither fits DDP's one-forward-one-backward bookkeeping.
- **p\\* from the global batch.** The moments of s_K are averaged across ranks before p* moves.

With equal shard sizes the average of per-rank batch means is the global batch mean, so a step on N
processes equals a single-process step on the same global batch to round-off (tests/test_distributed.py,
float64). Rank 0 alone writes the HDF5 log, the checkpoints and the figures.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

from asymnet.errors import AsymnetError

TIMEOUT = datetime.timedelta(hours=2)  # rank 0 evaluates while the others wait at the next all-reduce


class DistributedError(AsymnetError):
    """A process-group setting that cannot work; the message says the fix."""


@dataclass(frozen=True)
class Shard:
    """This process's share of every global minibatch: rows [rank * b, (rank + 1) * b) of a global batch
    of world_size * b. ``Shard()`` is the single-process case, where every method is the identity."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def rows(self, global_size: int) -> slice:
        if global_size % self.world_size:
            raise DistributedError(f"a global batch of {global_size} does not split over {self.world_size} "
                                   f"processes; make training.batch_size a multiple of the number of processes")
        size = global_size // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global-batch tensor (batch first)."""
        return tensor[self.rows(len(tensor))] if self.active else tensor

    def draw(self, kind: str, local_shape: tuple[int, ...], generator: torch.Generator | None,
             dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """This rank's rows of a global draw (``kind``: "normal" or "uniform") whose local part has shape
        ``local_shape``; None in a single process, where the operator draws for itself."""
        if not self.active:
            return None
        shape = (local_shape[0] * self.world_size, *local_shape[1:])
        make = torch.randn if kind == "normal" else torch.rand
        return self.take(make(shape, generator=generator, dtype=dtype, device=device))

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the ranks, in one all-reduce (a no-op in one process)."""
        if not self.active or not tensors:
            return
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for t in tensors:
            t.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()

    def broadcast_text(self, text: str | None) -> str | None:
        """Rank 0's ``text`` on every rank (None on rank 0 means it failed: every rank gets None)."""
        if not self.active:
            return text
        import torch.distributed as dist

        device = _collective_device()
        payload = (text or "").encode() if self.is_main else b""
        size = torch.tensor([len(payload) if text is not None or not self.is_main else -1], device=device)
        dist.broadcast(size, 0)
        if size.item() < 0:
            return None
        buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
        if self.is_main:
            buffer.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        dist.broadcast(buffer, 0)
        return bytes(buffer.cpu().tolist()).decode()


def _collective_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def start(device_name: str) -> tuple[Shard, torch.device]:
    """The shard and device of this process. Under torchrun (WORLD_SIZE > 1 in the environment) this joins
    the process group, NCCL for ``cuda`` (one GPU per process: cuda:LOCAL_RANK) and gloo for ``cpu``;
    otherwise it is the single process on ``device_name``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Shard(), torch.device(device_name)
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_name == "cuda":
        if torch.cuda.device_count() <= local_rank:
            raise DistributedError(f"process {rank} wants cuda:{local_rank} but this node has "
                                   f"{torch.cuda.device_count()} GPU(s); start at most that many processes per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    return Shard(rank, world_size), device


def stop(shard: Shard) -> None:
    """Leave the process group (a no-op in one process)."""
    if shard.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
