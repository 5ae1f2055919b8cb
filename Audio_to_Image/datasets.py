"""Training and evaluation samples for the speech encoder (docs/original.md#s7-1), and the collation of
length-bucketed batches.

Each sample is one image of a manifest: one of its teacher-feature views, one of its spoken captions as
a padded log-mel spectrogram, the valid frame count and the class label. The random choices are a
function of (seed, epoch, index), so a run is reproducible whatever the number of loader workers and
a resumed run draws exactly what the uninterrupted one would have. Which caption a sample will draw in an
epoch, and its length, is known before loading (:meth:`SpeechImageDataset.planned_frames`), which is what
the length-bucketing sampler (:class:`s2i.distributed.LengthBucketSampler`) groups by.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.augment import SpecAugmentConfig, augment_logmel
from Audio_to_Image.embedding import padded_frames
from Audio_to_Image.feature_cache import FeatureCache, header_frames, load_features
from Audio_to_Image.speech_encoder import TIME_REDUCTION, encoder_steps
from s2i.data.manifests import Manifest, ManifestError
from s2i.data.safe_pickle import load_feature_list


def load_teacher_features(manifest: Manifest, path=None) -> list[np.ndarray]:
    """The teacher pickle of a manifest (``image_feature_path``), checked against its length."""
    path = path or manifest.image_feature_path
    if path is None:
        raise ManifestError(f"{manifest.path}: no 'image_feature_path' and none given")
    return load_feature_list(path, expected_len=len(manifest))


class SpeechImageDataset(Dataset):
    """Samples of ``(image_feat (D,), spec (n_mels, L), n_frames, label, index)`` as a dict.

    Args:
        manifest: the split's manifest.
        features: teacher features in manifest order, each ``(V, D)``.
        frontend: log-mel settings; ``L = frontend.target_length``.
        cache: a :class:`FeatureCache`, or None to decode every clip every time (the original).
        seed: base of the per-sample random choices.
        min_frames: clips shorter than this are redrawn (the original's guard, bounded here).
        augment: spectrogram augmentation (training only; None or inactive = the original's samples).
    """

    def __init__(
        self,
        manifest: Manifest,
        features: list[np.ndarray],
        frontend: FrontEndConfig,
        cache: FeatureCache | None,
        seed: int = 1234,
        min_frames: int = TIME_REDUCTION,
        augment: SpecAugmentConfig | None = None,
    ) -> None:
        if len(features) != len(manifest):
            raise ManifestError(
                f"{manifest.path} has {len(manifest)} images but its teacher features have {len(features)} rows"
            )
        self.manifest = manifest
        self.features = features
        self.frontend = frontend
        self.cache = cache
        self.seed = seed
        self.min_frames = min_frames
        self.augment = augment
        self.epoch = 0
        self._caption_frames: list[np.ndarray] | None = None

    @property
    def feature_dim(self) -> int:
        return int(self.features[0].shape[1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.manifest)

    def _draws(self, index: int, epoch: int) -> tuple[np.random.Generator, int, np.ndarray]:
        """The generator of sample ``index`` in ``epoch``, after drawing its view and its caption order."""
        rng = np.random.default_rng([self.seed, epoch, index])
        view = int(rng.integers(self.features[index].shape[0]))
        order = rng.permutation(len(self.manifest.items[index].audio))
        return rng, view, order

    def caption_frames(self) -> list[np.ndarray]:
        """Valid frames of every caption of every image, ``[(C_i,) int64]``, read from the audio headers
        (:func:`Audio_to_Image.feature_cache.header_frames`) on the first call and kept."""
        if self._caption_frames is None:
            self._caption_frames = [
                np.array([header_frames(self.manifest.audio_path(i, k), self.frontend)
                          for k in range(len(item.audio))], dtype=np.int64)
                for i, item in enumerate(self.manifest.items)
            ]
        return self._caption_frames

    def planned_frames(self, epoch: int) -> np.ndarray:
        """``(N,)`` valid frames of the caption each sample will draw in ``epoch``, without loading any.

        The same draws as :meth:`__getitem__` (seeded by (seed, epoch, index)) applied to the header frame
        counts of :meth:`caption_frames`. Augmentation, when on, may change a sample's length afterwards
        (time stretch); the plan is the length before it.
        """
        frames = self.caption_frames()
        out = np.empty(len(self), dtype=np.int64)
        for i in range(len(self)):
            _, _, order = self._draws(i, epoch)
            k = _pick_caption(order, frames[i], self.min_frames)
            out[i] = frames[i][k]
        return out

    def __getitem__(self, index: int) -> dict:
        rng, view, order = self._draws(index, self.epoch)
        feats = self.features[index]
        # Draw captions until one is long enough for one encoder step; if none is, keep the longest
        # (the model clamps it to one step) instead of looping forever as the original could.
        best = None
        for k in order:
            spec, n_frames = load_features(self.manifest.audio_path(index, int(k)), self.frontend, self.cache)
            if best is None or n_frames > best[1]:
                best = (spec, n_frames)
            if n_frames >= self.min_frames:
                break
        spec, n_frames = best
        if self.augment is not None and self.augment.active:
            spec, n_frames = augment_logmel(spec, n_frames, self.augment, rng, self.frontend.pad_value)
        return {
            "image_feat": torch.from_numpy(np.ascontiguousarray(feats[view], dtype=np.float32)),
            "spec": torch.from_numpy(spec),
            "n_frames": int(n_frames),
            "label": int(self.manifest.items[index].label),
            "index": index,
        }


def _pick_caption(order: np.ndarray, frames: np.ndarray, min_frames: int) -> int:
    """The caption :meth:`SpeechImageDataset.__getitem__` keeps, given each caption's frames: the first of
    ``order`` with at least ``min_frames``, else the first longest."""
    best, best_frames = int(order[0]), -1
    for k in order:
        n = int(frames[k])
        if n > best_frames:
            best, best_frames = int(k), n
        if n >= min_frames:
            return int(k)
    return best


class CutToLongest:
    """``collate_fn`` of length-bucketed batches: the batch cut to the frames its longest clip can influence.

    A clip with ``n`` valid encoder steps reads input frames ``[0, need_table[n])`` only (the conv stack's
    receptive field, :func:`Audio_to_Image.embedding.frames_needed_table`); the batch keeps that many frames
    of its longest clip, rounded up to whole encoder steps (:func:`Audio_to_Image.embedding.padded_frames`),
    exactly as stage D cuts its batches. The batch also carries ``full_frames`` (the nominal
    ``target_length``), from which the trainer takes the step count the sentence embedding is averaged
    over (``CNNRNN.forward(..., full_steps=...)``), so a cut batch gives, in eval mode, the embeddings of
    the full-length one up to float rounding.

    Args:
        need_table: ``need_table[n]`` = input frames that the first ``n`` encoder steps read, ``n = 1..S``
            where ``S`` is the step count of a ``target_length`` input (``need_table[0]`` is unused).
        target_length: the nominal input length (``frontend.target_length``).
    Returns (when called on a list of :class:`SpeechImageDataset` samples):
        ``image_feat (B, D)``, ``spec (B, n_mels, T')`` with ``T' <= target_length``, ``n_frames (B,)``,
        ``label (B,)``, ``index (B,)`` and ``full_frames`` (an int).
    """

    def __init__(self, need_table: list[int], target_length: int) -> None:
        self.need_table = list(need_table)
        self.target_length = int(target_length)

    def __call__(self, samples: list[dict]) -> dict:
        n_frames = torch.tensor([s["n_frames"] for s in samples], dtype=torch.int64)
        longest = int(encoder_steps(n_frames, len(self.need_table) - 1).max())
        t = padded_frames(self.need_table[longest], self.target_length)
        return {
            "image_feat": torch.stack([s["image_feat"] for s in samples]),
            "spec": torch.stack([s["spec"][:, :t] for s in samples]),
            "n_frames": n_frames,
            "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
            "index": torch.tensor([s["index"] for s in samples], dtype=torch.int64),
            "full_frames": self.target_length,
        }
