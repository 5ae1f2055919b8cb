"""Process-group set-up for torchrun launches, the sampler both trainers shard with, and a check that
replicas stayed identical.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; a plain ``python script.py`` has none of
them and runs as a single process without a process group. gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class DeviceError(ValueError):
    """The device asked for does not exist here (a user error: ``s2i.cli`` prints it as one line)."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The one device resolver of every stage: ``auto`` → CUDA when available, else CPU.

    ``cuda`` on a machine without CUDA, or a name other than auto/cpu/cuda, is a :class:`DeviceError`.
    Under torchrun, rank ``local_rank`` of a node gets GPU ``local_rank`` (modulo the GPUs it has).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda was asked for, but torch sees no CUDA device here (use --device cpu)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"--device must be auto, cpu or cuda, got {name!r}")


def init_distributed(device: str = "auto", local_rank_flag: int = 0) -> DistInfo:
    """Joins the process group when launched by torchrun (env://), else returns a single-process info."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", local_rank_flag))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup(wait_for_peers: bool = True) -> None:
    """Leaves the process group while the interpreter is fully alive.

    Collects garbage first so no DistributedDataParallel reducer or pending gloo work object is left to be
    destroyed during interpreter finalisation (which aborts the process with "terminate called without an
    active exception"). After a successful run it also waits for every rank, so none tears its connections
    down while a peer still uses them; after an error it does not (a peer may be stuck in another collective).
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        try:
            if wait_for_peers:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def parameter_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer, in state_dict order: equal iff the weights are bit-identical."""
    h = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def gather_fingerprints(module: torch.nn.Module) -> list[str]:
    """Every rank's :func:`parameter_fingerprint` (a one-element list without a process group)."""
    mine = parameter_fingerprint(module)
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    out: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return [str(x) for x in out]


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can start an epoch part-way (``skip`` = indices of this rank already
    used), so a run resumed mid-epoch sees exactly the batches the uninterrupted run would have seen."""

    skip = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.skip:])

    def __len__(self) -> int:
        # ``skip`` is batches x batch size, which passes the end when the last batch was a short one.
        return max(0, super().__len__() - self.skip)


def run_distributed(fn: Callable[[DistInfo], T], device: str = "auto", local_rank_flag: int = 0) -> T:
    """Runs ``fn(dist)`` inside the process group of a torchrun launch (or alone), and leaves the group.

    The scaffolding every multi-process stage shares: join (:func:`init_distributed`), run, and
    :func:`cleanup` — after an error without waiting for the other ranks, which may be stuck elsewhere.
    """
    dist_info = init_distributed(device, local_rank_flag)
    try:
        result = fn(dist_info)
    except BaseException:
        cleanup(wait_for_peers=False)
        raise
    cleanup()
    return result
