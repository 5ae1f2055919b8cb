"""The judge of generated "shapes" images: a small classifier that reads a picture's colour and shape.

FID and Inception scores say whether images look real, not whether they show what was said. On the
synthetic shapes dataset (``s2i.data.shapes``) every caption names its image's colour and shape, so a small
classifier trained on the real training images can read both back from a generated image
(:mod:`s2i.metrics.attributes` turns its readings into the ``attributes`` metric):

1. :class:`AttributeClassifier`: a four-block CNN on 64×64 RGB with a colour head (8 classes) and a shape
   head (3 classes); any input size is resized to 64×64 first (generated images are 64 or 128 px,
   real ones 256 px).
2. :func:`train_attribute_classifier`: seconds on a CPU, deterministic for a seed. Light augmentation
   (shifts, horizontal flips, Gaussian blur, pixel noise, a colour jitter well inside the gaps between
   the eight colours) keeps it right on images blurrier than the real ones, as a generator's are.
3. :func:`predict` → :func:`score_images`: colour, shape and both-right accuracy against expected names.

The classifier's accuracy on the real test images is the ceiling a generator can reach; it is stored in
the checkpoint (one dict, rebuilt by :func:`load_classifier`). ``prepare_attribute_classifier.py``
trains it and keeps it at ``<data_root>/attribute_classifier.pth``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from s2i.checkpoints import CheckpointError, atomic_save, load_checkpoint, load_weights
from s2i.data.images import load_image
from s2i.data.manifests import Manifest, ManifestError, load_manifest
from s2i.data.shapes import COLOURS, SHAPES

__all__ = [
    "CHECKPOINT_FORMAT",
    "AttributeClassifier",
    "TrainSettings",
    "augment",
    "classifier_checkpoint",
    "load_classifier",
    "load_images",
    "load_labelled_split",
    "manifest_attributes",
    "predict",
    "save_classifier",
    "score_images",
    "train_attribute_classifier",
]

CHECKPOINT_FORMAT = "s2i.attribute_classifier/1"
INPUT_SIZE = 64
ImageInput = torch.Tensor | Sequence[str | Path]


class AttributeClassifier(nn.Module):
    """Colour and shape of a picture of one shape.

    The input gets a fourth channel: each pixel's distance from the image's median colour. The background
    covers most of every shapes image (a large shape at most a third), so the median is the background and
    this channel is the shape's silhouette whatever its colour; with it the shape head generalises from
    far fewer images (trained on 216: 94–100 % shape accuracy on unseen images over three seeds, against
    82–94 % without). Then four stride-2 conv3×3-BatchNorm-ReLU blocks (64 → 4 px; strided rather than
    max-pooled convolutions, five times faster to train on a CPU and as accurate on the full dataset), global
    average and max pooling (a small shape covers a few per cent of the image, so its colour survives max
    pooling better than averaging over the background) and one linear head per attribute.

    Args:
        colours: colour names in label order (default: the shapes dataset's eight).
        shapes: shape names in label order (default: circle, square, triangle).
        width: channels of the first block; the others have 2×, 4×, 4×.
        input_size: side the input is resized to.
    """

    def __init__(self, colours: Sequence[str] = tuple(COLOURS), shapes: Sequence[str] = SHAPES,
                 width: int = 16, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        if len(colours) < 2 or len(shapes) < 2:
            raise ValueError(f"need at least two colours and two shapes, got {list(colours)} and {list(shapes)}")
        self.args = {"colours": list(colours), "shapes": list(shapes), "width": int(width),
                     "input_size": int(input_size)}
        self.colours = list(colours)
        self.shapes = list(shapes)
        self.input_size = int(input_size)
        chans = [4, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.colour_head = nn.Linear(2 * chans[-1], len(colours))
        self.shape_head = nn.Linear(2 * chans[-1], len(shapes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: ``(B, 3, H, W)`` RGB in [0, 1], any H and W.

        Returns:
            colour logits ``(B, len(colours))`` and shape logits ``(B, len(shapes))``.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch of RGB images, got shape {tuple(x.shape)}")
        x = resize(x, self.input_size)
        background = x.flatten(2).median(dim=2).values[:, :, None, None]
        silhouette = (x - background).square().sum(dim=1, keepdim=True).sqrt()
        h = self.features(torch.cat([(x - 0.5) / 0.25, silhouette / 0.25], dim=1))
        h = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.colour_head(h), self.shape_head(h)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, C, size, size)``, antialiased bilinear (as Pillow's reduction); a no-op at size."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


# --------------------------------------------------------------------------- images and labels


def load_images(paths: Sequence[str | Path], size: int = INPUT_SIZE) -> torch.Tensor:
    """Image files → ``(N, 3, size, size)`` uint8, read by ``s2i.data.images.load_image`` (its errors name the file)
    and resized by Pillow's antialiased bilinear filter (close to what :func:`resize` does to tensors)."""
    out = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    for i, p in enumerate(paths):
        arr = (load_image(p) * 255).round().clip(0, 255).astype("uint8")
        small = Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1)
    return out


