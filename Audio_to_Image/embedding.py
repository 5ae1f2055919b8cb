"""Speech embeddings of spoken captions: the encoder's exact length cut, loading, and one split's files.

The library of stage D (``Audio_to_Image/extract_audio_feature.py``, which documents the files written)
and of inference (``s2i/inference.py``): no command-line parsing and no global state.

**Length batching.** On a CPU the conv stack over 2048 padded frames dominates. Clips are sorted by length
within windows of ``8 * batch_size``, and each batch is cut to the frames its longest clip actually
*reads*: the last valid encoder step ``n - 1`` of a clip with ``n`` valid steps depends on the input frames
``[0, frames_needed(n))`` only (``64 n + 131`` for the paper's encoder; the conv/pool receptive field,
:func:`frames_needed`). Every layer acts per time position (BatchNorm in eval mode, ReLU) or through a
conv/pool window, and the LSTM is packed, so positions past a clip's valid steps never reach its output;
the frames a cut batch keeps are the same values (0 dB padding included) that the full ``target_length``
input has there. The result equals running each clip alone at full length up to float rounding, and the
sentence embedding is the sum of the valid steps divided by the full-length step count (32), as the
original's mean over 32 steps (tests: ``tests/test_extract_audio_feature.py``). Cutting a batch at its
longest clip's ``n_frames`` without that margin is *not* exact, because the 0 dB padding is the loudest
value and leaks into the last steps through the receptive field. ``length_batching=False`` runs every
batch at full length in manifest order.

An utterance shorter than one encoder step (64 frames) is embedded from its own first step
(``encoder_steps`` clamps its length to 1), where the original took a neighbouring caption's embedding.

**Precision.** ``precision`` (resolved by ``s2i.precision.resolve_precision``; fp32 by default) runs the
encoder under autocast; the embeddings are summed and written in float32 whatever it is. With fp32 nothing
changes; bf16 moves an embedding by 1-2 % of its norm (measured in ``tests/test_extract_audio_feature.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from Audio_to_Image.audio import AudioError, FrontEndConfig
from Audio_to_Image.feature_cache import FeatureCache, load_features
from Audio_to_Image.speech_encoder import CNNRNN, TIME_REDUCTION, encoder_steps, load_speech_encoder
from s2i.checkpoints import CheckpointError
from s2i.config import ConfigError, load_yaml, to_dict
from s2i.data.manifests import Manifest, ManifestError, load_manifest
from s2i.data.safe_pickle import save_pickle
from s2i.files import write_json_atomic
from s2i.precision import autocast, fp32_region, upcast

SORT_WINDOW_BATCHES = 8
"""Clips are sorted by length within windows of this many batches (the whole split would not fit in memory)."""
MAX_LISTED = 10
"""How many short utterances a warning names."""


def log(msg: str) -> None:
    """One line on stdout, flushed (progress bars share the terminal)."""
    print(msg, flush=True)


def warn(msg: str) -> None:
    """``warning: msg`` on stderr, flushed."""
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# The exact length cut and the embedding of clips


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
    the paper's encoder (docs/original.md#s5). Negative positions are the layers' own padding in every case.

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
def embed_batch(model: CNNRNN, specs: torch.Tensor, n_frames: torch.Tensor, full_steps: int,
                precision: str = "fp32") -> torch.Tensor:
    """Sentence embeddings of a batch that may be cut short of ``target_length`` (see module docstring).

    Args:
        model: the encoder in eval mode.
        specs: ``(B, n_mels, T)`` log-mels, T <= target_length, holding at least the frames each clip
            reads (:func:`frames_needed` of its valid steps).
        n_frames: ``(B,)`` valid frame counts (before the //64 reduction).
        full_steps: encoder steps of a full-length input (``model.steps_for(target_length)``, 32).
        precision: a resolved precision; the encoder runs under its autocast.
    Returns:
        ``(B, nhidden)`` float32: the sum of each clip's valid LSTM outputs over ``full_steps``, which is the
        original's mean over all 32 steps with zeros past the length (docs/original.md#s5).
    """
    if model.training:
        raise ValueError("embed_batch needs the model in eval mode (BatchNorm must use its running statistics)")
    steps = encoder_steps(n_frames.to("cpu", torch.int64), full_steps)
    with autocast(precision, specs.device):
        words, _ = model(specs, steps)  # (B, nhidden, T/64), zeros past each clip's steps
    with fp32_region():
        return upcast(words).sum(dim=2) / full_steps


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
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Sentence embedding and valid frame count of every clip of ``paths``, in that order.

    Args:
        model: the encoder in eval mode, on ``device``.
        paths: audio files.
        frontend: log-mel settings (``target_length`` = the full input length).
        precision: a resolved precision for the encoder's passes (:func:`embed_batch`).
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
                emb = embed_batch(model, x.to(device, non_blocking=pin), n, full_steps, precision)
                idx = np.array([c.index for c in batch])
                feats[idx] = emb.float().cpu().numpy()
                lens[idx] = n.numpy()
                bar.update(len(batch))
    finally:
        bar.close()
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return feats, lens


# --------------------------------------------------------------------------------------------------
# Loading an encoder and its front-end


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


def explicit_keys(ns: argparse.Namespace) -> set[str]:
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


def check_frontend_fits(model: CNNRNN, frontend: FrontEndConfig) -> None:
    """Raises ConfigError when the front-end's output cannot feed ``model`` (mel bands, length)."""
    if frontend.n_mels != model.n_filters:
        raise ConfigError(f"the checkpoint expects {model.n_filters} mel bands but the front-end gives "
                          f"{frontend.n_mels} (frontend.n_mels)")
    if model.steps_for(frontend.target_length) < 1:
        raise ConfigError(f"frontend.target_length {frontend.target_length} is too short for one encoder step")


def encoder_frontend(ckpt: dict[str, Any], path: str | Path, requested: FrontEndConfig, explicit: set[str]
                     ) -> tuple[FrontEndConfig, str]:
    """The checkpoint's front-end (or the docs/original.md#s4 defaults), with the explicitly given ``--frontend.*`` on top.

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
        base, source = FrontEndConfig(), "the docs/original.md#s4 defaults (the checkpoint stores none)"
    names = [f.name for f in dataclasses.fields(FrontEndConfig) if f"frontend.{f.name}" in explicit]
    changed = {n: getattr(requested, n) for n in names if getattr(requested, n) != getattr(base, n)}
    if changed:
        if source == "the checkpoint":
            warn("--frontend overrides the settings the encoder was trained with: "
                 + ", ".join(f"{k}={v!r} (trained: {getattr(base, k)!r})" for k, v in changed.items()))
        try:
            base = dataclasses.replace(base, **changed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        source += " with --frontend overrides"
    return base, source


# --------------------------------------------------------------------------------------------------
# One split of stage D: the two pickles and their sidecar


class SplitSettings(Protocol):
    """What :func:`extract_split` reads of the stage's settings; the whole config (a dataclass) goes into
    the sidecar through :func:`s2i.config.to_dict`."""

    dataset: str
    audio_switch: str
    batch_size: int
    num_workers: int
    length_batching: bool
    feature_cache: str
    force: bool
    progress: bool

    @property
    def root(self) -> Path: ...


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


def extract_split(cfg: SplitSettings, split: str, model: CNNRNN, ckpt_info: dict[str, Any],
                  frontend: FrontEndConfig, cache: FeatureCache | None, device: torch.device,
                  precision: str = "fp32") -> dict[str, Any]:
    """Embeds every caption of one split and writes the two pickles and the sidecar; returns a summary.

    Args:
        cfg: the stage's settings (``ExtractConfig`` of ``Audio_to_Image/extract_audio_feature.py``).
        split: reads ``<cfg.root>/<split>.json``, writes into ``<cfg.root>/<split>/``.
        model: the encoder in eval mode, on ``device``.
        ckpt_info: the checkpoint's path, epoch, sha1 and format, recorded in the sidecar.
        frontend: log-mel settings; ``cache``: the log-mel cache, or None.
        precision: the resolved precision of the encoder's passes, recorded in the sidecar's inputs (a
            rerun in another precision recomputes); the pickles are float32 whatever it is.
    Returns:
        The output paths, ``shape`` ``[N, C, D]``, ``skipped`` (the sidecar matched), the short utterances'
        count and the seconds taken.
    """
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
        "precision": precision,
    }
    summary = {"features": str(feat_path), "lens": str(lens_path), "sidecar": str(sidecar_path),
               "shape": [n_images, n_caps, dim]}
    old = _read_sidecar(sidecar_path)
    if old is not None and isinstance(old.get("inputs"), dict):
        # Sidecars written before --precision existed describe float32 runs.
        old["inputs"] = {"precision": "fp32", **old["inputs"]}
    outputs_exist = feat_path.is_file() and lens_path.is_file()
    if old is not None and old.get("inputs") == inputs and outputs_exist and not cfg.force:
        log(f"{split}: {feat_path} is up to date ({sidecar_path.name} matches); skipped (--force recomputes)")
        return {**summary, "skipped": True, "short_utterances": old.get("short_utterances", {}).get("count", 0)}
    if old is None and (feat_path.exists() or lens_path.exists()) and not cfg.force:
        raise ConfigError(f"{feat_path if feat_path.exists() else lens_path} exists but was not written by this "
                          f"script (no {sidecar_path.name}); pass --force to replace it or pick another --audio_switch")
    if old is not None and not cfg.force:
        changed = sorted(k for k in inputs if (old.get("inputs") or {}).get(k) != inputs[k])
        reason = f"{', '.join(changed)} changed" if changed else "an output file is missing"
        log(f"{split}: recomputing {feat_path.name} ({reason} since {sidecar_path.name})")

    t0 = time.time()
    log(f"{split}: {n_images} images x {n_caps} captions from {manifest.path}")
    feats, lens = embed_clips(model, paths, frontend, cache, device, batch_size=cfg.batch_size,
                              num_workers=min(cfg.num_workers, os.cpu_count() or 1),
                              length_batching=cfg.length_batching, progress=cfg.progress, desc=f"{split} embeddings",
                              precision=precision)
    short = [str(paths[i]) for i in np.flatnonzero(lens < TIME_REDUCTION)]
    if short:
        listed = ", ".join(short[:MAX_LISTED]) + (f" (and {len(short) - MAX_LISTED} more)" if len(short) > MAX_LISTED
                                                  else "")
        warn(f"{split}: {len(short)} utterance(s) shorter than one encoder step ({TIME_REDUCTION} frames) were "
             f"embedded from their first step alone (the original copied a neighbouring caption's embedding): {listed}")

    out_dir.mkdir(parents=True, exist_ok=True)
    # The old sidecar goes first: a run killed after the pickles but before the new sidecar must not
    # leave a sidecar that vouches for pickles it did not describe.
    sidecar_path.unlink(missing_ok=True)
    save_pickle(feats.reshape(n_images, n_caps, dim), feat_path)
    save_pickle(lens.reshape(n_images, n_caps), lens_path)
    seconds = time.time() - t0
    write_json_atomic(sidecar_path, {
        "inputs": inputs,
        "short_utterances": {"count": len(short), "min_frames": TIME_REDUCTION, "files": short[:MAX_LISTED],
                             "handling": "length clamped to one encoder step (encoder_steps)"},
        "outputs": {"features": feat_path.name, "lens": lens_path.name,
                    "features_shape": [n_images, n_caps, dim], "features_dtype": "float32",
                    "lens_shape": [n_images, n_caps], "lens_dtype": "int64",
                    "lens_meaning": "valid log-mel frames before the //64 reduction"},
        "run": {"device": str(device), "precision": precision, "batch_size": cfg.batch_size, "length_batching": cfg.length_batching,
                "feature_cache": cfg.feature_cache, "seconds": round(seconds, 3), "config": to_dict(cfg)},
    }, indent=1)
    log(f"{split}: wrote {feat_path} {tuple(feats.reshape(n_images, n_caps, dim).shape)} and {lens_path.name} "
        f"in {seconds:.1f}s ({len(paths) / max(seconds, 1e-9):.1f} clips/s)")
    return {**summary, "skipped": False, "short_utterances": len(short), "seconds": seconds}
