"""Image loading and the original's ten-view protocol for teacher features (docs/original.md#s3).

The original fed Caffe through ``caffe.io.load_image`` and ``caffe.io.Transformer``. This module
reproduces those steps with Pillow and numpy, so that any teacher network can be run on exactly the
same views:

1. :func:`load_image`: RGB float32 in [0, 1], (H, W, 3); grayscale is tiled to three channels and an
   alpha channel is dropped (not composited), as ``caffe.io.load_image`` does.
2. :func:`caffe_resize`: bilinear resize to (S + 3) × (S + 3) the way ``caffe.io.resize_image`` does it
   (min–max scaling to [0, 1], scikit-image ``resize(order=1, mode='constant')``, scaling back).
3. the teacher's own channel order and normalisation (see ``s2i.features.teachers``), giving (3, S + 3, S + 3);
4. :func:`ten_views`: five S × S crops at (x, y) = (0, 0), (3, 0), (1, 1), (0, 3), (3, 3), then the same
   five crops of the flipped array. The original flipped with ``np.fliplr`` on the CHW array, which
   reverses axis 1 = **H**: an upside-down flip (docs/original.md#bug-19). ``flip='vertical'`` reproduces it (the
   authors' released features); ``flip='horizontal'`` is the mirror image a new pipeline would use.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# (x0, y0) of the five crops on the (S + 3)² image; the original's boxes for S = 224 on 227² (docs/original.md#s3).
CROP_OFFSETS: tuple[tuple[int, int], ...] = ((0, 0), (3, 0), (1, 1), (0, 3), (3, 3))
CROP_MARGIN = 3
FLIPS = ("vertical", "horizontal")
MIN_SIDE = 16


class ImageLoadError(ValueError):
    """An image file is missing, unreadable or unusable; the message names the file (and the item)."""


def _where(path: Path, where: str | None) -> str:
    return f"{path} ({where})" if where else str(path)


def _to_float(arr: np.ndarray, mode: str) -> np.ndarray:
    """Pixel values → float32 in [0, 1], scaled by the integer type's range as ``img_as_float`` does."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")):
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.integer):  # Pillow mode "I" (int32): 16-bit data in practice
        top = 65535.0 if arr.max(initial=0) <= 65535 else float(np.iinfo(np.int32).max)
        return np.clip(arr.astype(np.float64) / top, 0.0, 1.0).astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):  # Pillow mode "F": kept as is, like img_as_float
        return arr.astype(np.float32)
    raise TypeError(f"unsupported pixel type {arr.dtype} (Pillow mode {mode})")


