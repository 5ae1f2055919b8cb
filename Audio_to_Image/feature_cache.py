"""On-disk cache of log-mel features, keyed by audio file and front-end config (docs/original.md#s4).

Layout under a cache root (callers pass e.g. ``data/<dataset>/feature_cache``)::

    <root>/<cfg.cache_key()>/frontend.json          the config, for humans
    <root>/<cfg.cache_key()>/<ab>/<abcdef...>.npy   one entry per audio file version

An entry name is the sha1 of the file's resolved absolute path, size and mtime_ns, so an edited file
gets a new entry and a config change gets a new folder; stale entries are simply never read again.
An entry holds the **cropped, unpadded** log-mel ``(n_mels, min(T, target_length))`` float32; padding
(and max-abs normalisation) is applied on load, so :meth:`FeatureCache.load` is bit-identical to
:func:`Audio_to_Image.audio.compute_logmel`.

Writes go to a temporary file in the entry's folder and are renamed into place, so DataLoader workers
and DDP ranks may fill the same cache concurrently; a reader never sees a half-written entry. A
corrupt entry (unreadable, wrong dtype or shape) is recomputed on read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from tqdm import tqdm

from Audio_to_Image.audio import (
    FRONTEND_VERSION,
    AudioError,
    FrontEndConfig,
    PathType,
    compute_logmel,
    load_audio,
    logmel_reference,
    pad_or_crop,
)
from s2i.files import atomic_write, write_text_atomic

logger = logging.getLogger(__name__)


def compute_entry(path: PathType, cfg: FrontEndConfig) -> np.ndarray:
    """What a cache entry holds: the log-mel of ``path`` cropped to ``target_length``, unpadded.

    Returns:
        ``(n_mels, min(T, target_length))`` float32, C-contiguous.
    """
    logmel = logmel_reference(load_audio(path, cfg.sample_rate), cfg)
    return np.ascontiguousarray(logmel[:, : cfg.target_length], dtype=np.float32)


class FeatureCache:
    """Log-mel features computed once per audio file and stored as ``.npy`` under ``root``.

    Args:
        root: cache root; the entries for ``cfg`` live in ``root / cfg.cache_key()``.
        cfg: the front-end configuration the features are computed with.

    Picklable (it holds only the root and the config), so it can be handed to DataLoader workers.
    """

    def __init__(self, root: Path | str, cfg: FrontEndConfig) -> None:
        if not isinstance(cfg, FrontEndConfig):
            raise TypeError(f"cfg must be a FrontEndConfig, got {type(cfg).__name__}")
        self.root = Path(root)
        self.cfg = cfg
        self.dir = self.root / cfg.cache_key()
        self._write_config()

    def __repr__(self) -> str:
        return f"FeatureCache(root={str(self.root)!r}, key={self.cfg.cache_key()!r})"

    def _write_config(self) -> None:
        meta = self.dir / "frontend.json"
        if meta.exists():
            return
        payload = {
            "cache_key": self.cfg.cache_key(),
            "frontend_version": FRONTEND_VERSION,
            "config": self.cfg.to_dict(),
        }
        text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
        write_text_atomic(meta, text, durable=False)

    def entry_path(self, path: PathType) -> Path:
        """Where the entry for the current version of ``path`` lives (it may not exist yet).

        Raises:
            AudioError: ``path`` does not exist.
        """
        resolved = Path(path).resolve()
        try:
            st = resolved.stat()
        except FileNotFoundError as exc:
            raise AudioError(path, "file does not exist") from exc
        ident = f"{resolved}\0{st.st_size}\0{st.st_mtime_ns}"
        digest = hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()
        return self.dir / digest[:2] / f"{digest}.npy"

    def _read(self, entry: Path) -> np.ndarray | None:
        """The stored array, or None when the entry is missing or unusable (corrupt, wrong shape)."""
        try:
            arr = np.load(entry, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("feature cache entry %s is unreadable (%s); recomputing", entry, exc)
            return None
        cfg = self.cfg
        if (
            not isinstance(arr, np.ndarray)
            or arr.dtype != np.float32
            or arr.ndim != 2
            or arr.shape[0] != cfg.n_mels
            or not 1 <= arr.shape[1] <= cfg.target_length
        ):
            logger.warning(
                "feature cache entry %s has dtype %s shape %s, expected float32 (%d, 1..%d); recomputing",
                entry,
                getattr(arr, "dtype", None),
                getattr(arr, "shape", None),
                cfg.n_mels,
                cfg.target_length,
            )
            return None
        return arr

    def _write(self, entry: Path, arr: np.ndarray) -> None:
        with atomic_write(entry, durable=False) as f:
            np.save(f, arr, allow_pickle=False)

    def _fill(self, path: PathType, entry: Path) -> np.ndarray:
        arr = compute_entry(path, self.cfg)
        self._write(entry, arr)
        return arr

    def contains(self, path: PathType) -> bool:
        """Whether an entry file exists for the current version of ``path`` (not checked for damage)."""
        return self.entry_path(path).exists()

    def get(self, path: PathType) -> np.ndarray:
        """Cropped, unpadded log-mel of ``path``: ``(n_mels, n_frames)`` float32, n_frames <= target_length.

        Computed with the reference path (:func:`Audio_to_Image.audio.logmel_reference`) and stored
        on a miss or when the stored entry is damaged.
        """
        entry = self.entry_path(path)
        arr = self._read(entry)
        if arr is None:
            arr = self._fill(path, entry)
        return arr

    def load(self, path: PathType) -> tuple[np.ndarray, int]:
        """``(padded (n_mels, target_length) float32, n_frames)``, bit-identical to ``compute_logmel``."""
        return pad_or_crop(self.get(path), self.cfg)

    def prefill(self, paths: Iterable[PathType], num_workers: int = 0, progress: bool = True) -> int:
        """Compute every entry of ``paths`` that does not exist yet; returns how many were computed.

        Existing entries are not opened (a damaged one is repaired when it is next read).
        ``num_workers > 0`` computes in a process pool of that size.
        """
        todo: dict[Path, str] = {}
        for p in paths:
            entry = self.entry_path(p)
            if entry not in todo and not entry.exists():
                todo[entry] = str(p)
        jobs = [(str(self.root), self.cfg.to_dict(), p) for p in todo.values()]
        bar = tqdm(total=len(jobs), desc="log-mel features", unit="file", disable=not progress)
        try:
            if num_workers > 0 and len(jobs) > 1:
                with multiprocessing.Pool(processes=min(num_workers, len(jobs))) as pool:
                    for _ in pool.imap_unordered(_prefill_one, jobs, chunksize=4):
                        bar.update(1)
            else:
                for job in jobs:
                    _prefill_one(job)
                    bar.update(1)
        finally:
            bar.close()
        return len(jobs)


def _prefill_one(job: tuple[str, dict[str, Any], str]) -> None:
    root, cfg_dict, path = job
    cache = FeatureCache(root, FrontEndConfig.from_dict(cfg_dict))
    cache._fill(path, cache.entry_path(path))


def load_features(path: PathType, cfg: FrontEndConfig, cache: FeatureCache | None) -> tuple[np.ndarray, int]:
    """``(padded (n_mels, target_length) float32, n_frames)`` for one file, through ``cache`` if given.

    With ``cache=None`` the features are computed from the audio on every call (the original's
    behaviour, ``--feature_cache off``).
    """
    if cache is None:
        return compute_logmel(path, cfg)
    if cache.cfg != cfg:
        raise ValueError(
            f"feature cache {cache!r} was built for front-end config {cache.cfg.cache_key()}, "
            f"but config {cfg.cache_key()} was requested"
        )
    return cache.load(path)


def header_frames(path: PathType, cfg: FrontEndConfig) -> int:
    """The ``n_frames`` that :func:`load_features` gives for ``path``, from the audio file's header alone.

    No decoding: the header's sample count, resampled to ``cfg.sample_rate`` the way
    :func:`Audio_to_Image.audio.load_audio` does (librosa fixes the length to ``ceil(n * sr / native_sr)``),
    through ``cfg.num_frames`` and capped at ``target_length``. Used to plan length-bucketed batches
    before any sample is loaded; the batches themselves are cut from the loaded ``n_frames``, so a count
    that were off would only make a bucket less tight.

    Raises:
        AudioError: the file is missing, its header unreadable, or it holds no samples.
    """
    try:
        info = soundfile.info(str(path))
    except Exception as exc:  # libsndfile reports every failure through several types
        raise AudioError(path, f"cannot read its audio header ({type(exc).__name__}: {exc})") from exc
    n = int(info.frames)
    if n <= 0:
        raise AudioError(path, "contains no samples")
    if info.samplerate != cfg.sample_rate:
        n = int(np.ceil(n * (float(cfg.sample_rate) / info.samplerate)))
    return min(cfg.num_frames(n), cfg.target_length)
