"""A speech-encoder training run (docs/original.md#s6 to #s9), from its settings to ``summary.json``.

What :func:`train_speech_encoder` does, in order:

1. opens the run folder (``--resume`` continues one; rank 0 alone writes) and seeds torch, numpy and Python;
2. builds the encoder, Adam and StepLR, and the data (:func:`_build_data`): the manifests, their teacher
   features, the log-mel cache (rank 0 fills it once), a resumable distributed sampler (with
   ``--bucket_by_length``, a length-bucketing batch sampler and batches cut to their longest clip) and the
   two loaders;
3. restores weights, optimizer, schedule, gradient scaler and random states from ``--resume``
   (:func:`_resume`);
4. per epoch: one pass (:func:`Audio_to_Image.trainer.train_one_epoch`, under ``--precision``), the test
   metrics every ``eval_every`` epochs and at the last one, and the checkpoints (``latest.pth`` always,
   ``epoch_N.pth`` when evaluated, ``best.pth`` when the accuracy improved). Ctrl-C or SIGTERM saves
   ``latest.pth`` where the run stopped, even part-way through an epoch, and ends it
   (:func:`s2i.interrupt.stop_run`);
5. makes every replica hold rank 0's BatchNorm statistics and writes ``summary.json``.

The stage script ``Audio_to_Image/train_audio_encoder.py`` parses the settings and joins the process group.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from Audio_to_Image.datasets import CutToLongest, SpeechImageDataset, load_teacher_features
from Audio_to_Image.embedding import frames_needed_table
from Audio_to_Image.feature_cache import FeatureCache
from Audio_to_Image.losses import class_prototypes
from Audio_to_Image.speech_encoder import CNNRNN, model_args_from
from Audio_to_Image.trainer import (
    EpochProgress,
    TrainSetup,
    checkpoint_dict,
    complete_links,
    evaluate,
    is_better,
    lr_of,
    save_checkpoints,
    train_one_epoch,
)
from Audio_to_Image.training_config import EncoderTrainConfig
from s2i import distributed
from s2i.checkpoints import atomic_save, extract_state_dict, load_checkpoint, load_weights
from s2i.config import ConfigError, to_dict
from s2i.data.manifests import load_manifest
from s2i.interrupt import StopRequest, ignore_sigint_in_worker, stop_run
from s2i.precision import grad_scaler, resolve_precision
from s2i.rng import set_rng_state
from s2i.runs import RunFolder, tensorboard_writer


def train_speech_encoder(cfg: EncoderTrainConfig, dist: distributed.DistInfo) -> dict:
    """Trains the speech encoder as ``cfg`` says, in the process ``dist`` describes; returns the run's summary.

    Args:
        cfg: the run's settings.
        dist: this process's rank, world size and device (:func:`s2i.distributed.init_distributed`).
    Returns:
        What ``summary.json`` holds: the run folder, best and final test metrics, the replicas'
        parameter fingerprints and the checkpoint paths.
    Raises:
        TrainingInterrupted: Ctrl-C or SIGTERM, after ``latest.pth`` is saved.
        NonFiniteLossError: a loss term became NaN or inf (the last checkpoint on disk is kept).
    """
    precision = resolve_precision(cfg.precision, dist.device)  # before the run folder: a refusal is a user error
    run = RunFolder(cfg.output_dir, resume=bool(cfg.resume), writer=dist.is_main, name="speech_encoder")
    log = run.logger.info
    log(f"speech encoder: {cfg.dataset}, device {dist.device}, {dist.world_size} process(es), run {run.path}")
    if cfg.dataset == "places" and not cfg.frontend.max_abs_norm:
        log("note: the original divided Places spectrograms by their max-abs; pass --frontend.max_abs_norm "
            "to do the same")
    _seed_everything(cfg.seed)
    # The model is built before the data (whose set-up draws no random numbers) because the length
    # buckets cut batches by its receptive field.
    model_args = model_args_from(cfg)
    model = CNNRNN(**model_args).to(dist.device)
    train_ds, sampler, train_loader, test_loader = _build_data(cfg, dist, log, model)

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8,
                                 weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_scheduler_step_size,
                                                gamma=cfg.lr_scheduler_gamma)
    scaler = grad_scaler(precision, dist.device)
    start_epoch, best_accu, progress = 0, float("-inf"), None
    if cfg.resume:
        start_epoch, best_accu, progress = _resume(cfg, model, optimizer, scheduler, scaler, run, log)
    if start_epoch >= cfg.epoch:
        raise ConfigError(f"the checkpoint already finished epoch {start_epoch - 1}; raise --epoch above {start_epoch}")
    net = model
    if dist.distributed:
        net = DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    run.write_yaml("config.yaml", to_dict(cfg))
    tb = tensorboard_writer(run.path / "tensorboard", cfg.tensorboard and dist.is_main)
    log(f"{len(train_ds)} training images, {len(test_loader.dataset)} test images, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, epochs {start_epoch}..{cfg.epoch - 1}, "
        f"precision {precision}" + (" (auto)" if cfg.precision == "auto" else ""))

    weights = cfg.loss_weights()
    prototypes = None
    if weights.proto:
        prototypes = class_prototypes(train_ds.features, train_ds.manifest.labels).to(dist.device)
        log(f"prototype loss on (weight {weights.lambda_proto}, T {weights.proto_T}): {prototypes.shape[0]} "
            f"class centres of the training teacher features")
    steps_per_epoch = len(train_loader)
    metrics: dict = {}
    with StopRequest(log, dist.device) as stop:
        setup = TrainSetup(net, train_loader, optimizer, weights, dist.device, num_epochs=cfg.epoch,
                           print_every=cfg.print_every, log=log, show_progress=cfg.progress and dist.is_main,
                           prototypes=prototypes, should_stop=stop.requested, precision=precision, scaler=scaler)
        for epoch in range(start_epoch, cfg.epoch):
            # Same order every epoch unless set_epoch is called (docs/original.md#bug-9); the data's own random choices
            # (view, caption) are drawn per epoch either way.
            sampler.set_epoch(epoch if cfg.reshuffle_each_epoch else 0)
            train_ds.set_epoch(epoch)
            if progress is None or progress.epoch != epoch:
                progress = EpochProgress(epoch)
            if isinstance(sampler, distributed.LengthBucketSampler):
                sampler.set_lengths(train_ds.planned_frames(epoch))
            _start_at(sampler, progress.batches, cfg.batch_size)
            lr = lr_of(optimizer)
            stats = train_one_epoch(setup, epoch, global_step=epoch * steps_per_epoch + progress.batches,
                                    progress=progress)
            _start_at(sampler, 0, cfg.batch_size)
            if progress.stopped:
                if dist.is_main:
                    ckpt = checkpoint_dict(model, optimizer, scheduler, epoch=epoch - 1, model_args=model_args,
                                           frontend=cfg.frontend.to_dict(), config=to_dict(cfg), metrics=metrics,
                                           best_accu=best_accu, mid_epoch=progress, precision=precision,
                                           scaler=scaler)
                    atomic_save(ckpt, run.path / "latest.pth")
                distributed.barrier()
                stop_run(run, tb, stop, f"part-way through epoch {epoch} (after batch {progress.batches} of "
                         f"{steps_per_epoch})", run.path / "latest.pth",
                         note=" (epoch_N.pth and best.pth keep complete epochs)")
            log(f"epoch {epoch:04d}/{cfg.epoch:04d} train loss {stats['loss']:.4f} accu {stats['accu']:.2f} "
                f"lr {lr:g} ({stats['seconds']:.1f}s)")
            run.append_jsonl("metrics.jsonl", {"epoch": epoch, "split": "train", "lr": lr, **stats})
            if tb:
                for k, v in stats.items():
                    tb.add_scalar(f"train/{k}", v, epoch)
            eval_epoch = epoch % cfg.eval_every == 0 or epoch == cfg.epoch - 1
            is_best = False
            if eval_epoch and dist.is_main:
                metrics = evaluate(model, test_loader, weights, dist.device, k=cfg.recall_topk,
                                   show_progress=cfg.progress, precision=precision)
                is_best = is_better(metrics["accu"], best_accu)
                best_accu = max(best_accu, metrics["accu"])
                pk = metrics["precision_k"]
                log(f"epoch {epoch:04d}/{cfg.epoch:04d} test accu {metrics['accu']:.2f} ap{pk} "
                    f"{metrics[f'ap{pk}']:.2f} s2i R@1 {metrics['s2i_R1']:.3f} R@5 {metrics['s2i_R5']:.3f} "
                    f"mAP {metrics['s2i_mAP']:.3f} (best accu {best_accu:.2f}; {metrics['num_classes']} classes)")
                run.append_jsonl("metrics.jsonl", {"epoch": epoch, "split": "test", **metrics})
                if tb:
                    for k, v in metrics.items():
                        tb.add_scalar(f"test/{k}", v, epoch)
            with warnings.catch_warnings():
                # The order is right; torch's check misfires when a resumed epoch had no batch left to run.
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                scheduler.step()
            if dist.is_main:
                ckpt = checkpoint_dict(model, optimizer, scheduler, epoch=epoch, model_args=model_args,
                                       frontend=cfg.frontend.to_dict(), config=to_dict(cfg),
                                       metrics=metrics if eval_epoch else None, best_accu=best_accu,
                                       precision=precision, scaler=scaler)
                save_checkpoints(ckpt, run.path, eval_epoch=eval_epoch, is_best=is_best)
            distributed.barrier()
            # A signal during the evaluation or the save: this epoch's checkpoint is complete, stop here.
            if epoch < cfg.epoch - 1 and stop.requested():
                stop_run(run, tb, stop, f"at the end of epoch {epoch}", run.path / "latest.pth")

    if dist.distributed:
        # BatchNorm running statistics are per process; make every replica hold rank 0's.
        for buf in model.buffers():
            torch.distributed.broadcast(buf, src=0)
    fingerprints = distributed.gather_fingerprints(model)
    summary = {
        "run": str(run.path),
        "epochs": cfg.epoch,
        "world_size": dist.world_size,
        "best_accu": best_accu,
        "final_metrics": metrics,
        "replica_fingerprints": fingerprints,
        "replicas_identical": len(set(fingerprints)) == 1,
        "latest": str(run.path / "latest.pth"),
        "best": str(run.path / "best.pth"),
    }
    run.write_json("summary.json", summary)
    if dist.distributed:
        log(f"replicas identical after training: {summary['replicas_identical']}")
    if tb:
        tb.close()
    run.close()
    return summary


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


TrainSampler = distributed.ResumableSampler | distributed.LengthBucketSampler


def _start_at(sampler: TrainSampler, batches: int, batch_size: int) -> None:
    """Makes the sampler's epoch start after the ``batches`` this rank already trained on (0 = at its start)."""
    if isinstance(sampler, distributed.LengthBucketSampler):
        sampler.skip_batches = batches
    else:
        sampler.skip = batches * batch_size


