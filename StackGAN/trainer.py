"""One StackGAN-v2 training step, the generator's moving average, and the snapshot dict (docs/original.md#s11-5 to #s11-6).

No argparse and no files beyond what the caller asks to save; ``StackGAN/training_loop.py`` wires these up.
Distributed training averages gradients by hand after each backward pass (rather than wrapping every
network in DDP): D is called three times per loss and G's loss backpropagates through every D, which
plain all-reduces handle without special cases.

Precision (``GanState.precision``, ``s2i/precision.py``): with ``fp32`` a step is the original's arithmetic,
op for op. With ``bf16``/``fp16`` the forward passes of G and every D run under autocast, the discriminators'
scores are taken before the sigmoid (BCE-with-logits, the form that is safe in 16 bits) and every loss is
computed in float32 (``StackGAN/losses.py``); the backward passes, the optimizers, the weights and the moving
average stay float32. fp16 adds a gradient scaler (one for the step: each optimizer's gradients are
unscaled at its own ``step``, and the scale is updated once, after G's).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn

from s2i.precision import autocast, grad_scaler, upcast
from s2i.rng import rng_state, set_rng_state
from StackGAN.losses import discriminator_loss, generator_loss
from StackGAN.model import D_NET, G_NET

SNAPSHOT_FORMAT = "s2i.stackgan.v1"


@dataclass(frozen=True)
class LossSettings:
    """The loss weights of docs/original.md#s11-5, resolved from the config (``cal`` already 1.0/0.0 in faithful mode)."""

    uncond: float = 1.0
    kl: float = 2.0
    cal: float = 1.0
    colour: float = 0.0
    aux: float = 0.0  # ours: AC-GAN auxiliary class loss (0 = off, the paper)
    teacher: float = 0.0  # ours: teacher feature loss on the last branch (0 = off, the paper)


@dataclass
class GanState:
    """Everything a snapshot holds: live G, its moving average, every D and every optimizer, the step; and
    how a step computes: ``precision`` (resolved: fp32, bf16 or fp16), its gradient scaler (active for
    fp16 only) and whether images are fed channels-last."""

    G: G_NET
    netsD: nn.ModuleList
    optG: torch.optim.Optimizer
    optsD: list[torch.optim.Optimizer]
    ema: list[torch.Tensor] = field(default_factory=list)
    step: int = 0
    precision: str = "fp32"
    scaler: torch.amp.GradScaler = field(default_factory=lambda: grad_scaler("fp32", torch.device("cpu")))
    channels_last: bool = False

    @classmethod
    def create(cls, G: G_NET, netsD: nn.ModuleList, lr_g: float, lr_d: float, *, precision: str = "fp32",
               channels_last: bool = False) -> GanState:
        """Adam(lr, betas (0.5, 0.999)) for G and each D, no decay (docs/original.md#s11-6); float32 weights
        and optimizer state whatever ``precision`` (a resolved one, ``s2i.precision.resolve_precision``)."""
        optG = torch.optim.Adam(G.parameters(), lr=lr_g, betas=(0.5, 0.999))
        optsD = [torch.optim.Adam(D.parameters(), lr=lr_d, betas=(0.5, 0.999)) for D in netsD]
        ema = [p.detach().clone() for p in G.parameters()]
        device = next(G.parameters()).device
        return cls(G, netsD, optG, optsD, ema, precision=precision, scaler=grad_scaler(precision, device),
                   channels_last=channels_last)


def broadcast_module(module: nn.Module) -> None:
    """Makes every rank hold rank 0's parameters and buffers."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def _average_gradients(module: nn.Module) -> None:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset: offset + n].view_as(g))
        offset += n


@torch.no_grad()
def update_ema(ema: list[torch.Tensor], G: nn.Module, decay: float) -> None:
    """``θ̄ ← decay·θ̄ + (1 − decay)·θ`` over G's parameters (not its BN buffers), docs/original.md#s11-6."""
    for avg, p in zip(ema, G.parameters()):
        avg.lerp_(p.detach(), 1.0 - decay)


@contextmanager
def averaged_weights(G: nn.Module, ema: list[torch.Tensor], restore: bool = True):
    """G holds the averaged weights inside the block. ``restore=False`` reproduces the original's bug
    (docs/original.md#bug-23): after a snapshot the live G keeps the averaged weights."""
    backup = [p.detach().clone() for p in G.parameters()]
    with torch.no_grad():
        for p, avg in zip(G.parameters(), ema):
            p.copy_(avg)
    try:
        yield G
    finally:
        if restore:
            with torch.no_grad():
                for p, b in zip(G.parameters(), backup):
                    p.copy_(b)


