"""Process-group set-up for torchrun launches, the samplers the trainers shard with (plain and
length-bucketed), and a check that replicas stayed identical.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; a plain ``python script.py`` has none of
them and runs as a single process without a process group. gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import gc
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler

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


class LengthBucketSampler(Sampler[list[int]]):
    """A batch sampler of samples of similar length: each rank its share, every index once per epoch.

    Per epoch, from (``seed``, the epoch of :meth:`set_epoch`, the lengths of :meth:`set_lengths`) alone,
    so every rank computes the same plan and a resumed run the same batches:

    1. the indices are shuffled (a generator seeded with ``seed + epoch``, as DistributedSampler does);
    2. windows of ``window_batches * batch_size * num_replicas`` of them are sorted by length (ties keep
       the shuffled order) and cut into batches of ``batch_size``; only the last batch of the last window
       can be short. Windows, not the whole epoch, so a batch's members still vary from epoch to epoch;
    3. when the number of batches is not a multiple of ``num_replicas``, the largest batches are halved
       until it is, so every rank runs the same number of steps without repeating a sample;
    4. each run of ``num_replicas`` consecutive batches is one step (rank ``r`` takes the ``r``-th), so
       the ranks of a step get batches of similar length and none waits long for the others; the
       steps are shuffled with the same generator.

    Call :meth:`set_lengths` and :meth:`set_epoch` before every epoch. ``skip_batches`` (batches of this
    rank already trained on) starts an epoch part-way, for a run resumed mid-epoch.

    Batches of similar length change the training batches (and BatchNorm's statistics over their
    padding) against the original's random batches; see the trainer's ``--bucket_by_length``.

    Args:
        num_samples: the dataset's size N.
        batch_size: samples per batch and rank.
        num_replicas: the world size; ``rank``: this process's rank.
        seed: base of the shuffles.
        window_batches: batches per rank in one sorting window.
    """

    def __init__(self, num_samples: int, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 window_batches: int = 8) -> None:
        if batch_size < 1 or window_batches < 1:
            raise ValueError(f"batch_size ({batch_size}) and window_batches ({window_batches}) must be at least 1")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.window = int(window_batches) * self.batch_size * self.num_replicas
        self.epoch = 0
        self.skip_batches = 0
        self.lengths: np.ndarray | None = None
        batches = -(-self.num_samples // self.batch_size)
        self.total_batches = -(-batches // self.num_replicas) * self.num_replicas
        if self.total_batches > self.num_samples:
            raise ValueError(f"{self.num_samples} samples in batches of {self.batch_size} cannot give each of "
                             f"{self.num_replicas} processes the same number of batches without repeating "
                             "samples; use fewer processes or a larger batch")

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose shuffle comes next (call it every epoch, as DistributedSampler.set_epoch)."""
        self.epoch = int(epoch)

    def set_lengths(self, lengths: Sequence[int] | np.ndarray) -> None:
        """Every sample's length in the coming epoch, ``(N,)`` (the same on every rank)."""
        lengths = np.asarray(lengths)
        if lengths.shape != (self.num_samples,):
            raise ValueError(f"expected {self.num_samples} lengths, got an array of shape {lengths.shape}")
        self.lengths = lengths

    def batches(self) -> list[list[int]]:
        """Every batch of this epoch in step order, all ranks' (step ``s`` holds batches
        ``s * num_replicas .. (s + 1) * num_replicas - 1``)."""
        if self.lengths is None:
            raise RuntimeError("LengthBucketSampler: call set_lengths before iterating")
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_samples, generator=g).numpy()
        batches: list[np.ndarray] = []
        for start in range(0, self.num_samples, self.window):
            win = order[start:start + self.window]
            win = win[np.argsort(self.lengths[win], kind="stable")]
            batches.extend(win[i:i + self.batch_size] for i in range(0, len(win), self.batch_size))
        while len(batches) < self.total_batches:
            big = max(range(len(batches)), key=lambda i: len(batches[i]))  # the first largest
            half = -(-len(batches[big]) // 2)
            batches[big:big + 1] = [batches[big][:half], batches[big][half:]]
        steps = torch.randperm(len(batches) // self.num_replicas, generator=g).tolist()
        w = self.num_replicas
        return [batches[s * w + r].tolist() for s in steps for r in range(w)]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.batches()[self.rank::self.num_replicas]
        return iter(mine[self.skip_batches:])

    def __len__(self) -> int:
        return max(0, self.total_batches // self.num_replicas - self.skip_batches)


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
