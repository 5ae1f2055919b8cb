"""Training and evaluation samples for the speech encoder (docs/original.md#s7-1).

Each sample is one image of a manifest: one of its teacher-feature views, one of its spoken captions as
a padded log-mel spectrogram, the valid frame count and the class label. The random choices are a
function of (seed, epoch, index), so a run is reproducible whatever the number of loader workers and
a resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.augment import SpecAugmentConfig, augment_logmel
from Audio_to_Image.feature_cache import FeatureCache, load_features
from Audio_to_Image.speech_encoder import TIME_REDUCTION
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

    @property
    def feature_dim(self) -> int:
        return int(self.features[0].shape[1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        feats = self.features[index]
        view = int(rng.integers(feats.shape[0]))
        n_caps = len(self.manifest.items[index].audio)
        order = rng.permutation(n_caps)
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
