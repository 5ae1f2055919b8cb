"""Training-time augmentation of log-mel spectrograms (ours; the original has none, and all are off by default).

Speaker and speaking-rate changes, done on the spectrogram so the cached log-mels stay valid:

* time stretch: the valid frames are resampled along time by a factor in ``[1 − s, 1 + s]`` (a faster or
  slower talker);
* frequency warp: the mel axis is scaled by a factor in ``[1 − w, 1 + w]`` about its lowest band, as in
  vocal tract length perturbation (Jaitly & Hinton 2013), so formants move as they do between speakers;
* SpecAugment-style masks (Park et al. 2019): bands of mel channels and runs of frames set to the
  spectrogram's mean.

Every random choice comes from the generator the caller passes, so a sample is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s2i.config import option, require


@dataclass
class SpecAugmentConfig:
    time_stretch: float = option(0.0, "largest relative change of speaking rate (0.15 = ×0.85..×1.15; 0 = off)")
    freq_warp: float = option(0.0, "largest relative scaling of the mel axis (0.1 = ×0.9..×1.1; 0 = off)")
    freq_masks: int = option(0, "mel bands masked per sample")
    freq_mask_width: int = option(4, "widest mel band masked")
    time_masks: int = option(0, "runs of frames masked per sample")
    time_mask_width: int = option(10, "longest run of frames masked")

    def __post_init__(self) -> None:
        require([
            (0.0 <= self.time_stretch < 1.0, "augment.time_stretch must lie in [0, 1)"),
            (0.0 <= self.freq_warp < 1.0, "augment.freq_warp must lie in [0, 1)"),
            (min(self.freq_masks, self.time_masks, self.freq_mask_width, self.time_mask_width) >= 0,
             "augment mask counts and widths must be >= 0"),
        ])

    @property
    def active(self) -> bool:
        return bool(self.time_stretch or self.freq_warp or (self.freq_masks and self.freq_mask_width)
                    or (self.time_masks and self.time_mask_width))


def _interp_rows(x: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``x`` at fractional ``positions`` along ``axis`` (clamped to the edges)."""
    n = x.shape[axis]
    pos = np.clip(positions, 0.0, n - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).astype(x.dtype)
    a, b = np.take(x, lo, axis=axis), np.take(x, hi, axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    return a + (b - a) * frac.reshape(shape)


def augment_logmel(spec: np.ndarray, n_frames: int, cfg: SpecAugmentConfig, rng: np.random.Generator,
                   pad_value: float = 0.0) -> tuple[np.ndarray, int]:
    """One augmented copy of a padded log-mel.

    Args:
        spec: ``(n_mels, L)`` log-mel, valid in its first ``n_frames`` frames, ``pad_value`` after.
        n_frames: valid frames.
        cfg: which augmentations, how strong.
        rng: the source of every random choice.
    Returns:
        ``(n_mels, L)`` float32 and its new valid length (at most ``L``).
    """
    if not cfg.active or n_frames < 2:
        return spec, n_frames
    n_mels, length = spec.shape
    x = spec[:, :n_frames].astype(np.float32, copy=True)
    if cfg.time_stretch:
        factor = rng.uniform(1.0 - cfg.time_stretch, 1.0 + cfg.time_stretch)
        new_n = int(min(length, max(2, round(n_frames * factor))))
        x = _interp_rows(x, np.linspace(0.0, n_frames - 1, new_n), axis=1)
    if cfg.freq_warp:
        alpha = rng.uniform(1.0 - cfg.freq_warp, 1.0 + cfg.freq_warp)
        x = _interp_rows(x, np.arange(n_mels) / alpha, axis=0)
    fill = float(x.mean())
    for _ in range(cfg.freq_masks):
        w = int(rng.integers(0, cfg.freq_mask_width + 1))
        if w:
            f0 = int(rng.integers(0, max(1, n_mels - w + 1)))
            x[f0:f0 + w] = fill
    for _ in range(cfg.time_masks):
        w = int(min(rng.integers(0, cfg.time_mask_width + 1), x.shape[1] // 4))
        if w:
            t0 = int(rng.integers(0, x.shape[1] - w + 1))
            x[:, t0:t0 + w] = fill
    out = np.full((n_mels, length), pad_value, dtype=np.float32)
    out[:, : x.shape[1]] = x
    return out, int(x.shape[1])