def _as_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] or float in [0, 1] → float32 in [0, 1]."""
    if batch.dtype == torch.uint8:
        return batch.float() / 255.0
    if not batch.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {batch.dtype}")
    return batch.float()


def _batches(images: ImageInput, batch_size: int, size: int) -> Iterator[torch.Tensor]:
    """Yields float ``(b, 3, size, size)`` batches of a tensor or of image files, loading files batch by batch."""
    n = len(images)
    for lo in range(0, n, batch_size):
        chunk = images[lo: lo + batch_size]
        if isinstance(images, torch.Tensor):
            yield resize(_as_float(chunk), size)
        else:
            yield _as_float(load_images(list(chunk), size))


def manifest_attributes(manifest_path: str | Path) -> tuple[Manifest, list[dict[str, Any]]]:
    """The checked manifest and each item's ``attributes`` (``colour``, ``shape``, …), in manifest order.

    Raises:
        ManifestError: the manifest is invalid, or an item has no colour/shape attributes (not a shapes manifest).
    """
    manifest = load_manifest(manifest_path, "shapes")
    raw = json.loads(Path(manifest_path).read_text(encoding="utf-8"))["data"]
    attrs = []
    for i, entry in enumerate(raw):
        a = entry.get("attributes")
        if not isinstance(a, dict) or not isinstance(a.get("colour"), str) or not isinstance(a.get("shape"), str):
            raise ManifestError(f"{manifest_path} item {i}: no 'attributes' with a colour and a shape; the attribute "
                                "classifier needs a shapes manifest (prepare_shapes_dataset.py)")
        attrs.append(a)
    return manifest, attrs


def load_labelled_split(manifest_path: str | Path, size: int = INPUT_SIZE) -> tuple[torch.Tensor, list[str], list[str]]:
    """A shapes split: images ``(N, 3, size, size)`` uint8, colour names, shape names."""
    manifest, attrs = manifest_attributes(manifest_path)
    images = load_images([manifest.image_path(i) for i in range(len(manifest))], size)
    return images, [a["colour"] for a in attrs], [a["shape"] for a in attrs]


def _label_indices(names: Sequence[str], known: Sequence[str], what: str) -> torch.Tensor:
    index = {n: i for i, n in enumerate(known)}
    bad = sorted({str(n) for n in names if n not in index})
    if bad:
        raise ValueError(f"unknown {what} name(s) {bad}; the classifier knows {list(known)}")
    return torch.tensor([index[n] for n in names], dtype=torch.long)


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainSettings:
    """What a trained classifier depends on besides its images (stored in the checkpoint as ``config``)."""

    epochs: int = 15
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 16
    input_size: int = INPUT_SIZE
    seed: int = 0
    max_shift: int = 4
    max_blur_sigma: float = 1.5
    max_noise: float = 0.04
    brightness: float = 0.08
    channel_shift: float = 0.03

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.width < 1 or self.input_size < 16:
            raise ValueError("epochs must be ≥ 1, batch_size ≥ 2, width ≥ 1 and input_size ≥ 16")
        if not self.lr > 0 or self.max_shift < 0 or self.max_blur_sigma < 0 or self.max_noise < 0:
            raise ValueError("lr must be positive; shift, blur and noise must not be negative")


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` per image of ``x`` ``(B, C, H, W)``; sigma 0 leaves it unchanged.

    A weighted sum of shifted copies rather than a grouped convolution: with one kernel per image the
    grouped convolution is several times slower on a CPU.
    """
    _, _, h, w = x.shape
    radius = max(1, math.ceil(2 * max_sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t[None] ** 2 / (2 * sigma[:, None].to(x).clamp_min(1e-3) ** 2))
    k = k / k.sum(dim=1, keepdim=True)  # (B, 2 * radius + 1)
    y = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    x = sum(k[:, j, None, None, None] * y[..., j: j + w] for j in range(k.shape[1]))
    y = F.pad(x, (0, 0, radius, radius), mode="replicate")
    return sum(k[:, j, None, None, None] * y[..., j: j + h, :] for j in range(k.shape[1]))


def augment(x: torch.Tensor, s: TrainSettings, g: torch.Generator) -> torch.Tensor:
    """Random flips, shifts, colour jitter, blur and noise of a float batch ``(B, 3, H, W)`` in [0, 1].

    Draws come from the CPU generator ``g`` (the same on any device). The jitter (±8 % brightness,
    ±3 % per channel, i.e. ±20 grey levels at most) stays well inside the gaps between the shapes
    colours (the closest, red and orange, differ by 110 in green), so it never changes a colour's name.
    """
    b, _, h, w = x.shape

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g).to(x.device)

    flip = rand(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if s.max_shift:
        m = s.max_shift
        padded = F.pad(x, (m, m, m, m), mode="replicate")
        dy, dx = (torch.randint(0, 2 * m + 1, (b,), generator=g).tolist() for _ in range(2))
        x = torch.stack([padded[i, :, dy[i]: dy[i] + h, dx[i]: dx[i] + w] for i in range(b)])
    gain = 1 + s.brightness * (2 * rand(b, 1, 1, 1) - 1)
    shift = s.channel_shift * (2 * rand(b, 3, 1, 1) - 1)
    x = x * gain + shift
    if s.max_blur_sigma:
        sigma = s.max_blur_sigma * rand(b) * (rand(b) < 0.6)
        x = _gaussian_blur(x, sigma, s.max_blur_sigma)
    if s.max_noise:
        x = x + s.max_noise * rand(b, 1, 1, 1) * torch.randn(x.shape, generator=g).to(x.device)
    return x.clamp(0, 1)


def _train(images: torch.Tensor, colours: Sequence[str], shapes: Sequence[str], s: TrainSettings,
           device: torch.device, log: Callable[[str], None] | None) -> tuple[AttributeClassifier, float, float]:
    """The loop of :func:`train_attribute_classifier`: (model, last epoch's mean loss, seconds)."""
    with torch.random.fork_rng(devices=[]):  # seeds the initial weights without touching the caller's RNG
        torch.manual_seed(s.seed)
        model = AttributeClassifier(tuple(COLOURS), SHAPES, s.width, s.input_size)
    model = model.to(device)
    x_all = (resize(_as_float(images), s.input_size) * 255).round().to(torch.uint8)
    yc = _label_indices(colours, model.colours, "colour")
    ys = _label_indices(shapes, model.shapes, "shape")
    g = torch.Generator().manual_seed(s.seed)
    steps_per_epoch = math.ceil(len(x_all) / s.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.epochs * steps_per_epoch,
                                                pct_start=0.25)
    t0 = time.time()
    loss_value = float("nan")
    model.train()
    for epoch in range(s.epochs):
        order = torch.randperm(len(x_all), generator=g)
        total, seen = 0.0, 0
        for lo in range(0, len(order), s.batch_size):
            idx = order[lo: lo + s.batch_size]
            if len(idx) < 2:  # BatchNorm needs two images; a lone leftover is seen next epoch
                continue
            x = augment(x_all[idx].to(device).float() / 255.0, s, g)
            logit_c, logit_s = model(x)
            loss = F.cross_entropy(logit_c, yc[idx].to(device)) + F.cross_entropy(logit_s, ys[idx].to(device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"attribute classifier: the loss became {float(loss)} in epoch {epoch + 1}; "
                                         "try a lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        loss_value = total / max(seen, 1)
        if log:
            log(f"epoch {epoch + 1}/{s.epochs}: loss {loss_value:.4f} ({time.time() - t0:.1f}s)")
    return model, loss_value, time.time() - t0


def train_attribute_classifier(
    images: torch.Tensor,
    colours: Sequence[str],
    shapes: Sequence[str],
    settings: TrainSettings | None = None,
    *,
    test: tuple[ImageInput, Sequence[str], Sequence[str]] | None = None,
    device: str | torch.device = "cpu",
    num_threads: int | None = 1,
    log: Callable[[str], None] | None = None,
) -> tuple[AttributeClassifier, dict[str, Any]]:
    """Trains an :class:`AttributeClassifier` on labelled real images; deterministic for ``settings.seed``.

    Loss: cross-entropy of the colour head plus cross-entropy of the shape head; AdamW with a one-cycle
    learning rate. Every epoch sees every image once, augmented (:func:`augment`).

    Args:
        images: ``(N, 3, H, W)`` uint8 (or float in [0, 1]); resized to ``settings.input_size`` once.
        colours, shapes: the ``N`` images' colour and shape names (``s2i.data.shapes.COLOURS``/``SHAPES``).
        settings: hyperparameters (defaults: :class:`TrainSettings`).
        test: optional held-out ``(images, colours, shapes)``, scored at the end (``summary['test']``),
            also with every image blurred (σ = 1 px at 64 px, ``summary['test_blurred']``).
        device: where to train.
        num_threads: torch's CPU threads while training, restored afterwards (None: leave them). One thread
            gives the same weights on any machine (the sums of a multi-threaded convolution depend on
            the thread count) and is the fastest for this small network on a shared CPU (two threads
            competing with other work took 2.5 times as long).
        log: receives one line per epoch.

    Returns:
        the classifier (eval mode, on ``device``) and a summary (images, epochs, seconds, final loss, test scores).
    """
    s = settings or TrainSettings()
    if images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"expected a non-empty (N, 3, H, W) image batch, got shape {tuple(images.shape)}")
    if not (len(colours) == len(shapes) == len(images)):
        raise ValueError(f"{len(images)} images but {len(colours)} colour and {len(shapes)} shape labels")
    device = torch.device(device)
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        model, loss_value, seconds = _train(images, colours, shapes, s, device, log)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    summary: dict[str, Any] = {"train_images": len(images), "epochs": s.epochs, "seconds": round(seconds, 2),
                               "final_loss": round(loss_value, 5), "device": str(device)}
    if test is not None:
        timages, tcolours, tshapes = test
        summary["test"] = score_images(model, timages, tcolours, tshapes)
        if isinstance(timages, torch.Tensor):
            small = resize(_as_float(timages), s.input_size)
        else:
            small = load_images(list(timages), s.input_size).float() / 255.0
        blurred = _gaussian_blur(small, torch.ones(len(small)), 1.0)
        summary["test_blurred"] = score_images(model, blurred, tcolours, tshapes)
    return model, summary


# --------------------------------------------------------------------------- prediction


@torch.no_grad()
def _predict_indices(classifier: AttributeClassifier, images: ImageInput,
                     batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    colours, shapes = [], []
    try:
        for batch in _batches(images, batch_size, classifier.input_size):
            logit_c, logit_s = classifier(batch.to(device))
            colours.append(logit_c.argmax(1).cpu())
            shapes.append(logit_s.argmax(1).cpu())
    finally:
        classifier.train(was_training)
    return torch.cat(colours), torch.cat(shapes)


def predict(classifier: AttributeClassifier, images: ImageInput, batch_size: int = 128) -> tuple[list[str], list[str]]:
    """Colour and shape names of each image (a ``(N, 3, H, W)`` tensor, uint8 or float in [0, 1], or files)."""
    if len(images) == 0:
        return [], []
    c, s = _predict_indices(classifier, images, batch_size)
    return [classifier.colours[i] for i in c.tolist()], [classifier.shapes[i] for i in s.tolist()]


def score_images(classifier: AttributeClassifier, images: ImageInput, expected_colours: Sequence[str],
                 expected_shapes: Sequence[str], batch_size: int = 128) -> dict[str, Any]:
    """Share of images whose predicted colour, shape, and both match the expected names.

    Returns:
        ``{"n", "colour_accuracy", "shape_accuracy", "both_accuracy"}``, accuracies in [0, 1].
    """
    n = len(images)
    if n == 0:
        raise ValueError("no images to score")
    if len(expected_colours) != n or len(expected_shapes) != n:
        raise ValueError(f"{n} images but {len(expected_colours)} expected colours and "
                         f"{len(expected_shapes)} expected shapes")
    exp_c = _label_indices(expected_colours, classifier.colours, "expected colour")
    exp_s = _label_indices(expected_shapes, classifier.shapes, "expected shape")
    pred_c, pred_s = _predict_indices(classifier, images, batch_size)
    ok_c, ok_s = pred_c == exp_c, pred_s == exp_s
    return {"n": n, "colour_accuracy": ok_c.float().mean().item(), "shape_accuracy": ok_s.float().mean().item(),
            "both_accuracy": (ok_c & ok_s).float().mean().item()}


# --------------------------------------------------------------------------- checkpoints


def classifier_checkpoint(model: AttributeClassifier, settings: TrainSettings, summary: dict[str, Any],
                          data: dict[str, Any] | None = None) -> dict[str, Any]:
    """One dict that rebuilds the classifier alone: weights, constructor arguments (with the colour and shape
    name lists), training settings, training summary (real test accuracies) and what data it was trained on."""
    return {"format": CHECKPOINT_FORMAT, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "model_args": dict(model.args), "config": asdict(settings), "summary": summary, "data": data or {}}


def save_classifier(path: str | Path, model: AttributeClassifier, settings: TrainSettings, summary: dict[str, Any],
                    data: dict[str, Any] | None = None) -> None:
    """Writes :func:`classifier_checkpoint` atomically."""
    atomic_save(classifier_checkpoint(model, settings, summary, data), path)


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[AttributeClassifier, dict[str, Any]]:
    """Rebuilds the classifier from its checkpoint (``weights_only`` load); returns it in eval mode and the dict.

    Raises:
        CheckpointError: missing, unreadable, or not an attribute-classifier checkpoint.
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    if ckpt.get("format") != CHECKPOINT_FORMAT or not isinstance(ckpt.get("model_args"), dict):
        raise CheckpointError(f"{path} is not an attribute-classifier checkpoint (format {ckpt.get('format')!r}, "
                              f"expected {CHECKPOINT_FORMAT!r}); train one with prepare_attribute_classifier.py")
    try:
        model = AttributeClassifier(**ckpt["model_args"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the classifier from model_args: {exc}") from None
    load_weights(model, ckpt["model"], path)
    return model.to(device).eval(), ckpt
