"""Stage D: a speech embedding for every spoken caption of every split (SPEC §10).

    python Audio_to_Image/extract_audio_feature.py --model ./output/Audio_to_Image/log/birds_speech_encoder/latest.pth \
        --audio_switch googlenet_caffe --dataset birds --bidirectional

Writes, per split (``--splits``, default ``train,test``), exactly what the original wrote and where:

* ``<data_root>/<split>/audio_features_<switch>.pickle``: one float32 ndarray ``(N, C, D)``: row = image
  in manifest order, column = caption index in the item's ``audio`` (``wav``) order, D = the encoder's
  sentence-embedding size (1024 in the paper). C = 10 for birds, flowers and shapes. **Places** has one
  caption per image and gets ``(N, 1, D)``: the original's Places path never ran (SPEC §14 #17) and would
  have written ``(N, D)``; every dataset gets the same 3-D layout here.
* ``<data_root>/<split>/audio_features_lens_<switch>.pickle``: int64 ``(N, C)``, the valid log-mel frame
  count of each caption (<= target_length) **before** the //64 reduction (SPEC §1.3).
* ``<pickle>.json`` beside the features: checkpoint (path, epoch, sha1), front-end settings, N, C, D and
  the short utterances met. A rerun whose inputs match it skips the split; ``--force`` recomputes.

Both pickles use protocol 2 and are written atomically. The front-end settings are the checkpoint's
(``frontend``, stored by our training); the authors' checkpoints carry none and get the SPEC §4
defaults. ``--frontend.NAME`` overrides either. The architecture is read off the checkpoint; the
original's ``--bidirectional``/``--rnn_layers``, when given, must agree with it.

Fixed against the original (SPEC §10, §14 #1, #16, #17): any device (``--device``), batches of any size
instead of one image's captions at a time, and an utterance shorter than one encoder step (64 frames)
is embedded from its own first step (``encoder_steps`` clamps its length to 1) instead of taking a
neighbouring caption's embedding; such utterances are counted and named in a warning.

**Length batching** (``--length_batching``, on by default). On a CPU the conv stack over 2048 padded
frames dominates. Clips are sorted by length within windows of ``8 * batch_size``, and each batch is
cut to the frames its longest clip actually *reads*: the last valid encoder step ``n - 1`` of a clip
with ``n`` valid steps depends on the input frames ``[0, frames_needed(n))`` only (``64 n + 131`` for the
paper's encoder; the conv/pool receptive field, :func:`frames_needed`). Every layer acts per time
position (BatchNorm in eval mode, ReLU) or through a conv/pool window, and the LSTM is packed, so
positions past a clip's valid steps never reach its output; the frames a cut batch keeps are the same
values (0 dB padding included) that the full ``target_length`` input has there. The result equals
running each clip alone at full length up to float rounding, and the sentence embedding is the sum of
the valid steps divided by the full-length step count (32), as the original's mean over 32 steps
(tests: ``tests/test_extract_audio_feature.py``). Cutting a batch at its longest clip's ``n_frames``
without that margin is *not* exact, because the 0 dB padding is the loudest value and leaks into the
last steps through the receptive field. ``--no-length_batching`` runs every batch at full length in
manifest order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from Audio_to_Image.audio import AudioError, FrontEndConfig
from Audio_to_Image.feature_cache import FeatureCache, load_features
from Audio_to_Image.speech_encoder import CNNRNN, TIME_REDUCTION, encoder_steps, load_speech_encoder
from s2i.checkpoints import CheckpointError
from s2i.cli import run_cli
from s2i.config import ConfigError, load_yaml, option, parse_config, require, to_dict
from s2i.distributed import resolve_device
from s2i.data.manifests import DATA_ROOTS, DATASETS, Manifest, ManifestError, load_manifest
from s2i.runs import write_json_atomic
from s2i.data.safe_pickle import save_pickle

SORT_WINDOW_BATCHES = 8
"""Clips are sorted by length within windows of this many batches (the whole split would not fit in memory)."""
MAX_LISTED = 10
"""How many short utterances a warning names."""


@dataclass
class ExtractConfig:
    # --- the original's flags (SPEC §13) ---
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


# --------------------------------------------------------------------------------------------------
# Embedding (library part: no argparse, no files)


def _time_geometry(layer: nn.Module) -> tuple[int, int, int, int] | None:
    """(kernel, stride, padding, dilation) along time of a conv/pool layer, else None."""
    if not isinstance(layer, nn.Conv2d | nn.MaxPool2d):
        return None

    def w(v):  # the width (time) component of an int-or-pair setting
        return v[1] if isinstance(v, tuple) else v

    return w(layer.kernel_size), w(layer.stride), w(layer.padding), w(layer.dilation)


def frames_needed(model: CNNRNN, steps: int) -> int:
    """Input frames that the first ``steps`` encoder steps read: the conv stack's receptive field.

    Output position ``i`` of a conv/pool layer with time kernel k, stride s, padding p, dilation d reads
    input positions ``s*i - p .. s*i - p + d*(k-1)``, whatever the input length, so outputs ``0..n-1``
    read inputs ``0 .. s*(n-1) - p + d*(k-1)``. Walking back through the stack gives ``64 n + 131`` for
    the paper's encoder (SPEC §5). Negative positions are the layers' own padding in every case.

    Args:
        model: the encoder (only its ``Conv`` stack's geometry is used).
        steps: number of leading encoder steps, >= 1.
    Returns:
        Number of leading input frames those steps depend on.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    need = steps
    for block in reversed(list(model.Conv)):
        layer = block[0] if isinstance(block, nn.Sequential) else block
        geometry = _time_geometry(layer)
        if geometry is not None:
            k, s, p, d = geometry
            need = s * (need - 1) - p + d * (k - 1) + 1
    return need


def frames_needed_table(model: CNNRNN, target_length: int) -> list[int]:
    """``table[n]`` = frames a clip with ``n`` valid steps needs, capped at ``target_length`` (``n = 1..steps``)."""
    full = model.steps_for(target_length)
    return [0] + [min(target_length, frames_needed(model, n)) for n in range(1, full + 1)]


def padded_frames(need: int, target_length: int) -> int:
    """Frames a batch is cut to: ``need`` rounded up to whole encoder steps (fewer distinct shapes, and
    more frames never hurt), capped at ``target_length``."""
    return min(target_length, -(-need // TIME_REDUCTION) * TIME_REDUCTION)


@torch.no_grad()
def embed_batch(model: CNNRNN, specs: torch.Tensor, n_frames: torch.Tensor, full_steps: int) -> torch.Tensor:
    """Sentence embeddings of a batch that may be cut short of ``target_length`` (see module docstring).

    Args:
        model: the encoder in eval mode.
        specs: ``(B, n_mels, T)`` log-mels, T <= target_length, holding at least the frames each clip
            reads (:func:`frames_needed` of its valid steps).
        n_frames: ``(B,)`` valid frame counts (before the //64 reduction).
        full_steps: encoder steps of a full-length input (``model.steps_for(target_length)``, 32).
    Returns:
        ``(B, nhidden)``: the sum of each clip's valid LSTM outputs over ``full_steps``, which is the
        original's mean over all 32 steps with zeros past the length (SPEC §5).
    """
    if model.training:
        raise ValueError("embed_batch needs the model in eval mode (BatchNorm must use its running statistics)")
    steps = encoder_steps(n_frames.to("cpu", torch.int64), full_steps)
    words, _ = model(specs, steps)  # (B, nhidden, T/64), zeros past each clip's steps
    return words.sum(dim=2) / full_steps


@dataclass
class _Clip:
    index: int
    spec: torch.Tensor | None  # (n_mels, frames read), None on error
    n_frames: int
    need: int
    error: tuple[str, str] | None = None  # (path, reason), raised in the main process


class _ClipDataset(Dataset):
    """Log-mel of one clip, cut to the frames its embedding reads (all of them without length batching)."""

    def __init__(self, paths: list[Path], frontend: FrontEndConfig, cache: FeatureCache | None,
                 need_table: list[int] | None) -> None:
        self.paths = paths
        self.frontend = frontend
        self.cache = cache
        self.need_table = need_table

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> _Clip:
        path = self.paths[index]
        try:
            spec, n_frames = load_features(path, self.frontend, self.cache)
        except AudioError as exc:
            # Returned, not raised: a DataLoader worker would turn it into a multi-line RuntimeError.
            return _Clip(index, None, 0, 0, (exc.path, exc.reason))
        except (OSError, ValueError) as exc:
            return _Clip(index, None, 0, 0, (str(path), f"{type(exc).__name__}: {exc}"))
        target = self.frontend.target_length
        need = target
        if self.need_table is not None:
            steps = min(max(n_frames // TIME_REDUCTION, 1), len(self.need_table) - 1)
            need = self.need_table[steps]
        return _Clip(index, torch.from_numpy(np.ascontiguousarray(spec[:, :need])), int(n_frames), need)


def _as_list(items: list[_Clip]) -> list[_Clip]:
    return items


def _batches(clips: list[_Clip], batch_size: int, sort: bool):
    if sort:
        clips = sorted(clips, key=lambda c: (c.n_frames, c.index))
    for i in range(0, len(clips), batch_size):
        yield clips[i:i + batch_size]


def embed_clips(
    model: CNNRNN,
    paths: list[Path],
    frontend: FrontEndConfig,
    cache: FeatureCache | None,
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    length_batching: bool = True,
    progress: bool = True,
    desc: str = "embeddings",
) -> tuple[np.ndarray, np.ndarray]:
    """Sentence embedding and valid frame count of every clip of ``paths``, in that order.

    Args:
        model: the encoder in eval mode, on ``device``.
        paths: audio files.
        frontend: log-mel settings (``target_length`` = the full input length).
    Returns:
        ``(len(paths), nhidden)`` float32 and ``(len(paths),)`` int64 ``n_frames`` (before //64).
    Raises:
        AudioError: a file is missing or unusable (named).
    """
    target = frontend.target_length
    full_steps = model.steps_for(target)
    table = frames_needed_table(model, target) if length_batching else None
    dataset = _ClipDataset(paths, frontend, cache, table)
    window = batch_size * SORT_WINDOW_BATCHES if length_batching else batch_size
    # One window in flight per worker: a window of full-length clips is 512 x 330 kB.
    loader = DataLoader(dataset, batch_size=window, shuffle=False, num_workers=num_workers, collate_fn=_as_list,
                        prefetch_factor=1 if num_workers > 0 else None)
    feats = np.zeros((len(paths), model.nhidden), dtype=np.float32)
    lens = np.zeros(len(paths), dtype=np.int64)
    pin = device.type == "cuda"
    bar = tqdm(total=len(paths), desc=desc, unit="clip", disable=not progress)
    # TF32 (on by default for cuDNN convolutions) would change the embeddings by ~1e-3 relative to the
    # float32 CPU path; a one-off extraction can afford full float32 on the GPU.
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for clips in loader:
            for clip in clips:
                if clip.error is not None:
                    raise AudioError(*clip.error)
            for batch in _batches(clips, batch_size, sort=length_batching):
                t = padded_frames(max(c.need for c in batch), target)
                x = torch.full((len(batch), frontend.n_mels, t), frontend.pad_value, dtype=torch.float32)
                for row, clip in enumerate(batch):
                    x[row, :, : clip.spec.shape[1]] = clip.spec
                n = torch.tensor([c.n_frames for c in batch], dtype=torch.int64)
                if pin:
                    x = x.pin_memory()
                emb = embed_batch(model, x.to(device, non_blocking=pin), n, full_steps)
                idx = np.array([c.index for c in batch])
                feats[idx] = emb.float().cpu().numpy()
                lens[idx] = n.numpy()
                bar.update(len(batch))
    finally:
        bar.close()
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return feats, lens


# --------------------------------------------------------------------------------------------------
# Stage script


def _log(msg: str) -> None:
    print(msg, flush=True)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def explicit_keys(ns) -> set[str]:
    """Dotted names set on the command line or in the ``--config`` YAML (as opposed to defaulted)."""
    keys = {k for k in vars(ns) if k != "config"}

    def walk(node: Any, prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                keys.add(prefix + k)

    if getattr(ns, "config", None):
        walk(load_yaml(ns.config), "")
    return keys


def _device(cfg: ExtractConfig) -> torch.device:
    name = "cpu" if cfg.no_cuda and cfg.device == "auto" else cfg.device
    if cfg.no_cuda and cfg.device == "cuda":
        raise ConfigError("--no_cuda contradicts --device cuda")
    try:
        return resolve_device(name)
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from None


def load_encoder(path: str | Path, device: torch.device, bidirectional: bool | None = None,
                 rnn_layers: int | None = None, flag: str = "--model") -> tuple[CNNRNN, dict[str, Any]]:
    """The encoder of a checkpoint (ours or the authors'), in eval mode on ``device``, and the checkpoint.

    ``bidirectional``/``rnn_layers`` (the original's flags; None = take the checkpoint's) must agree
    with the architecture read off the checkpoint; ``flag`` names the option that gave ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist ({flag})")
    try:
        model, ckpt = load_speech_encoder(path, map_location="cpu")
    except TypeError as exc:  # model_args that CNNRNN does not take
        raise CheckpointError(f"checkpoint {path}: its model_args do not fit CNNRNN ({exc})") from None
    is_bidirectional = model.num_dirs == 2
    if bidirectional is not None and bidirectional != is_bidirectional:
        given = "--bidirectional" if bidirectional else "--no-bidirectional"
        kind = "a bidirectional" if is_bidirectional else "a unidirectional"
        raise CheckpointError(f"checkpoint {path} holds {kind} LSTM but {given} was given")
    if rnn_layers is not None and rnn_layers != model.rnn_layers:
        raise CheckpointError(f"checkpoint {path} holds {model.rnn_layers} LSTM layer(s) but --rnn_layers "
                              f"{rnn_layers} was given")
    return model.to(device).eval(), ckpt


def check_frontend_fits(model: CNNRNN, frontend: FrontEndConfig) -> None:
    """Raises ConfigError when the front-end's output cannot feed ``model`` (mel bands, length)."""
    if frontend.n_mels != model.n_filters:
        raise ConfigError(f"the checkpoint expects {model.n_filters} mel bands but the front-end gives "
                          f"{frontend.n_mels} (frontend.n_mels)")
    if model.steps_for(frontend.target_length) < 1:
        raise ConfigError(f"frontend.target_length {frontend.target_length} is too short for one encoder step")


def encoder_frontend(ckpt: dict[str, Any], path: str | Path, requested: FrontEndConfig, explicit: set[str]
                     ) -> tuple[FrontEndConfig, str]:
    """The checkpoint's front-end (or the SPEC §4 defaults), with the explicitly given ``--frontend.*`` on top.

    Args:
        ckpt: the encoder checkpoint (ours stores ``frontend``; the authors' has none).
        path: where it came from (for messages).
        requested: the command line's front-end block.
        explicit: dotted names given explicitly (:func:`explicit_keys`); only ``frontend.*`` ones apply.
    Returns:
        (front-end config, a phrase naming where it came from).
    """
    if isinstance(ckpt.get("frontend"), dict):
        try:
            base = FrontEndConfig.from_dict(ckpt["frontend"])
        except ValueError as exc:
            raise CheckpointError(f"checkpoint {path}: unusable front-end settings: {exc}") from None
        source = "the checkpoint"
    else:
        base, source = FrontEndConfig(), "the SPEC §4 defaults (the checkpoint stores none)"
    names = [f.name for f in dataclasses.fields(FrontEndConfig) if f"frontend.{f.name}" in explicit]
    changed = {n: getattr(requested, n) for n in names if getattr(requested, n) != getattr(base, n)}
    if changed:
        if source == "the checkpoint":
            _warn("--frontend overrides the settings the encoder was trained with: "
                  + ", ".join(f"{k}={v!r} (trained: {getattr(base, k)!r})" for k, v in changed.items()))
        try:
            base = dataclasses.replace(base, **changed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        source += " with --frontend overrides"
    return base, source


def _captions_per_image(manifest: Manifest) -> int:
    first = manifest.items[0]
    count = len(first.audio)
    for i, item in enumerate(manifest.items):
        if len(item.audio) != count:
            raise ManifestError(
                f"{manifest.path} item {i} ({item.image}) has {len(item.audio)} captions but item 0 "
                f"({first.image}) has {count}; the (N, C, D) embedding array needs the same number for every image"
            )
    return count


def _audio_fingerprint(manifest: Manifest, paths: list[Path]) -> str:
    """sha1 over each caption's relative path, size and modification time, in extraction order.

    Also fails early, naming the file, when a caption's audio is missing.
    """
    h = hashlib.sha1()
    rel = [a for item in manifest.items for a in item.audio]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise AudioError(missing[0], f"file does not exist{more}; listed in {manifest.path}")
    for name, p in zip(rel, paths):
        st = p.stat()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def extract_split(cfg: ExtractConfig, split: str, model: CNNRNN, ckpt_info: dict[str, Any],
                  frontend: FrontEndConfig, cache: FeatureCache | None, device: torch.device) -> dict[str, Any]:
    """Embeds every caption of one split and writes the two pickles and the sidecar; returns a summary."""
    manifest = load_manifest(cfg.root / f"{split}.json", cfg.dataset)
    n_images, n_caps, dim = len(manifest), _captions_per_image(manifest), model.nhidden
    paths = manifest.all_audio_paths()
    out_dir = cfg.root / split
    feat_path = out_dir / f"audio_features_{cfg.audio_switch}.pickle"
    lens_path = out_dir / f"audio_features_lens_{cfg.audio_switch}.pickle"
    sidecar_path = feat_path.with_name(feat_path.name + ".json")
    inputs = {
        "checkpoint": ckpt_info,
        "frontend": frontend.to_dict(),
        "frontend_key": frontend.cache_key(),
        "dataset": cfg.dataset,
        "split": split,
        "manifest": str(manifest.path.resolve()),
        "audio_fingerprint": _audio_fingerprint(manifest, paths),
        "N": n_images,
        "C": n_caps,
        "D": dim,
    }
    summary = {"features": str(feat_path), "lens": str(lens_path), "sidecar": str(sidecar_path),
               "shape": [n_images, n_caps, dim]}
    old = _read_sidecar(sidecar_path)
    outputs_exist = feat_path.is_file() and lens_path.is_file()
    if old is not None and old.get("inputs") == inputs and outputs_exist and not cfg.force:
        _log(f"{split}: {feat_path} is up to date ({sidecar_path.name} matches); skipped (--force recomputes)")
        return {**summary, "skipped": True, "short_utterances": old.get("short_utterances", {}).get("count", 0)}
    if old is None and (feat_path.exists() or lens_path.exists()) and not cfg.force:
        raise ConfigError(f"{feat_path if feat_path.exists() else lens_path} exists but was not written by this "
                          f"script (no {sidecar_path.name}); pass --force to replace it or pick another --audio_switch")
    if old is not None and not cfg.force:
        changed = sorted(k for k in inputs if (old.get("inputs") or {}).get(k) != inputs[k])
        reason = f"{', '.join(changed)} changed" if changed else "an output file is missing"
        _log(f"{split}: recomputing {feat_path.name} ({reason} since {sidecar_path.name})")

    t0 = time.time()
    _log(f"{split}: {n_images} images x {n_caps} captions from {manifest.path}")
    feats, lens = embed_clips(model, paths, frontend, cache, device, batch_size=cfg.batch_size,
                              num_workers=min(cfg.num_workers, os.cpu_count() or 1),
                              length_batching=cfg.length_batching, progress=cfg.progress, desc=f"{split} embeddings")
    short = [str(paths[i]) for i in np.flatnonzero(lens < TIME_REDUCTION)]
    if short:
        listed = ", ".join(short[:MAX_LISTED]) + (f" (and {len(short) - MAX_LISTED} more)" if len(short) > MAX_LISTED
                                                  else "")
        _warn(f"{split}: {len(short)} utterance(s) shorter than one encoder step ({TIME_REDUCTION} frames) were "
              f"embedded from their first step alone (the original copied a neighbouring caption's embedding): {listed}")

    out_dir.mkdir(parents=True, exist_ok=True)
    # The old sidecar goes first: a run killed after the pickles but before the new sidecar must not
    # leave a sidecar that vouches for pickles it did not describe.
    sidecar_path.unlink(missing_ok=True)
    save_pickle(feats.reshape(n_images, n_caps, dim), feat_path)
    save_pickle(lens.reshape(n_images, n_caps), lens_path)
    seconds = time.time() - t0
    write_json_atomic({
        "inputs": inputs,
        "short_utterances": {"count": len(short), "min_frames": TIME_REDUCTION, "files": short[:MAX_LISTED],
                             "handling": "length clamped to one encoder step (encoder_steps)"},
        "outputs": {"features": feat_path.name, "lens": lens_path.name,
                    "features_shape": [n_images, n_caps, dim], "features_dtype": "float32",
                    "lens_shape": [n_images, n_caps], "lens_dtype": "int64",
                    "lens_meaning": "valid log-mel frames before the //64 reduction"},
        "run": {"device": str(device), "batch_size": cfg.batch_size, "length_batching": cfg.length_batching,
                "feature_cache": cfg.feature_cache, "seconds": round(seconds, 3), "config": to_dict(cfg)},
    }, sidecar_path, indent=1)
    _log(f"{split}: wrote {feat_path} {tuple(feats.reshape(n_images, n_caps, dim).shape)} and {lens_path.name} "
         f"in {seconds:.1f}s ({len(paths) / max(seconds, 1e-9):.1f} clips/s)")
    return {**summary, "skipped": False, "short_utterances": len(short), "seconds": seconds}


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    cfg, ns = parse_config(ExtractConfig, argv, __doc__.splitlines()[0])
    device = _device(cfg)
    model, ckpt = load_encoder(cfg.model, device, cfg.bidirectional, cfg.rnn_layers)
    frontend, source = encoder_frontend(ckpt, cfg.model, cfg.frontend, explicit_keys(ns))
    check_frontend_fits(model, frontend)
    epoch = ckpt.get("epoch", ckpt.get("meta", {}).get("epoch") if isinstance(ckpt.get("meta"), dict) else None)
    ckpt_info = {"path": str(Path(cfg.model).resolve()), "epoch": epoch, "sha1": _file_sha1(Path(cfg.model)),
                 "format": "ours" if "model_args" in ckpt else "original"}
    _log(f"speech encoder {cfg.model} (epoch {epoch}, {ckpt_info['format']} format): "
         f"{'bi' if model.num_dirs == 2 else 'uni'}directional, {model.rnn_layers} LSTM layer(s), D = {model.nhidden}; "
         f"device {device}; front-end from {source} (target_length {frontend.target_length})")
    if cfg.dataset == "places" and not frontend.max_abs_norm and ckpt_info["format"] == "original":
        _log("note: the original trained Places with max-abs normalised spectrograms but extracted without it; "
             "pass --frontend.max_abs_norm to match its training")
    cache = None
    if cfg.feature_cache == "on":
        cache = FeatureCache(cfg.feature_cache_dir or cfg.root / "feature_cache", frontend)
    return {split: extract_split(cfg, split, model, ckpt_info, frontend, cache, device) for split in cfg.split_list}


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