def load_image(path: str | Path, *, where: str | None = None, min_side: int = MIN_SIDE) -> np.ndarray:
    """Reads an image as RGB float32 in [0, 1], like ``caffe.io.load_image(path)``.

    Grayscale (``1``, ``L``, ``I;16``, ``I``, ``F``) is tiled to three channels; ``LA``/``RGBA`` lose
    their alpha channel without compositing; ``P`` (palette) is expanded; ``CMYK``/``YCbCr``/``LAB``/
    ``HSV`` are converted to RGB by Pillow. Only the first frame of an animation is used and EXIF
    orientation is ignored, as scikit-image did.

    Args:
        path: the image file.
        where: what refers to it (e.g. ``"train.json item 17"``), for error messages.
        min_side: smallest accepted height and width.

    Returns:
        ``(H, W, 3)`` float32 array.

    Raises:
        ImageLoadError: missing file, not an image, truncated or corrupt data, or a side below ``min_side``.
    """
    path = Path(path)
    name = _where(path, where)
    if not path.is_file():
        raise ImageLoadError(f"image {name} does not exist" if not path.exists() else f"image {name} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                mode = img.mode
                if mode == "P":
                    img = img.convert("RGBA" if "transparency" in img.info else "RGB")
                elif mode == "PA":
                    img = img.convert("RGBA")
                elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                    img = img.convert("RGB")
                arr = np.asarray(img)
                mode = img.mode
    except FileNotFoundError:
        raise ImageLoadError(f"image {name} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageLoadError(f"image {name} could not be decoded: {detail}") from None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):  # LA, RGBA: drop alpha as caffe.io.load_image does
        arr = arr[:, :, :-1]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ImageLoadError(f"image {name} has an unsupported layout {arr.shape} (Pillow mode {mode})")
    try:
        out = _to_float(arr, mode)
    except TypeError as exc:
        raise ImageLoadError(f"image {name}: {exc}") from None
    h, w = out.shape[:2]
    if min(h, w) < min_side:
        raise ImageLoadError(f"image {name} is {w}×{h} pixels, smaller than the minimum side of {min_side}")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of half-pixel-centred linear interpolation along one axis.

    Output pixel i samples ``(i + 0.5) · n_in / n_out − 0.5``. Taps that fall outside ``[0, n_in)``
    read the constant 0 (scikit-image ``mode='constant'``, ``cval=0``): their weight is set to 0.
    """
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    lo = np.floor(src)
    frac = src - lo
    lo = lo.astype(np.int64)
    hi = np.ceil(src).astype(np.int64)
    w_lo, w_hi = 1.0 - frac, frac
    w_lo = np.where((lo >= 0) & (lo < n_in), w_lo, 0.0)
    w_hi = np.where((hi >= 0) & (hi < n_in) & (hi != lo), w_hi, 0.0)
    return np.clip(lo, 0, n_in - 1), np.clip(hi, 0, n_in - 1), w_lo, w_hi


def caffe_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``caffe.io.resize_image(image, size)`` with the scikit-image of the original's Python 2.7 setup.

    The image is min–max scaled to [0, 1] (over all channels), resized with scikit-image
    ``resize(order=1, mode='constant', cval=0)`` and scaled back. scikit-image 0.14, the last release
    for Python 2.7, did not anti-alias (0.15+ blurs before downscaling by default), so neither does
    this; for downscaling the result equals ``cv2.resize(..., INTER_LINEAR)`` on float data. When
    upscaling, the outermost output rows and columns interpolate towards the constant 0, i.e. towards
    the image minimum: a property of the original kept here. A constant image stays constant.

    Args:
        image: ``(H, W, C)`` float array.
        size: ``(out_h, out_w)``.

    Returns:
        ``(out_h, out_w, C)`` float32.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    out_h, out_w = size
    img = image.astype(np.float64)
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.full((out_h, out_w, image.shape[2]), lo, dtype=np.float32)
    std = (img - lo) / (hi - lo)
    r0, r1, wr0, wr1 = _linear_taps(img.shape[0], out_h)
    rows = std[r0] * wr0[:, None, None] + std[r1] * wr1[:, None, None]
    c0, c1, wc0, wc1 = _linear_taps(img.shape[1], out_w)
    out = rows[:, c0] * wc0[None, :, None] + rows[:, c1] * wc1[None, :, None]
    out = np.clip(out, 0.0, 1.0)  # scikit-image's clip=True: no value outside the input range
    return (out * (hi - lo) + lo).astype(np.float32)


def ten_views(chw: np.ndarray, crop: int, flip: str) -> np.ndarray:
    """The original's ten views of a preprocessed image (docs/original.md#s3).

    Args:
        chw: ``(C, crop + 3, crop + 3)`` array (already resized, reordered and normalised).
        crop: side S of each view.
        flip: ``'vertical'`` (``np.fliplr`` on CHW, upside down: the original) or ``'horizontal'`` (mirror).

    Returns:
        ``(10, C, S, S)``: the crops at :data:`CROP_OFFSETS`, then the same crops of the flipped array.
    """
    if flip not in FLIPS:
        raise ValueError(f"flip must be one of {FLIPS}, got {flip!r}")
    side = crop + CROP_MARGIN
    if chw.ndim != 3 or chw.shape[1:] != (side, side):
        raise ValueError(f"expected a (C, {side}, {side}) array for {crop}-pixel views, got {chw.shape}")
    flipped = chw[:, ::-1, :] if flip == "vertical" else chw[:, :, ::-1]
    views = [src[:, y:y + crop, x:x + crop] for src in (chw, flipped) for x, y in CROP_OFFSETS]
    return np.ascontiguousarray(np.stack(views))


def view_protocol(crop: int, flip: str) -> dict:
    """The view settings in words and numbers, for the feature sidecar."""
    return {
        "views": 2 * len(CROP_OFFSETS),
        "resize_to": [crop + CROP_MARGIN, crop + CROP_MARGIN],
        "resize": "caffe.io.resize_image: min-max scaling, bilinear (scikit-image order=1, mode='constant', "
                  "no anti-aliasing), scaled back",
        "crop": crop,
        "crop_offsets_xy": [list(o) for o in CROP_OFFSETS],
        "flip": flip,
        "flip_note": ("views 5-9 are views 0-4 of the image turned upside down (np.fliplr on the CHW array, "
                      "as the original)" if flip == "vertical" else
                      "views 5-9 are views 0-4 of the mirrored image (left-right)"),
    }
