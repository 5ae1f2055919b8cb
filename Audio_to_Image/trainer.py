"""One training epoch, one evaluation pass and the checkpoint dict of the speech encoder (docs/original.md#s7, §9).

No argparse and no files here beyond the checkpoint writer; ``training_loop.py`` wires these together.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from Audio_to_Image.losses import LossWeights, encoder_loss
from Audio_to_Image.speech_encoder import CNNRNN, encoder_steps
from s2i.checkpoints import atomic_link, atomic_save
from s2i.metrics.retrieval import speech_encoder_metrics
from s2i.precision import autocast
from s2i.rng import rng_state

CHECKPOINT_FORMAT = "s2i.speech_encoder.v1"


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or inf; training stops and the last checkpoint on disk is kept."""


def unwrap(model: torch.nn.Module) -> CNNRNN:
    return model.module if hasattr(model, "module") else model


def _forward(model: torch.nn.Module, batch: dict, device: torch.device, precision: str
             ) -> tuple[torch.Tensor, ...]:
    """``(a (B, D) float32 sentence embeddings, v (B, D) teacher features, y (B,) labels)`` of a batch.

    The encoder runs under ``precision``'s autocast; ``a`` comes out float32 whatever it ran in, so the
    losses see float32 (for fp32 it is the model's own output tensor). A length-bucketed batch, cut short
    of ``full_frames`` (:class:`Audio_to_Image.datasets.CutToLongest`), is averaged over the nominal
    step count, as the full-length batch would be.
    """
    net = unwrap(model)
    spec = batch["spec"].to(device, non_blocking=True)
    steps = encoder_steps(batch["n_frames"], net.steps_for(spec.shape[-1]))
    with autocast(precision, device):
        if "full_frames" in batch:
            _, a = model(spec, steps, full_steps=net.steps_for(int(batch["full_frames"])))
        else:
            _, a = model(spec, steps)
    v = batch["image_feat"].to(device, non_blocking=True)
    y = batch["label"].to(device, non_blocking=True)
    return a.float(), v, y


