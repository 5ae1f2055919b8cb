"""Stage D: a speech embedding for every spoken caption of every split (docs/original.md#s10).

    python Audio_to_Image/extract_audio_feature.py --model ./output/Audio_to_Image/log/birds_speech_encoder/latest.pth \
        --audio_switch googlenet_caffe --dataset birds --bidirectional

Writes, per split (``--splits``, default ``train,test``), exactly what the original wrote and where:

* ``<data_root>/<split>/audio_features_<switch>.pickle``: one float32 ndarray ``(N, C, D)``: row = image
  in manifest order, column = caption index in the item's ``audio`` (``wav``) order, D = the encoder's
  sentence-embedding size (1024 in the paper). C = 10 for birds, flowers and shapes. **Places** has one
  caption per image and gets ``(N, 1, D)``: the original's Places path never ran (docs/original.md#bug-17) and would
  have written ``(N, D)``; every dataset gets the same 3-D layout here.
* ``<data_root>/<split>/audio_features_lens_<switch>.pickle``: int64 ``(N, C)``, the valid log-mel frame
  count of each caption (<= target_length) **before** the //64 reduction (docs/original.md#s1-3).
* ``<pickle>.json`` beside the features: checkpoint (path, epoch, sha1), front-end settings, N, C, D and
  the short utterances met. A rerun whose inputs match it skips the split; ``--force`` recomputes.

Both pickles use protocol 2 and are written atomically. The front-end settings are the checkpoint's
(``frontend``, stored by our training); the authors' checkpoints carry none and get the docs/original.md#s4
defaults. ``--frontend.NAME`` overrides either. The architecture is read off the checkpoint; the
original's ``--bidirectional``/``--rnn_layers``, when given, must agree with it.

Fixed against the original (docs/original.md#s10, §14 #1, #16, #17): any device (``--device``), batches of any size
instead of one image's captions at a time, and an utterance shorter than one encoder step (64 frames)
is embedded from its own first step (``encoder_steps`` clamps its length to 1) instead of taking a
neighbouring caption's embedding; such utterances are counted and named in a warning.

**Precision** (``--precision``, fp32 by default, the original's): bf16 runs the encoder under autocast
(CUDA, or a CPU with native bf16; ``auto`` picks it where native); the pickles stay float32 and the
sidecar records the precision (a rerun in another one recomputes).

**Length batching** (``--length_batching``, on by default): clips are sorted by length and each batch is
cut to the frames its longest clip actually reads, which is exact (the proof: ``Audio_to_Image/embedding.py``,
the library of this stage). ``--no-length_batching`` runs every batch at full length in manifest order.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.embedding import (
    check_frontend_fits,
    encoder_frontend,
    explicit_keys,
    extract_split,
    load_encoder,
    log,
)
from Audio_to_Image.feature_cache import FeatureCache
from s2i.cli import run_cli
from s2i.config import ConfigError, option, parse_config, require
from s2i.data.manifests import DATA_ROOTS, DATASETS
from s2i.distributed import resolve_device
from s2i.files import file_digest
from s2i.precision import PRECISIONS, resolve_precision


@dataclass
class ExtractConfig:
    """Stage D's settings: the flags and the keys of a ``--config`` YAML (recorded in every sidecar)."""

    # --- the original's flags (docs/original.md#s13) ---
    model: str = option("./Audio_to_Image/model/model_best.pt",
                        "speech-encoder checkpoint: ours (latest.pth, best.pth) or the authors' epoch_N.pth")
    audio_switch: str = option("0", "tag in the output names audio_features_<tag>.pickle (README: googlenet_caffe)")
    dataset: str = option("birds", "manifest schema and default data root", choices=DATASETS)
    bidirectional: bool | None = option(None, "check that the checkpoint's LSTM is (or, --no-bidirectional, is not) "
                                        "bidirectional; None = take it from the checkpoint")
    rnn_layers: int | None = option(None, "check the checkpoint's number of LSTM layers; None = take it from "
                                    "the checkpoint")
    train_json: str | None = option(None, "unused (as in the original); kept so old commands parse")
    val_json: str | None = option(None, "unused (as in the original); kept so old commands parse")
    no_cuda: bool = option(False, "run on the CPU, like --device cpu (the original ignored this flag)")
    feature_len: int = option(1024, "unused (as in the original); the size is the checkpoint's")
    dropout: float = option(0.0, "unused (as in the original); dropout is off in eval mode")
    # --- new in this reproduction ---
    device: str = option("auto", "auto = cuda when available, else cpu", choices=("auto", "cpu", "cuda"))
    data_root: str | None = option(None, "dataset folder holding <split>.json (None = ./data/<dataset>)")
    splits: str = option("train,test", "comma-separated splits; each reads <data_root>/<split>.json")
    batch_size: int = option(64, "clips per forward pass")
    num_workers: int = option(4, "processes computing log-mels (capped at the CPU count; 0 = in this process)")
    feature_cache: str = option("on", "read log-mels from the stage-C cache and store the missing ones "
                                "(off = decode every clip)", choices=("on", "off"))
    feature_cache_dir: str | None = option(None, "log-mel cache folder (None = <data_root>/feature_cache)")
    length_batching: bool = option(True, "sort clips by length and cut each batch to the frames it reads "
                                   "(exact; off = every batch at full target_length)")
    precision: str = option("fp32", "arithmetic of the encoder: fp32 (the original), bf16 (CUDA, or a CPU with native "
                            "bf16), fp16 (CUDA), auto = bf16 where native, else fp32; the embeddings are written "
                            "float32 either way", choices=PRECISIONS)
    force: bool = option(False, "recompute splits whose outputs are up to date")
    progress: bool = option(True, "show progress bars")
    frontend: FrontEndConfig = dataclasses.field(default_factory=FrontEndConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 1, "--batch_size must be at least 1"),
            (self.num_workers >= 0, "--num_workers must be 0 or more"),
            (self.rnn_layers is None or self.rnn_layers >= 1, "--rnn_layers must be at least 1"),
            (bool(self.split_list), "--splits names no split"),
            (all(re.fullmatch(r"[\w.-]+", s) and s.strip(".") for s in self.split_list),
             f"--splits must be plain names such as train,test; got {self.splits!r}"),
            (bool(self.audio_switch) and "/" not in self.audio_switch and "\\" not in self.audio_switch,
             f"--audio_switch must be a non-empty name without slashes, got {self.audio_switch!r}"),
        ]
        require(checks)

    @property
    def split_list(self) -> list[str]:
        return [s.strip() for s in self.splits.split(",") if s.strip()]

    @property
    def root(self) -> Path:
        return Path(self.data_root or DATA_ROOTS[self.dataset])