def _to(batch_images, device, channels_last: bool = False) -> list[torch.Tensor]:
    if channels_last:
        return [x.to(device, non_blocking=True, memory_format=torch.channels_last) for x in batch_images]
    return [x.to(device, non_blocking=True) for x in batch_images]


def train_step(state: GanState, batch: dict, losses: LossSettings, device: torch.device, *,
               z_dim: int, ema_decay: float, teacher: nn.Module | None = None) -> dict[str, float]:
    """D_0…D_k updates, then the G update, then the moving average (docs/original.md#s11-6). Returns the logged values.

    With ``losses.teacher > 0``, ``teacher`` is the frozen feature network of the teacher loss and
    ``batch["teacher_target"]`` holds its features of each caption's real image ``(B, Σ teacher.dims)``.
    ``state.precision`` other than fp32 runs the forward passes under autocast (module docstring); the
    random draws and the order of the updates are the same in every precision.
    """
    real = _to(batch["imgs"], device, state.channels_last)
    wrong = _to(batch["wrong_imgs"], device, state.channels_last)
    emb = batch["embedding"].to(device, non_blocking=True)
    labels = batch["label"].to(device, non_blocking=True)
    aux = {}
    if losses.aux > 0:
        aux = {"aux_weight": losses.aux, "labels": batch["class_index"].to(device, non_blocking=True),
               "wrong_labels": batch["wrong_class_index"].to(device, non_blocking=True)}
    b = emb.shape[0]
    # fp32: autocast is a null context and the scaler a pass-through, so this is the original's step.
    mixed = state.precision != "fp32"
    scaler = state.scaler
    noise = torch.randn(b, z_dim, device=device)
    with autocast(state.precision, device):
        fake, mu, logvar = state.G(noise, emb)
    out: dict[str, float] = {}
    for i, (D, opt) in enumerate(zip(state.netsD, state.optsD)):
        with autocast(state.precision, device):
            err = discriminator_loss(D, real[i], wrong[i], fake[i], mu, losses.uncond, logits=mixed, **aux)
        _check_finite(f"D_loss{i}", err, state.step + 1)
        opt.zero_grad(set_to_none=True)
        scaler.scale(err).backward()
        _average_gradients(D)
        scaler.step(opt)
        out[f"D_loss{i}"] = err.item()
    with autocast(state.precision, device):
        total, parts = generator_loss(state.netsD, fake, mu, logvar, labels, uncond_weight=losses.uncond,
                                      kl_weight=losses.kl, cal_weight=losses.cal, colour_weight=losses.colour,
                                      aux_weight=losses.aux, class_index=aux.get("labels"), logits=mixed,
                                      teacher=teacher, teacher_target=batch.get("teacher_target"),
                                      teacher_weight=losses.teacher)
    _check_finite("G_total", total, state.step + 1)
    state.optG.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    _average_gradients(state.G)
    scaler.step(state.optG)
    scaler.update()
    update_ema(state.ema, state.G, ema_decay)
    state.step += 1
    for i, adv in enumerate(parts["adv"]):
        out[f"G_loss{i}"] = adv.item()
    if parts["cal"]:
        out["cal_loss"] = float(sum(c.item() for c in parts["cal"]))
    if parts["aux"]:
        out["aux_loss"] = float(sum(a.item() for a in parts["aux"]))
    if parts["kl"] is not None:
        out["kl_loss"] = parts["kl"].item()
    if parts["colour"] is not None:
        out["colour_loss"] = parts["colour"].item()
    if parts["teacher"] is not None:
        out["teacher_loss"] = parts["teacher"].item()
    out["G_total"] = total.item()
    out["D_total"] = sum(out[f"D_loss{i}"] for i in range(len(state.netsD)))
    return out