def _build_data(cfg: EncoderTrainConfig, dist: distributed.DistInfo, log: Callable[[str], None], model: CNNRNN
                ) -> tuple[SpeechImageDataset, TrainSampler, DataLoader, DataLoader]:
    """The training set, its sampler and loader, and the test loader; rank 0 fills the log-mel cache first.

    With ``cfg.bucket_by_length`` the training loader takes its batches from a
    :class:`s2i.distributed.LengthBucketSampler` over the lengths of the captions each epoch draws, and
    both loaders cut every batch to the frames its longest clip can influence (``model``'s receptive
    field, :class:`Audio_to_Image.datasets.CutToLongest`). The test batches keep the manifest order, so in
    eval mode the metrics and validation losses are the full-length ones up to float rounding. The
    training batches are not: their members change, and in training mode BatchNorm normalises each
    batch with statistics over its frames, padding included, of which a cut batch has less.
    """
    train_m = load_manifest(cfg.train_json or cfg.root / "train.json", cfg.dataset)
    test_m = load_manifest(cfg.test_json or cfg.root / "test.json", cfg.dataset)
    cache = None
    if cfg.feature_cache == "on":
        cache = FeatureCache(cfg.feature_cache_dir or cfg.root / "feature_cache", cfg.frontend)
    train_ds = SpeechImageDataset(train_m, load_teacher_features(train_m), cfg.frontend, cache, seed=cfg.seed,
                                  augment=cfg.augment)
    test_ds = SpeechImageDataset(test_m, load_teacher_features(test_m), cfg.frontend, cache, seed=cfg.seed + 1)
    for name, ds in (("training", train_ds), ("test", test_ds)):
        if ds.feature_dim != cfg.embedding_dim:
            raise ConfigError(
                f"the {name} teacher features are {ds.feature_dim}-d ({ds.manifest.image_feature_path}) but "
                f"--embedding_dim is {cfg.embedding_dim}; pass --embedding_dim {ds.feature_dim}"
            )
    if cache is not None and dist.is_main:
        paths = train_m.all_audio_paths() + test_m.all_audio_paths()
        t0 = time.time()
        done = cache.prefill(paths, num_workers=_workers(cfg), progress=cfg.progress)
        if done:
            log(f"feature cache: computed {done} of {len(paths)} log-mels in {time.time() - t0:.1f}s "
                f"({cache.root})")
    distributed.barrier()
    pin = dist.device.type == "cuda"
    # The training loader gets its own generator: drawing its workers' base seed from the global RNG
    # would shift the dropout masks of a run resumed part-way through an epoch.
    loader_rng = torch.Generator().manual_seed(cfg.seed)
    sampler: TrainSampler
    if cfg.bucket_by_length:
        t0 = time.time()
        n_clips = sum(len(f) for f in train_ds.caption_frames())
        log(f"length buckets: frame counts of {n_clips} training clips read from their headers in "
            f"{time.time() - t0:.1f}s; batches cut to their longest clip's receptive field")
        sampler = distributed.LengthBucketSampler(len(train_ds), cfg.batch_size, num_replicas=dist.world_size,
                                                  rank=dist.rank, seed=cfg.seed)
        cut = CutToLongest(frames_needed_table(model, cfg.frontend.target_length), cfg.frontend.target_length)
        train_loader = DataLoader(train_ds, batch_sampler=sampler, collate_fn=cut, num_workers=_workers(cfg),
                                  pin_memory=pin, worker_init_fn=ignore_sigint_in_worker, generator=loader_rng)
        test_loader = DataLoader(test_ds, batch_size=cfg.batch_size, shuffle=False, collate_fn=cut,
                                 num_workers=_workers(cfg), pin_memory=pin, worker_init_fn=ignore_sigint_in_worker)
        return train_ds, sampler, train_loader, test_loader
    sampler = distributed.ResumableSampler(train_ds, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                           seed=cfg.seed, drop_last=False)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler,
                              num_workers=_workers(cfg), pin_memory=pin, worker_init_fn=ignore_sigint_in_worker,
                              generator=loader_rng)
    test_loader = DataLoader(test_ds, batch_size=cfg.batch_size, shuffle=False,
                             num_workers=_workers(cfg), pin_memory=pin, worker_init_fn=ignore_sigint_in_worker)
    return train_ds, sampler, train_loader, test_loader


