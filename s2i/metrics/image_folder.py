"""Image files for the image metrics (FID, IS): listing a folder, loading batches, resizing batches.

Images are read by :func:`s2i.data.images.load_image` (Pillow, RGB float32 in [0, 1]; grayscale is
tiled, alpha dropped), the project's one image loader. As in ``bioinf-jku/TTUR``'s ``fid.py``,
a folder means the images directly inside it unless ``recursive`` is asked for (the generator's
samples sit in class sub-folders, docs/original.md#s11-7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from s2i.data.images import load_image

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "iter_image_batches", "list_images", "to_float_batch", "uniform_batch"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
ImageSource = str | Path | Sequence[str | Path]


def list_images(source: ImageSource, recursive: bool = False) -> list[Path]:
    """The image files of a folder (sorted), or a given list of image paths (order kept).

    Args:
        source: a folder, or a sequence of image file paths.
        recursive: also look in sub-folders of a folder.

    Returns:
        The paths; every one exists.

    Raises:
        FileNotFoundError: the folder or a listed file does not exist.
        ValueError: the folder holds no image with one of :data:`IMAGE_EXTENSIONS`.
    """
    if isinstance(source, str | Path):
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist" if not folder.exists()
                                    else f"{folder} is not a folder of images")
        found = folder.rglob("*") if recursive else folder.iterdir()
        paths = sorted(p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not paths:
            where = "in or below" if recursive else "directly in"
            hint = "" if recursive else " (images in sub-folders need recursive=True)"
            raise ValueError(f"no {'/'.join(IMAGE_EXTENSIONS)} images {where} {folder}{hint}")
        return paths
    paths = [Path(p) for p in source]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} listed images do not exist, e.g. {missing[0]}")
    return paths


def iter_image_batches(paths: Sequence[Path], batch_size: int) -> Iterator[list[np.ndarray]]:
    """Load images ``batch_size`` at a time, each ``(3, H, W)`` float32 RGB in [0, 1] (sizes may differ)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(paths), batch_size):
        yield [load_image(p, min_side=1).transpose(2, 0, 1) for p in paths[start : start + batch_size]]


def to_float_batch(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """Check an image batch and return it as float32 in [0, 1].

    Args:
        images: ``(N, 3, H, W)``; uint8 in [0, 255] or floating point in [0, 1] (generator output
            in [-1, 1] must be mapped with ``(x + 1) / 2`` first).

    Returns:
        ``(N, 3, H, W)`` float32 tensor on ``device``.
    """
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, 3, H, W) image batch, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.to(device=device, dtype=torch.float32) / 255.0
    if not x.is_floating_point():
        raise ValueError(f"images must be uint8 in [0, 255] or float in [0, 1], got dtype {x.dtype}")
    x = x.to(device=device, dtype=torch.float32)
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("images contain NaN or infinite values")
    # A little slack for float rounding; anything further out is a wrong value range.
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"float images must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}]"
                         + (" (generator output in [-1, 1]? pass (x + 1) / 2)" if lo < 0 else "")
                         + (" (0-255 values? pass uint8 or x / 255)" if hi > 2 else ""))
    return x.clamp_(0.0, 1.0)


def uniform_batch(images: list[np.ndarray], resize: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Stack ``(3, H_i, W_i)`` float images; when sizes differ, each is passed through ``resize`` first.

    Returns:
        ``(N, 3, H, W)`` float32 tensor in [0, 1].
    """
    if len({img.shape for img in images}) == 1:
        return torch.from_numpy(np.stack(images))
    return torch.cat([resize(torch.from_numpy(np.ascontiguousarray(img))[None]) for img in images])
