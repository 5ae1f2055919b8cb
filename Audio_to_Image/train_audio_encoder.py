"""Stage C: train the CNN+BiLSTM speech encoder against fixed teacher image features (SPEC §6–§9).

Single process:   python Audio_to_Image/train_audio_encoder.py --dataset birds --jel_flag ...
Several:          ./run_audio_encoder.sh NPROC --dataset birds ...   (torchrun; gloo on CPU, NCCL on CUDA)

Every flag of the original keeps its name and default (SPEC §13). Settings come from the defaults
below, then ``--config FILE`` (YAML), then the flags given.

Ctrl-C (or SIGTERM) finishes the current batch, saves ``latest.pth`` part-way through the epoch and exits
with status 130 (143); ``--resume <run>/latest.pth`` continues with the next batch, exactly.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.augment import SpecAugmentConfig
from Audio_to_Image.datasets import SpeechImageDataset, load_teacher_features
from Audio_to_Image.feature_cache import FeatureCache
from Audio_to_Image.losses import LossWeights, class_prototypes
from Audio_to_Image.speech_encoder import CNNRNN, model_args_from
from Audio_to_Image.trainer import (
    EpochProgress,
    checkpoint_dict,
    complete_links,
    evaluate,
    is_better,
    lr_of,
    restore_rng,
    save_checkpoints,
    train_one_epoch,
)
from s2i import distributed
from s2i.checkpoints import atomic_save, extract_state_dict, load_checkpoint, load_weights
from s2i.cli import run_cli
from s2i.config import ConfigError, option, parse_config, require, to_dict
from s2i.interrupt import StopRequest, TrainingInterrupted, ignore_sigint_in_worker
from s2i.data.manifests import DATA_ROOTS, DATASETS, load_manifest
from s2i.runs import RunFolder, tensorboard_writer


@dataclass
class EncoderTrainConfig:
    # --- the original's flags (SPEC §13), same names and defaults ---
    local_rank: int = option(0, "process index on this node; torchrun's LOCAL_RANK takes precedence",
                             flags=("--local-rank",))
    num_workers: int = option(8, "data-loader worker processes (capped at the CPU count)")
    resume: str | None = option(None, "checkpoint to continue from (ours or the authors' epoch_N.pth)")
    data_path: str = option("./data/birds/CUB_200_2011_audio/audio/0", "unused; kept so old commands parse")
    output_dir: str = option("./output/Audio_to_Image/log/baseline", "run folder for logs and checkpoints")
    batch_size: int = option(64, "samples per process and step")
    epoch: int = option(100, "total number of epochs")
    learning_rate: float = option(1e-3, "Adam learning rate")
    print_every: int = option(50, "iterations between status lines")
    eval_every: int = option(5, "epochs between evaluations (the last epoch is always evaluated)")
    loss_diff: float = option(1.0, "JEL weight of different-class pairs")
    loss_same: float = option(1.0, "JEL weight of same-class pairs")
    lr_scheduler_step_size: int = option(30, "StepLR step in epochs")
    lr_scheduler_gamma: float = option(0.2, "StepLR factor")
    dataset: str = option("birds", "which manifest schema and data root", choices=DATASETS)
    jel_flag: bool = option(False, "use the joint embedding loss")
    l1_flag: bool = option(False, "use the L1 loss on globally normalised features")
    distill_flag: bool = option(False, "use the distillation (KL) loss")
    lambda_l1: float = option(1.0, "weight of the L1 loss")
    lambda_distill: float = option(1.0, "weight of the distillation loss")
    distill_T: float = option(2.0, "temperature applied to the teacher in distillation")
    proto_flag: bool = option(False, "ours, not the paper's: add a cross-entropy over the cosine similarity to "
                              "each training class's mean teacher feature (learns much faster on small budgets)")
    lambda_proto: float = option(1.0, "weight of the prototype loss")
    proto_T: float = option(0.1, "temperature of the prototype loss's softmax")
    dropout: float = option(0.5, "LSTM dropout between layers (no effect with one layer, as in the original)")
    bidirectional: bool = option(False, "bidirectional LSTM (the paper's README turns it on)")
    rnn_layers: int = option(1, "stacked LSTM layers")
    # --- new in this reproduction ---
    device: str = option("auto", "auto = cuda when available, else cpu", choices=("auto", "cpu", "cuda"))
    data_root: str | None = option(None, "dataset folder (default ./data/<dataset>)")
    train_json: str | None = option(None, "training manifest (default <data_root>/train.json)")
    test_json: str | None = option(None, "evaluation manifest (default <data_root>/test.json)")
    embedding_dim: int = option(1024, "speech-embedding size; must equal the teacher feature size")
    input_dropout: float = option(0.0, "dropout on the LSTM input, which acts with one layer too (0 = original)")
    weight_decay: float = option(1e-5, "Adam's (coupled L2) weight decay")
    seed: int = option(1234, "seed of initialisation and of every random choice of the data")
    feature_cache: str = option("on", "reuse log-mels computed once per clip (off = decode every sample, "
                                "as the original)", choices=("on", "off"))
    feature_cache_dir: str | None = option(None, "log-mel cache folder (default <data_root>/feature_cache)")
    reshuffle_each_epoch: bool = option(True, "call DistributedSampler.set_epoch (False = the original's "
                                        "identical order every epoch)")
    recall_topk: int = option(50, "k of the paper's precision@k ('ap50')")
    tensorboard: bool = option(True, "also log to TensorBoard when it is installed")
    progress: bool = option(True, "show progress bars")
    frontend: FrontEndConfig = dataclasses.field(default_factory=FrontEndConfig)
    augment: SpecAugmentConfig = dataclasses.field(default_factory=SpecAugmentConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 1, "--batch_size must be at least 1"),
            (self.epoch >= 1, "--epoch must be at least 1"),
            (self.eval_every >= 1, "--eval_every must be at least 1"),
            (self.learning_rate > 0, "--learning_rate must be positive"),
            (self.rnn_layers >= 1, "--rnn_layers must be at least 1"),
            (0 <= self.dropout < 1 and 0 <= self.input_dropout < 1, "dropouts must lie in [0, 1)"),
            (self.embedding_dim % (2 if self.bidirectional else 1) == 0,
             "--embedding_dim must be even with --bidirectional"),
            (self.frontend.target_length >= 64, "frontend.target_length must be at least 64 frames"),
        ]
        require(checks)

    @property
    def root(self) -> Path:
        return Path(self.data_root or DATA_ROOTS[self.dataset])

    def loss_weights(self) -> LossWeights:
        return LossWeights(self.jel_flag, self.loss_diff, self.loss_same, self.l1_flag, self.lambda_l1,
                           self.distill_flag, self.lambda_distill, self.distill_T, self.proto_flag,
                           self.lambda_proto, self.proto_T)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _build_data(cfg: EncoderTrainConfig, dist: distributed.DistInfo, log):
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
    sampler = distributed.ResumableSampler(train_ds, num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
                                           seed=cfg.seed, drop_last=False)
    pin = dist.device.type == "cuda"
    # The training loader gets its own generator: drawing its workers' base seed from the global RNG
    # would shift the dropout masks of a run resumed part-way through an epoch.
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler,
                              num_workers=_workers(cfg), pin_memory=pin, worker_init_fn=ignore_sigint_in_worker,
                              generator=torch.Generator().manual_seed(cfg.seed))
    test_loader = DataLoader(test_ds, batch_size=cfg.batch_size, shuffle=False,
                             num_workers=_workers(cfg), pin_memory=pin, worker_init_fn=ignore_sigint_in_worker)
    return train_ds, sampler, train_loader, test_loader


def _workers(cfg: EncoderTrainConfig) -> int:
    return max(0, min(cfg.num_workers, os.cpu_count() or 1))


def _resume(cfg, model, optimizer, scheduler, run: RunFolder, log) -> tuple[int, float, EpochProgress | None]:
    """Loads ``--resume``; returns (first epoch to run, best accu so far, progress of that epoch when the
    checkpoint was saved part-way through it)."""
    ckpt = load_checkpoint(cfg.resume, map_location="cpu")
    load_weights(model, extract_state_dict(ckpt, cfg.resume), cfg.resume)
    epoch = int(ckpt.get("epoch", ckpt.get("meta", {}).get("epoch", -1)))
    if "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        restore_rng(ckpt.get("rng"))
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


def main(argv: list[str] | None = None) -> dict:
    cfg, ns = parse_config(EncoderTrainConfig, argv, __doc__.splitlines()[0])
    if cfg.resume and "output_dir" not in vars(ns) and cfg.output_dir == EncoderTrainConfig.output_dir:
        cfg = dataclasses.replace(cfg, output_dir=str(Path(cfg.resume).parent))
    dist = distributed.init_distributed(cfg.device, cfg.local_rank)
    try:
        result = _run(cfg, dist)
    except BaseException:
        distributed.cleanup(wait_for_peers=False)
        raise
    distributed.cleanup()
    return result


def _run(cfg: EncoderTrainConfig, dist: distributed.DistInfo) -> dict:
    run = RunFolder(cfg.output_dir, resume=bool(cfg.resume), writer=dist.is_main, name="speech_encoder")
    log = run.logger.info
    log(f"speech encoder: {cfg.dataset}, device {dist.device}, {dist.world_size} process(es), run {run.path}")
    if cfg.dataset == "places" and not cfg.frontend.max_abs_norm:
        log("note: the original divided Places spectrograms by their max-abs; pass --frontend.max_abs_norm "
            "to do the same")
    _seed_everything(cfg.seed)
    train_ds, sampler, train_loader, test_loader = _build_data(cfg, dist, log)

    model_args = model_args_from(cfg)
    model = CNNRNN(**model_args).to(dist.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8,
                                 weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_scheduler_step_size,
                                                gamma=cfg.lr_scheduler_gamma)
    start_epoch, best_accu, progress = 0, float("-inf"), None
    if cfg.resume:
        start_epoch, best_accu, progress = _resume(cfg, model, optimizer, scheduler, run, log)
    if start_epoch >= cfg.epoch:
        raise ConfigError(f"the checkpoint already finished epoch {start_epoch - 1}; raise --epoch above {start_epoch}")
    net = model
    if dist.distributed:
        net = DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    run.write_yaml("config.yaml", to_dict(cfg))
    tb = tensorboard_writer(run.path / "tensorboard", cfg.tensorboard and dist.is_main)
    log(f"{len(train_ds)} training images, {len(test_loader.dataset)} test images, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, epochs {start_epoch}..{cfg.epoch - 1}")

    weights = cfg.loss_weights()
    prototypes = None
    if weights.proto:
        prototypes = class_prototypes(train_ds.features, train_ds.manifest.labels).to(dist.device)
        log(f"prototype loss on (weight {weights.lambda_proto}, T {weights.proto_T}): {prototypes.shape[0]} "
            f"class centres of the training teacher features")
    steps_per_epoch = len(train_loader)
    metrics: dict = {}
    with StopRequest(log, dist.device) as stop:
        for epoch in range(start_epoch, cfg.epoch):
            # Same order every epoch unless set_epoch is called (SPEC §14 #9); the data's own random choices
            # (view, caption) are drawn per epoch either way.
            sampler.set_epoch(epoch if cfg.reshuffle_each_epoch else 0)
            train_ds.set_epoch(epoch)
            if progress is None or progress.epoch != epoch:
                progress = EpochProgress(epoch)
            sampler.skip = progress.batches * cfg.batch_size
            lr = lr_of(optimizer)
            stats = train_one_epoch(net, train_loader, optimizer, weights, dist.device, epoch=epoch,
                                    num_epochs=cfg.epoch, print_every=cfg.print_every, log=log,
                                    show_progress=cfg.progress and dist.is_main,
                                    global_step=epoch * steps_per_epoch + progress.batches,
                                    progress=progress, should_stop=stop.requested, prototypes=prototypes)
            sampler.skip = 0
            if progress.stopped:
                if dist.is_main:
                    ckpt = checkpoint_dict(model, optimizer, scheduler, epoch=epoch - 1, model_args=model_args,
                                           frontend=cfg.frontend.to_dict(), config=to_dict(cfg), metrics=metrics,
                                           best_accu=best_accu, mid_epoch=progress)
                    atomic_save(ckpt, run.path / "latest.pth")
                distributed.barrier()
                _interrupted(run, tb, stop, f"part-way through epoch {epoch} (after batch {progress.batches} of "
                             f"{steps_per_epoch})", " (epoch_N.pth and best.pth keep complete epochs)")
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
                                   show_progress=cfg.progress)
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
                                       metrics=metrics if eval_epoch else None, best_accu=best_accu)
                save_checkpoints(ckpt, run.path, eval_epoch=eval_epoch, is_best=is_best)
            distributed.barrier()
            # A signal during the evaluation or the save: this epoch's checkpoint is complete, stop here.
            if epoch < cfg.epoch - 1 and stop.requested():
                _interrupted(run, tb, stop, f"at the end of epoch {epoch}")

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


def _interrupted(run: RunFolder, tb, stop: StopRequest, where: str, note: str = "") -> None:
    latest = run.path / "latest.pth"
    run.logger.info(f"interrupted {where}: checkpoint saved to {latest}{note}; to continue, run the same "
                    f"command with --resume {latest}")
    if tb:
        tb.close()
    run.close()
    raise TrainingInterrupted(f"interrupted {where}", stop.exit_code)


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
