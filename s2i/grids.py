"""PNG grids of image batches (people look at pictures before numbers), without torchvision."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from s2i.files import atomic_write


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` in [-1, 1] → ``(B, H, W, 3)`` uint8, ``(x + 1) / 2 · 255`` rounded and clamped
    (the original's conversion of generated images, docs/original.md#s11-7)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> Image.Image:
    """One picture of ``images (B, 3, H, W)`` in [-1, 1], ``nrow`` per row (default: a near-square grid)."""
    arr = to_uint8(images)
    b, h, w, _ = arr.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    rows = math.ceil(b / nrow)
    canvas = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), pad_value, np.uint8)
    for i in range(b):
        r, c = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        canvas[y: y + h, x: x + w] = arr[i]
    return Image.fromarray(canvas)


def save_png(image: Image.Image, path: str | Path) -> None:
    """Saves atomically (temporary file, then rename)."""
    with atomic_write(path, durable=False) as fh:
        image.save(fh, format="PNG")