def _check_finite(name: str, loss: torch.Tensor, step: int) -> None:
    """Stops before a non-finite loss reaches an optimizer, so no weight is ever NaN."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite {name} = {loss.item()} at step {step}; training stopped before "
                                 "updating any weight, and the last snapshot on disk is kept")


@torch.no_grad()
def generate(G: G_NET, noise: torch.Tensor, emb: torch.Tensor, *, use_mu: bool = False,
             precision: str = "fp32") -> list[torch.Tensor]:
    """Images of every branch for fixed inputs, in eval mode (BN running statistics); G's mode is restored.

    Args:
        noise: ``(B, z_dim)``; emb: ``(B, text_dim)``.
        precision: a resolved precision; G runs under its autocast.
    Returns:
        One ``(B, 3, R_i, R_i)`` batch per branch, in [−1, 1]; float32 also under bf16/fp16.
    """
    was_training = G.training
    G.eval()
    try:
        with autocast(precision, noise.device):
            imgs, _, _ = G(noise, emb, use_mu=use_mu)
    finally:
        G.train(was_training)
    return [upcast(img) for img in imgs]


def _cpu(sd: dict) -> dict:
    # contiguous(): a channels-last model's weights are stored in the usual order (a no-op otherwise).
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def snapshot_dict(state: GanState, *, epoch: int, config: dict, extra: dict | None = None) -> dict:
    """One dict: G (live), G_ema (averaged), every D, every optimizer, the step, the constructor
    arguments and the config, plus the RNG states so a resumed run continues identically."""
    ema_sd = _cpu(state.G.state_dict())
    for (name, _), avg in zip(state.G.named_parameters(), state.ema):
        ema_sd[name] = avg.detach().cpu().contiguous().clone()
    scaler = {"scaler": state.scaler.state_dict()} if state.scaler.is_enabled() else {}
    return {
        "format": SNAPSHOT_FORMAT,
        "step": state.step,
        "epoch": epoch,
        "G": _cpu(state.G.state_dict()),
        "G_ema": ema_sd,
        "G_args": dict(state.G.args),
        "D": [_cpu(D.state_dict()) for D in state.netsD],
        "D_args": [dict(D.args) for D in state.netsD],
        "optG": state.optG.state_dict(),
        "optD": [o.state_dict() for o in state.optsD],
        "config": config,
        "rng": rng_state(),
        "precision": state.precision,
        **scaler,
        **(extra or {}),
    }


def restore_snapshot(state: GanState, snap: dict, *, restore_rng: bool = True) -> int:
    """Loads a :func:`snapshot_dict` into ``state``; returns the epoch it was taken in."""
    state.G.load_state_dict(snap["G"], strict=True)
    if len(snap["D"]) != len(state.netsD):
        raise ValueError(f"the snapshot has {len(snap['D'])} discriminators but the model has {len(state.netsD)} "
                         "branches; use the snapshot's TREE.BRANCH_NUM")
    for D, sd in zip(state.netsD, snap["D"]):
        D.load_state_dict(sd, strict=True)
    state.optG.load_state_dict(snap["optG"])
    for opt, sd in zip(state.optsD, snap["optD"]):
        opt.load_state_dict(sd)
    ema = snap["G_ema"]
    device = next(state.G.parameters()).device
    state.ema = [ema[name].to(device).clone() for name, _ in state.G.named_parameters()]
    state.step = int(snap["step"])
    if state.scaler.is_enabled() and snap.get("scaler"):
        state.scaler.load_state_dict(snap["scaler"])
    if restore_rng:
        set_rng_state(snap.get("rng"))
    return int(snap.get("epoch", 0))


def original_generator_state(snap_or_state: dict | GanState) -> dict[str, torch.Tensor]:
    """The averaged G as the original saved ``netG_<iter>.pth``: a DataParallel state dict (``module.`` keys)."""
    ema_sd = snap_or_state["G_ema"] if isinstance(snap_or_state, dict) else None
    if ema_sd is None:
        state = snap_or_state
        ema_sd = _cpu(state.G.state_dict())
        for (name, _), avg in zip(state.G.named_parameters(), state.ema):
            ema_sd[name] = avg.detach().cpu().contiguous().clone()
    return {f"module.{k}": v for k, v in ema_sd.items()}


def build_models(g_args: dict, d_args: list[dict], device: torch.device, *, init: bool = True,
                 channels_last: bool = False) -> tuple[G_NET, nn.ModuleList]:
    """G and one D per entry of ``d_args`` on ``device``; ``channels_last`` stores their 4-D weights NHWC
    (initialised first, so the weights are the same numbers either way)."""
    G = G_NET(**g_args, init_weights=init).to(device)
    netsD = nn.ModuleList([D_NET(**a, init_weights=init) for a in d_args]).to(device)
    if channels_last:
        G = G.to(memory_format=torch.channels_last)
        netsD = netsD.to(memory_format=torch.channels_last)
    return G, netsD