class _Averages:
    """Count-weighted running means of the logged scalars (the original's end-of-epoch line)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def add(self, values: dict[str, float], n: int) -> None:
        for k, v in values.items():
            self.sums[k] += float(v) * n
        self.count += n

    def means(self) -> dict[str, float]:
        return {k: s / max(self.count, 1) for k, s in self.sums.items()}


@dataclass
class EpochProgress:
    """How far an epoch has got: batches trained, the running sums behind its end-of-epoch line, seconds.

    A run stopped part-way saves it in its checkpoint (``mid_epoch``), so the resumed run skips the
    batches already trained on and still logs the epoch's averages over all of them.
    """

    epoch: int
    batches: int = 0
    avg: _Averages = field(default_factory=_Averages)
    seconds: float = 0.0
    stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches, "count": self.avg.count,
                "sums": dict(self.avg.sums), "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochProgress:
        avg = _Averages()
        avg.sums.update({str(k): float(v) for k, v in d["sums"].items()})
        avg.count = int(d["count"])
        return cls(int(d["epoch"]), int(d["batches"]), avg, float(d["seconds"]))


def _format(values: dict[str, float]) -> str:
    return (
        f"loss {values['loss']:.4f} (jel {values['jel']:.4f}, l1 {values['l1']:.5f}, "
        f"distill {values['distill']:.6f}) accu {values['accu']:.2f}"
    )


@dataclass
class TrainSetup:
    """What every epoch of a run trains with, bundled so :func:`train_one_epoch` reads clearly.

    Args:
        model: the encoder, or its DistributedDataParallel wrapper.
        loader: yields batches with ``spec (B, n_mels, T)``, ``n_frames (B,)``, ``image_feat (B, D)``
            and ``label (B,)``.
        optimizer: steps ``model``'s parameters.
        weights: which loss terms are on and their weights.
        device: where ``model`` lives; the batches go there.
        num_epochs: the run's epoch count (for the status lines).
        print_every: iterations between status lines (0 = none).
        log: where the status lines go.
        show_progress: show a progress bar.
        prototypes: ``(K, D)`` class targets of the optional prototype loss (``weights.proto``).
        should_stop: asked after every batch; when it says yes the epoch ends there.
        precision: ``fp32``, ``bf16`` or ``fp16`` (resolved, :func:`s2i.precision.resolve_precision`): the
            forward pass runs under its autocast; losses, weights and optimizer state stay float32.
        scaler: the gradient scaler (:func:`s2i.precision.grad_scaler`), used when it is enabled (fp16).
    """

    model: torch.nn.Module
    loader: torch.utils.data.DataLoader
    optimizer: torch.optim.Optimizer
    weights: LossWeights
    device: torch.device
    num_epochs: int
    print_every: int
    log: Callable[[str], None]
    show_progress: bool
    prototypes: torch.Tensor | None = None
    should_stop: Callable[[], bool] | None = None
    precision: str = "fp32"
    scaler: torch.amp.GradScaler | None = None


def train_one_epoch(
    setup: TrainSetup,
    epoch: int,
    *,
    global_step: int = 0,
    progress: EpochProgress | None = None,
) -> dict[str, float]:
    """One pass over ``setup.loader``; returns the epoch's averaged loss terms, accuracy and grad_mean.

    ``global_step`` counts the run's iterations before this epoch's next batch (the status lines come
    every ``setup.print_every`` of them).

    ``progress`` continues an epoch stopped part-way (``setup.loader`` then yields only the batches left)
    and is updated in place. ``setup.should_stop`` is asked after every batch; when it says yes the pass
    ends there with ``progress.stopped`` set.
    """
    setup.model.train()
    progress = progress or EpochProgress(epoch)
    avg = progress.avg
    start = time.time() - progress.seconds
    n_iter = progress.batches + len(setup.loader)
    bar = tqdm(setup.loader, desc=f"epoch {epoch:04d}/{setup.num_epochs:04d}", disable=not setup.show_progress,
               leave=False, mininterval=1.0, dynamic_ncols=True, initial=progress.batches, total=n_iter)
    scaler = setup.scaler if setup.scaler is not None and setup.scaler.is_enabled() else None
    for batch in bar:
        it = progress.batches
        a, v, y = _forward(setup.model, batch, setup.device, setup.precision)
        a.retain_grad()
        loss, terms = encoder_loss(a, v, y, setup.weights, setup.prototypes)
        _check_finite(loss, terms, epoch, it)
        setup.optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            setup.optimizer.step()
            grad_scale = 1.0
        else:
            scaler.scale(loss).backward()
            grad_scale = float(scaler.get_scale())
            scaler.step(setup.optimizer)  # skipped (and the scale lowered) when a gradient overflowed
            scaler.update()
        grad_mean = a.grad.abs().mean().item() / grad_scale if a.grad is not None else 0.0
        values = {"loss": loss.item(), **{k: t.item() for k, t in terms.items()}, "grad_mean": grad_mean}
        avg.add(values, y.shape[0])
        progress.batches += 1
        global_step += 1
        if setup.print_every and global_step % setup.print_every == 0:
            setup.log(f"epoch {epoch:04d}/{setup.num_epochs:04d} iter [{it + 1:05d}/{n_iter:05d}] train "
                      f"{_format(values)} grad_mean {grad_mean:.3e}")
        if setup.should_stop is not None and setup.should_stop():
            progress.stopped = True
            break
    bar.close()
    progress.seconds = time.time() - start
    out = avg.means()
    out["seconds"] = progress.seconds
    return out


def _check_finite(loss: torch.Tensor, terms: dict[str, torch.Tensor], epoch: int, it: int) -> None:
    if torch.isfinite(loss):
        return
    bad = [k for k, t in terms.items() if not torch.isfinite(t)] or ["total"]
    raise NonFiniteLossError(
        f"non-finite loss at epoch {epoch}, iteration {it}: term(s) {', '.join(bad)} = "
        f"{[float(terms.get(k, loss)) for k in bad]}; training stopped, the last checkpoint on disk is kept"
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: torch.utils.data.DataLoader, weights: LossWeights, device: torch.device,
    *, k: int = 50, show_progress: bool = False, precision: str = "fp32",
) -> dict[str, float]:
    """Validation loss and the retrieval metrics of docs/original.md#s9 plus class-level R@K and mAP.

    One caption and one view per test image, drawn by the dataset's seeded choices, so every
    evaluation of a run sees the same pairs (the original re-drew them each time). The validation loss
    leaves the prototype term out: test classes need not be training classes (CUB's split). The forward
    pass runs under ``precision`` (as training), the losses and metrics on float32 embeddings.
    """
    weights = dataclasses.replace(weights, proto=False)
    net = unwrap(model)
    net.eval()
    avg = _Averages()
    embs, feats, labels = [], [], []
    for batch in tqdm(loader, desc="eval", disable=not show_progress, leave=False):
        a, v, y = _forward(net, batch, device, precision)
        loss, terms = encoder_loss(a, v, y, weights)
        avg.add({"loss": loss.item(), **{kk: t.item() for kk, t in terms.items()}}, y.shape[0])
        embs.append(a.float().cpu().numpy())
        feats.append(v.float().cpu().numpy())
        labels.append(y.cpu().numpy())
    labels = np.concatenate(labels)
    # precision@k needs k images; a test split smaller than k (a toy set) is scored at its size.
    k = min(k, len(labels))
    metrics = speech_encoder_metrics(np.concatenate(feats), np.concatenate(embs), labels, k=k)
    out = {f"val_{kk}": vv for kk, vv in avg.means().items()}
    out.update(metrics)
    out["precision_k"] = k
    out["num_classes"] = int(len(np.unique(labels)))
    return out


def checkpoint_dict(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    epoch: int,
    model_args: dict,
    frontend: dict,
    config: dict,
    metrics: dict | None,
    best_accu: float,
    mid_epoch: EpochProgress | None = None,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """One dict: a superset of the original ``{'meta': {'epoch'}, 'state_dict'}`` (docs/original.md#s7-4).

    ``epoch`` is the last complete epoch. A run stopped part-way through the next one (Ctrl-C) saves
    that epoch's :class:`EpochProgress` as ``mid_epoch``; its weights are then from that point, and
    ``--resume`` continues with the next batch. ``precision`` is the arithmetic the run resolved
    (``fp32``/``bf16``/``fp16``; the config keeps what was asked, e.g. ``auto``); an enabled gradient
    scaler (fp16) is saved as ``grad_scaler``.
    """
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    extra: dict[str, Any] = {"mid_epoch": mid_epoch.to_dict()} if mid_epoch is not None else {}
    if scaler is not None and scaler.is_enabled():
        extra["grad_scaler"] = scaler.state_dict()
    return {
        "format": CHECKPOINT_FORMAT,
        "meta": {"epoch": epoch},
        "state_dict": state,
        "epoch": epoch,
        "model_args": model_args,
        "frontend": frontend,
        "config": config,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "metrics": metrics or {},
        "best_accu": best_accu,
        "precision": precision,
        "rng": rng_state(),
        **extra,
    }


def save_checkpoints(ckpt: dict[str, Any], run_dir: Path, *, eval_epoch: bool, is_best: bool) -> None:
    """``latest.pth`` every epoch; ``epoch_N.pth`` at evaluation epochs; ``best.pth`` when accu improved.

    ``latest.pth`` is written atomically; the others are hard links to it (copies where links fail), so
    no file is ever half-written and the three cost the disk space of one. The checkpoint lists its
    other names (``links``), so a run killed between the save and the links gets them on resume
    (:func:`complete_links`).
    """
    ckpt["links"] = ([f"epoch_{ckpt['epoch']}.pth"] if eval_epoch else []) + (["best.pth"] if is_best else [])
    latest = run_dir / "latest.pth"
    atomic_save(ckpt, latest)
    for name in ckpt["links"]:
        atomic_link(latest, run_dir / name)


def complete_links(ckpt: dict[str, Any], run_dir: Path) -> list[str]:
    """Makes the ``links`` of the checkpoint in ``run_dir/latest.pth`` that are missing or stale; returns them."""
    latest = run_dir / "latest.pth"
    made = []
    for name in ckpt.get("links", []):
        target = run_dir / name
        if not (target.exists() and os.path.samefile(target, latest)):
            atomic_link(latest, target)
            made.append(name)
    return made


def lr_of(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def is_better(accu: float, best: float) -> bool:
    return not math.isnan(accu) and accu > best