def _workers(cfg: EncoderTrainConfig) -> int:
    return max(0, min(cfg.num_workers, os.cpu_count() or 1))


def _resume(cfg: EncoderTrainConfig, model: CNNRNN, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, run: RunFolder,
            log: Callable[[str], None]) -> tuple[int, float, EpochProgress | None]:
    """Loads ``--resume``; returns (first epoch to run, best accu so far, progress of that epoch when the
    checkpoint was saved part-way through it)."""
    ckpt = load_checkpoint(cfg.resume, map_location="cpu")
    load_weights(model, extract_state_dict(ckpt, cfg.resume), cfg.resume)
    epoch = int(ckpt.get("epoch", ckpt.get("meta", {}).get("epoch", -1)))
    if "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler.is_enabled() and "grad_scaler" in ckpt:
            scaler.load_state_dict(ckpt["grad_scaler"])
        set_rng_state(ckpt.get("rng"))
        old = ckpt.get("config", {})
        ignore = {"resume", "epoch", "output_dir", "num_workers", "device", "progress", "print_every"}
        changed = [k for k, v in to_dict(cfg).items() if k not in ignore and k in old and old[k] != v]
        if changed:
            log(f"warning: resuming with settings that differ from the checkpoint's: {', '.join(changed)}")
        best = float(ckpt.get("best_accu", float("-inf")))
    else:
        # The authors' format has weights only: the optimizer starts fresh and the LR schedule is
        # fast-forwarded to where that epoch left it (the original restarted it at the initial LR).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            for _ in range(epoch + 1):
                scheduler.step()
        log(f"resuming from an original-format checkpoint: fresh optimizer, learning rate {lr_of(optimizer):g}")
        best = float("-inf")
    progress = EpochProgress.from_dict(ckpt["mid_epoch"]) if "mid_epoch" in ckpt else None
    if progress is not None:
        log(f"resumed {cfg.resume}, saved part-way through epoch {progress.epoch} after {progress.batches} "
            f"batch(es); continuing with the next batch")
    else:
        log(f"resumed {cfg.resume} (epoch {epoch}); continuing at epoch {epoch + 1}")
    if Path(cfg.resume).resolve() == (run.path / "latest.pth").resolve():
        made = complete_links(ckpt, run.path) if run.writer else []
        if made:
            log(f"made {', '.join(made)}, which the interrupted run did not get to")
    # Records of epochs after the checkpoint's are written again by this run.
    dropped = run.trim_jsonl("metrics.jsonl", lambda r: r.get("epoch", -1) <= epoch)
    if dropped:
        log(f"metrics.jsonl: dropped {dropped} record(s) after epoch {epoch}, which this run does again")
    return epoch + 1 if progress is None else progress.epoch, best, progress