def _device(cfg: ExtractConfig) -> torch.device:
    """``--no_cuda`` (the original's flag) means ``--device cpu``; the rest is the one resolver's."""
    name = "cpu" if cfg.no_cuda and cfg.device == "auto" else cfg.device
    if cfg.no_cuda and cfg.device == "cuda":
        raise ConfigError("--no_cuda contradicts --device cuda")
    return resolve_device(name)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Parses the settings, loads the encoder and writes every split's embeddings; returns each split's summary."""
    cfg, ns = parse_config(ExtractConfig, argv, __doc__.splitlines()[0])
    device = _device(cfg)
    precision = resolve_precision(cfg.precision, device)
    model, ckpt = load_encoder(cfg.model, device, cfg.bidirectional, cfg.rnn_layers)
    frontend, source = encoder_frontend(ckpt, cfg.model, cfg.frontend, explicit_keys(ns))
    check_frontend_fits(model, frontend)
    epoch = ckpt.get("epoch", ckpt.get("meta", {}).get("epoch") if isinstance(ckpt.get("meta"), dict) else None)
    ckpt_info = {"path": str(Path(cfg.model).resolve()), "epoch": epoch, "sha1": file_digest(cfg.model, "sha1"),
                 "format": "ours" if "model_args" in ckpt else "original"}
    log(f"speech encoder {cfg.model} (epoch {epoch}, {ckpt_info['format']} format): "
        f"{'bi' if model.num_dirs == 2 else 'uni'}directional, {model.rnn_layers} LSTM layer(s), D = {model.nhidden}; "
        f"device {device}, precision {precision}; front-end from {source} (target_length {frontend.target_length})")
    if cfg.dataset == "places" and not frontend.max_abs_norm and ckpt_info["format"] == "original":
        log("note: the original trained Places with max-abs normalised spectrograms but extracted without it; "
            "pass --frontend.max_abs_norm to match its training")
    cache = None
    if cfg.feature_cache == "on":
        cache = FeatureCache(cfg.feature_cache_dir or cfg.root / "feature_cache", frontend)
    return {split: extract_split(cfg, split, model, ckpt_info, frontend, cache, device, precision)
            for split in cfg.split_list}


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
