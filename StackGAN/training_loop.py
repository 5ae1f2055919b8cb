"""The StackGAN-v2 training loop of stage E (docs/original.md#s11-5 to #s11-6); ``StackGAN/main.py`` parses and calls :func:`train`.

A run, in order:

1. names its folder on rank 0 (``--resume <run>/Model/latest.pth`` reopens that run's folder) and opens it;
2. resolves ``--precision`` (an error before anything is written when the device cannot run it), seeds
   torch and numpy with ``--seed``, reads the training split, builds G and one D per branch (channels-last
   with ``--channels_last``; G's embedding statistics with ``--embedding_norm``), and gives every rank
   rank 0's weights;
3. continues from ``--resume`` (our snapshot) or TRAIN.NET_G/NET_D (the authors' files), drops the
   ``losses.jsonl`` records it will write again, and writes ``config.yaml``;
4. shards the data into full batches (a resumed run skips what its epoch already used), fixes the noise
   and captions of the sample grids, writes ``Image/real_samples.png``, and on resume writes the files of
   the snapshot resumed from that the interrupted run did not get to;
5. builds the frozen teacher with ``--teacher_weight``;
6. trains: each step updates every D, then G, then G's moving average (:func:`StackGAN.trainer.train_step`);
   losses every TRAIN.LOG_INTERVAL steps, a snapshot every TRAIN.SNAPSHOT_INTERVAL steps and at the end;
7. on Ctrl-C or SIGTERM saves a snapshot at the current step and stops (exit status 130 or 143);
8. writes ``summary.json``, with every replica's parameter fingerprint and the precision the run used.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from torch.utils.data import DataLoader
from tqdm import tqdm

from s2i import distributed
from s2i.checkpoints import CheckpointError, atomic_save, load_checkpoint
from s2i.config import ConfigError, to_dict
from s2i.grids import image_grid, save_png
from s2i.interrupt import StopRequest, ignore_sigint_in_worker, stop_run
from s2i.precision import resolve_precision
from s2i.runs import RunFolder, tensorboard_writer
from StackGAN.config import GanConfig, resolve_paths
from StackGAN.datasets import GanDataset, dataset_from_config
from StackGAN.losses import faithful_cal_weight
from StackGAN.model import load_original_discriminator, load_original_generator
from StackGAN.trainer import (
    GanState,
    LossSettings,
    averaged_weights,
    broadcast_module,
    build_models,
    generate,
    original_generator_state,
    restore_snapshot,
    snapshot_dict,
    train_step,
)


def train(cfg: GanConfig, dist: distributed.DistInfo) -> dict:
    """Trains StackGAN-v2 as ``cfg`` says (the steps of this module's docstring); returns the run's summary
    (also written to ``summary.json``): run folder, steps, world size, seconds, replica fingerprints, precision."""
    precision = resolve_precision(cfg.precision, dist.device)
    run_dir = _shared_run_dir(cfg, dist)
    run = RunFolder(run_dir, resume=bool(cfg.resume), writer=dist.is_main, name="stackgan",
                    checkpoint="Model/latest.pth")
    log = run.logger.info
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    ds = dataset_from_config(cfg)
    g_args, d_args = model_args(cfg, num_classes=len(ds.classes))
    G, netsD = build_models(g_args, d_args, dist.device, channels_last=cfg.channels_last)
    if G.embedding_norm:
        G.set_embedding_statistics(torch.from_numpy(np.asarray(ds.embeddings)).to(dist.device))
        log(f"embeddings standardised with the training set's statistics (mean |μ| "
            f"{G.emb_mean.abs().mean():.4f}, mean σ {G.emb_std.mean():.4f})")
    broadcast_module(G)
    for D in netsD:
        broadcast_module(D)
    state = GanState.create(G, netsD, cfg.TRAIN.GENERATOR_LR, cfg.TRAIN.DISCRIMINATOR_LR, precision=precision,
                            channels_last=cfg.channels_last)
    _resume(cfg, state, log)
    if cfg.resume:
        dropped = run.trim_jsonl("losses.jsonl", lambda r: r.get("step", 0) <= state.step)
        if dropped:
            log(f"losses.jsonl: dropped {dropped} record(s) after step {state.step}, which this run does again")
    run.write_yaml("config.yaml", to_dict(cfg))

    batch = cfg.TRAIN.BATCH_SIZE
    sampler = distributed.ResumableSampler(ds, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                           seed=cfg.seed, drop_last=False)
    # Full batches only: BatchNorm cannot train on a last batch of one image (the fork kept partial ones).
    # The loader gets its own generator: drawing its base seed from the global one would shift the noise
    # of a resumed run by one draw per epoch started.
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=min(cfg.WORKERS, 8), drop_last=True,
                        pin_memory=dist.device.type == "cuda", generator=torch.Generator().manual_seed(cfg.seed),
                        worker_init_fn=ignore_sigint_in_worker)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ConfigError(f"{len(ds)} training images give no full batch of TRAIN.BATCH_SIZE {batch} per process")
    start_epoch, sampler.skip = divmod(state.step, steps_per_epoch)
    sampler.skip *= batch
    total_steps = cfg.TRAIN.MAX_EPOCH * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    # Fixed noise and fixed captions, so the sample grids of a run are comparable over time.
    gen = torch.Generator().manual_seed(cfg.seed)
    vis = min(cfg.TRAIN.VIS_COUNT, len(ds))
    fixed = {"noise": torch.randn(vis, cfg.GAN.Z_DIM, generator=gen).to(dist.device),
             "emb": torch.from_numpy(np.stack([ds.embeddings[i, 0] for i in range(vis)])).float().to(dist.device)}
    if dist.is_main and not (run.path / "Image" / "real_samples.png").exists():
        reals = torch.stack([ds.eval_images(i)[-1] for i in range(vis)])
        save_png(image_grid(reals), run.path / "Image" / "real_samples.png")
    if cfg.resume:
        _complete_snapshot(state, run, fixed, dist)
    tb = tensorboard_writer(run.path / "Log", cfg.tensorboard and dist.is_main)
    losses = loss_settings(cfg)
    teacher, teacher_targets = build_teacher(cfg, ds, dist.device, log) if losses.teacher > 0 else (None, None)
    log(f"StackGAN-v2: {cfg.dataset}, {len(ds)} images, {cfg.TREE.BRANCH_NUM} branches up to {ds.imsize}px, "
        f"batch {batch} x {dist.world_size} process(es), {steps_per_epoch} steps/epoch, steps {state.step}..{total_steps}, "
        f"device {dist.device}, precision {precision} (--precision {cfg.precision})"
        f"{', channels-last' if cfg.channels_last else ''}, run {run.path}")
    t0, epoch, first_step = time.time(), start_epoch, state.step
    bar = tqdm(total=total_steps, initial=state.step, desc="train", disable=not (cfg.progress and dist.is_main),
               mininterval=1.0, dynamic_ncols=True)
    with StopRequest(log, dist.device) as stop:
        while state.step < total_steps:
            sampler.set_epoch(epoch)
            ds.set_epoch(epoch)
            for batch_data in loader:
                if teacher is not None:
                    batch_data["teacher_target"] = teacher_targets[batch_data["index"].to(teacher_targets.device)]
                stats = train_step(state, batch_data, losses, dist.device, z_dim=cfg.GAN.Z_DIM,
                                   ema_decay=cfg.ema_decay, teacher=teacher)
                bar.update(1)
                if state.step % cfg.TRAIN.LOG_INTERVAL == 0 or state.step == 1:
                    run.append_jsonl("losses.jsonl", {"step": state.step, "epoch": epoch, **stats})
                    if tb:
                        for k, v in stats.items():
                            tb.add_scalar(k, v, state.step)
                    log(f"step {state.step}/{total_steps} epoch {epoch} D {stats['D_total']:.3f} "
                        f"G {stats['G_total']:.3f} ({(time.time() - t0) / max(1, state.step - first_step):.2f}s/step)")
                saved = state.step % cfg.TRAIN.SNAPSHOT_INTERVAL == 0 or state.step >= total_steps
                if saved:
                    _save_snapshot(state, run, cfg, epoch, fixed, dist)
                if stop.requested():
                    if not saved:
                        _save_snapshot(state, run, cfg, epoch, fixed, dist)
                    bar.close()
                    stop_run(run, tb, stop, f"at step {state.step}/{total_steps}", run.path / "Model" / "latest.pth",
                             saved="snapshot")
                if state.step >= total_steps:
                    break
            sampler.skip = 0
            epoch += 1
    bar.close()
    fingerprints = distributed.gather_fingerprints(state.G)
    summary = {"run": str(run.path), "steps": state.step, "world_size": dist.world_size,
               "seconds": round(time.time() - t0, 1), "replica_fingerprints": fingerprints,
               "replicas_identical": len(set(fingerprints)) == 1,
               "snapshot": str(run.path / "Model" / "latest.pth"), "precision": precision,
               "channels_last": cfg.channels_last}
    run.write_json("summary.json", summary)
    if tb:
        tb.close()
    run.close()
    return summary


def _shared_run_dir(cfg: GanConfig, dist: distributed.DistInfo) -> Path:
    """The run folder, named once on rank 0 (the default name has a timestamp) and shared."""
    if cfg.resume and not cfg.output_dir and Path(cfg.resume).parent.name == "Model":
        path = Path(cfg.resume).parent.parent
    else:
        path = resolve_paths(cfg).output_root
    if dist.distributed:
        box = [str(path)]
        tdist.broadcast_object_list(box, src=0)
        path = Path(box[0])
    return path


def model_args(cfg: GanConfig, num_classes: int = 0) -> tuple[dict, list[dict]]:
    """G's and each D's constructor arguments; ``num_classes`` adds D's class head (``aux_class_weight``)."""
    g = {"branch_num": cfg.TREE.BRANCH_NUM, "gf_dim": cfg.GAN.GF_DIM, "z_dim": cfg.GAN.Z_DIM,
         "embedding_dim": cfg.GAN.EMBEDDING_DIM, "text_dim": cfg.TEXT.DIMENSION, "r_num": cfg.GAN.R_NUM,
         "b_condition": cfg.GAN.B_CONDITION, "embedding_norm": cfg.embedding_norm}
    d = [{"resolution": cfg.TREE.BASE_SIZE * 2**i, "df_dim": cfg.GAN.DF_DIM, "embedding_dim": cfg.GAN.EMBEDDING_DIM,
          "b_condition": cfg.GAN.B_CONDITION} for i in range(cfg.TREE.BRANCH_NUM)]
    if cfg.aux_class_weight > 0:
        for a in d:
            a["num_classes"] = num_classes
    return g, d


def _resume(cfg: GanConfig, state: GanState, log: Callable[[str], None]) -> int:
    """Loads ``--resume`` (our snapshot) or the original's TRAIN.NET_G/NET_D; returns the epoch to start in."""
    if cfg.resume:
        snap = load_checkpoint(cfg.resume)
        if snap.get("format") != "s2i.stackgan.v1":
            raise CheckpointError(f"{cfg.resume} is not a snapshot of this trainer; to continue from the authors' "
                                  "netG_<N>.pth set TRAIN.NET_G (and TRAIN.NET_D) instead")
        epoch = restore_snapshot(state, snap)
        log(f"resumed {cfg.resume} at step {state.step}")
        return epoch
    if cfg.TRAIN.NET_G:
        # The authors' files carry no step; the original read it off the file name (netG_<N>.pth).
        G_old = load_original_generator(cfg.TRAIN.NET_G)
        state.G.load_state_dict(G_old.state_dict(), strict=True)
        state.ema = [p.detach().clone() for p in state.G.parameters()]
        match = re.search(r"netG_(\d+)\.pth$", cfg.TRAIN.NET_G)
        state.step = int(match.group(1)) + 1 if match else 0
        if cfg.TRAIN.NET_D:
            for i, D in enumerate(state.netsD):
                D.load_state_dict(load_original_discriminator(f"{cfg.TRAIN.NET_D}{i}.pth").state_dict(), strict=True)
        log(f"continuing from the original-format {cfg.TRAIN.NET_G} at step {state.step} (fresh optimizers)")
    return -1


def _complete_snapshot(state: GanState, run: RunFolder, fixed: dict, dist: distributed.DistInfo) -> None:
    """On resume: writes the files of the snapshot resumed from that a killed run did not get to."""
    if not dist.is_main:
        return
    grids = [run.path / "Image" / f"count_{state.step:09d}_fake_samples{i}.png" for i in range(len(state.netsD))]
    imgs = None if all(p.exists() for p in grids) else _sample_grids(state, fixed)
    written = _write_snapshot_files(snapshot_dict(state, epoch=0, config={}), run, imgs, only_missing=True)
    if written:
        run.logger.info(f"wrote {', '.join(written)} of the snapshot resumed from, which the interrupted run did "
                        "not get to")


def loss_settings(cfg: GanConfig) -> LossSettings:
    """The loss weights of ``cfg``: TRAIN.COEFF, CAL_LOSS as the original's switch (``cal_weight_mode``
    switch) or as a coefficient, and our auxiliary-class and teacher weights."""
    c = cfg.TRAIN.COEFF
    cal = faithful_cal_weight(c.CAL_LOSS) if cfg.cal_weight_mode == "switch" else c.CAL_LOSS
    return LossSettings(uncond=c.UNCOND_LOSS, kl=c.KL, cal=cal, colour=c.COLOR_LOSS, aux=cfg.aux_class_weight,
                        teacher=cfg.teacher_weight)


def build_teacher(cfg: GanConfig, ds: GanDataset, device: torch.device, log: Callable[[str], None]
                  ) -> tuple[torch.nn.Module, torch.Tensor]:
    """The frozen teacher of the teacher loss and its features of every training image ``(N, Σ dims)``.

    The targets are computed once, from each image's last-branch centre view (the resolution the loss
    sees the generated images at), in batches; the teacher is deterministic, so a resumed run gets the same.
    """
    from s2i.features.teachers import Lite0Perception, TeacherError

    t0 = time.time()
    try:
        # Building the network draws its (then overwritten) initial weights from the global RNG; a fork
        # keeps the training noise of a resumed run the same as an uninterrupted run's.
        with torch.random.fork_rng(devices=[]):
            teacher = Lite0Perception(cfg.teacher_layers, image_size=cfg.teacher_size).to(device)
    except TeacherError as exc:
        raise ConfigError(f"--teacher_weight {cfg.teacher_weight}: {exc}") from None
    feats = []
    with torch.no_grad():
        for start in range(0, len(ds), 64):
            imgs = torch.stack([ds.eval_images(i)[-1] for i in range(start, min(start + 64, len(ds)))])
            feats.append(teacher(imgs.to(device)))
    targets = torch.cat(feats)
    log(f"teacher loss: EfficientNet-Lite0 {cfg.teacher_layers} at {cfg.teacher_size} px, weight "
        f"{cfg.teacher_weight}; features of {len(ds)} training images in {time.time() - t0:.1f}s")
    return teacher, targets


def _save_snapshot(state: GanState, run: RunFolder, cfg: GanConfig, epoch: int, fixed: dict,
                   dist: distributed.DistInfo) -> None:
    """Snapshot dict, the original's netG_<step>.pth/netD<i>.pth, and sample grids (rank 0 writes).

    ``latest.pth`` goes first, so a run killed part-way through keeps a snapshot that resumes exactly;
    :func:`_complete_snapshot` writes the rest on resume. Only the periodic snapshots (every
    TRAIN.SNAPSHOT_INTERVAL steps) touch the training state; the final one and the one of an interrupted
    run leave it as an uninterrupted, longer run would have it at that step.
    """
    for net in (state.G, *state.netsD):
        broadcast_module(net)  # BatchNorm statistics are per process; keep rank 0's everywhere
    periodic = state.step % cfg.TRAIN.SNAPSHOT_INTERVAL == 0
    # The original's bug (fixed_ema_bug False) leaves the average in the live G after every snapshot.
    keep_average = periodic and not cfg.fixed_ema_bug
    imgs = None
    if dist.is_main or keep_average:
        imgs = _sample_grids(state, fixed, keep_average, consume_rng=periodic and dist.is_main)
    if not dist.is_main:
        return
    # Taken after the grids, so the snapshot holds the RNG state and live G that training continues with.
    snap = snapshot_dict(state, epoch=epoch, config=to_dict(cfg))
    atomic_save(snap, run.path / "Model" / "latest.pth")
    _write_snapshot_files(snap, run, imgs)


def _sample_grids(state: GanState, fixed: dict, keep_average: bool = False, consume_rng: bool = False
                  ) -> list[torch.Tensor]:
    """The averaged G's images of the fixed inputs, one ``(V, 3, s_i, s_i)`` batch per branch
    (``s_i = BASE_SIZE·2^i``, ``V`` fixed inputs). Their
    conditioning-augmentation noise comes from the global RNG only when ``consume_rng`` (periodic snapshots,
    as in the original), else from a fork of it."""
    device = fixed["noise"].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=not consume_rng):
        with averaged_weights(state.G, state.ema, restore=not keep_average):
            return generate(state.G, fixed["noise"], fixed["emb"], precision=state.precision)


def _write_snapshot_files(snap: dict, run: RunFolder, imgs: list[torch.Tensor] | None,
                          only_missing: bool = False) -> list[str]:
    """netG_<step>.pth, netD<i>.pth (the latest snapshot's, rewritten every time) and the grids of ``imgs``;
    returns the names written."""
    model_dir, step = run.path / "Model", int(snap["step"])
    written = []
    net_g = model_dir / f"netG_{step}.pth"
    if not (only_missing and net_g.exists()):
        atomic_save(original_generator_state(snap), net_g)
        written.append(net_g.name)
    for i, sd in enumerate(snap["D"]):
        atomic_save({f"module.{k}": v for k, v in sd.items()}, model_dir / f"netD{i}.pth")
    for i, img in enumerate(imgs or []):
        save_png(image_grid(img), run.path / "Image" / f"count_{step:09d}_fake_samples{i}.png")
        written.append(f"count_{step:09d}_fake_samples{i}.png")
    return written
