"""Images and speech embeddings for the generator stage (docs/original.md#s1-4, §11.2), without torchvision.

One class serves every dataset: the manifest (birds, flowers, shapes: ten captions per image; places:
one) gives the images and classes, and the embedding pickle written by stage D gives one row per image
and one column per caption, ``(N, C, D)`` (a ``(N, D)`` array is read as ``C = 1``).

Training samples follow the fork's ``BirdsDataset``: an optional square crop around the CUB bounding
box, ``Resize(int(imsize·76/64))`` of the shorter side, a random ``imsize`` crop, a random horizontal
flip, then one image per branch (``BASE_SIZE·2^i``), scaled to [−1, 1]. Evaluation samples take the
centre crop and no flip (the original also cropped and flipped at random there, docs/original.md#bug-27) and no
bounding-box crop (as the fork; upstream cropped).

Every random choice comes from ``np.random.default_rng([seed, epoch, index])``, so a sample does not
depend on the number of loader workers and a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from s2i.config import ConfigError
from s2i.data.images import load_image
from s2i.data.manifests import Manifest, ManifestError, load_manifest
from s2i.data.safe_pickle import PickleFormatError, load_pickle
from StackGAN.config import GanConfig, GanPaths, resolve_paths

LOAD_RATIO = 76 / 64  # images are resized to imsize·76/64 before the imsize crop (docs/original.md#s11-2)
WRONG_IMAGE_TRIES = 64  # rejection draws before drawing from the other classes directly

Box = tuple[int, int, int, int]


# --------------------------------------------------------------------------------------------------
# Image operations (PIL in, PIL out), equal to the torchvision transforms the original used
# --------------------------------------------------------------------------------------------------


def bbox_square(bbox: Box, width: int, height: int) -> Box:
    """The square around a CUB box that the original cropped to (docs/original.md#s1-4).

    Args:
        bbox: ``(x, y, w, h)`` in pixels, already truncated to ints.
        width, height: the image size.

    Returns:
        ``(left, top, right, bottom)`` for ``PIL.Image.crop``: ``r = max(int(0.75·max(w, h)), 10)``,
        centred on ``(int((2x + w)/2), int((2y + h)/2))``, clipped to the image.
    """
    x, y, w, h = bbox
    r = max(int(0.75 * max(w, h)), 10)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """``torchvision.transforms.Resize(size)``: the shorter side becomes ``size`` (bilinear), aspect kept."""
    w, h = img.size
    if min(w, h) == size:
        return img
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return img.resize(new, Image.Resampling.BILINEAR)


def crop_at(img: Image.Image, top: int, left: int, size: int) -> Image.Image:
    return img.crop((left, top, left + size, top + size))


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """``torchvision.transforms.CenterCrop(size)`` for an image at least ``size`` on each side."""
    w, h = img.size
    return crop_at(img, int(round((h - size) / 2.0)), int(round((w - size) / 2.0)), size)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image → ``(3, H, W)`` float32 in [−1, 1] (``ToTensor`` then ``Normalize(0.5, 0.5)``)."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def branch_tensors(img: Image.Image, branch_num: int, base_size: int) -> list[torch.Tensor]:
    """One tensor per generator branch: ``BASE_SIZE·2^i`` pixels; the last is ``img`` itself."""
    out = []
    for i in range(branch_num):
        size = base_size * 2 ** i
        out.append(to_tensor(img if i == branch_num - 1 else img.resize((size, size), Image.Resampling.BILINEAR)))
    return out


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def read_bboxes(manifest_path: str | Path) -> list[Box | None]:
    """The optional ``bbox`` ``[x, y, w, h]`` of every manifest item (CUB), truncated to ints."""
    manifest_path = Path(manifest_path)
    data = json.loads(manifest_path.read_text(encoding="utf-8")).get("data", [])
    boxes: list[Box | None] = []
    for i, entry in enumerate(data):
        box = entry.get("bbox") if isinstance(entry, dict) else None
        if box is None:
            boxes.append(None)
            continue
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise ManifestError(f"{manifest_path} item {i}: 'bbox' must be [x, y, w, h] numbers, found {box!r}")
        x, y, w, h = (int(v) for v in box)
        if w <= 0 or h <= 0:
            raise ManifestError(f"{manifest_path} item {i}: 'bbox' {box!r} has no area")
        boxes.append((x, y, w, h))
    return boxes


def check_embeddings(obj: Any, manifest: Manifest, source: str | Path) -> np.ndarray:
    """A stage-D embedding pickle as ``(N, C, D)`` float32, checked against its manifest.

    ``N`` must equal the number of manifest items and ``C`` the number of captions (audio files) of
    every item; a ``(N, D)`` array (one caption per image, Places) becomes ``(N, 1, D)``.
    """
    if not isinstance(obj, np.ndarray):
        raise PickleFormatError(f"{source}: holds a {type(obj).__name__}, expected one (images, captions, dim) "
                                f"numpy array written by Audio_to_Image/extract_audio_feature.py")
    if obj.ndim == 2:
        obj = obj[:, None, :]
    if obj.ndim != 3 or not (np.issubdtype(obj.dtype, np.floating) or np.issubdtype(obj.dtype, np.integer)):
        raise PickleFormatError(f"{source}: holds an array of shape {obj.shape} and dtype {obj.dtype}, expected "
                                "(images, captions, dim) floats")
    n, c, _ = obj.shape
    if n != len(manifest):
        raise ManifestError(f"{source} has {n} rows but {manifest.path} has {len(manifest)} images; the "
                            "embeddings must be extracted from this manifest (same order)")
    for i, item in enumerate(manifest.items):
        if len(item.audio) != c:
            raise ManifestError(f"{source} has {c} caption embeddings per image but {manifest.path} item {i} "
                                f"has {len(item.audio)} captions")
    out = np.ascontiguousarray(obj, dtype=np.float32)
    if not np.isfinite(out).all():
        bad = int(np.argwhere(~np.isfinite(out))[0][0])
        raise PickleFormatError(f"{source}: the embeddings of image {bad} ({manifest.items[bad].image}) are not finite")
    return out


# --------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------


class GanDataset(Dataset):
    """Real (and, in training, wrong) images per branch with their speech embeddings.

    Args:
        manifest: the split's manifest.
        embeddings: ``(N, C, D)`` float32 from :func:`check_embeddings`, rows in manifest order.
        train: training samples (random crop and flip, one caption, a wrong image) or evaluation samples
            (centre crop, all captions).
        branch_num: generator branches; ``imsize = base_size·2^(branch_num−1)``.
        base_size: side of the first branch's images.
        seed: base of the per-sample random choices.
        bboxes: per item ``(x, y, w, h)`` or None (see :func:`read_bboxes`); None = no boxes.
        eval_bbox_crop: crop evaluation images to their box too (upstream's behaviour).
        embeddings_path: the pickle's path, for messages.
        cache_images: ours: keep every decoded, cropped and resized image in memory after its first use,
            so later epochs skip decoding (the samples are identical). Each loader worker keeps its own
            cache; meant for small datasets (shapes: 768 images of 76 px, 13 MB), not CUB at 256 px.

    A training sample is a dict: ``imgs`` (list of ``branch_num`` tensors ``(3, s_i, s_i)`` in [−1, 1]),
    ``wrong_imgs`` (same, an image of another class), ``embedding`` ``(D,)``, ``caption_index``,
    ``label``, ``class_index`` and ``wrong_class_index`` (0…K−1 over the split's K classes), ``index``,
    ``wrong_index``, ``key`` (image path without extension). An evaluation sample
    has ``imgs``, ``embeddings`` ``(C, D)``, ``label``, ``index`` and ``key``. The loader's default
    collate stacks them.
    """

    def __init__(
        self,
        manifest: Manifest,
        embeddings: np.ndarray,
        *,
        train: bool,
        branch_num: int = 3,
        base_size: int = 64,
        seed: int = 100,
        bboxes: list[Box | None] | None = None,
        eval_bbox_crop: bool = False,
        embeddings_path: str | Path | None = None,
        cache_images: bool = False,
    ) -> None:
        source = embeddings_path or "the embeddings"
        embeddings = check_embeddings(embeddings, manifest, source)
        if branch_num < 1 or base_size < 1:
            raise ValueError(f"branch_num and base_size must be positive, got {branch_num} and {base_size}")
        if seed < 0:
            raise ValueError(f"seed must not be negative, got {seed}")
        if bboxes is not None and len(bboxes) != len(manifest):
            raise ManifestError(f"{manifest.path}: {len(bboxes)} bounding boxes for {len(manifest)} images")
        self.manifest = manifest
        self.embeddings = embeddings
        self.embeddings_path = embeddings_path
        self.train = train
        self.branch_num = branch_num
        self.base_size = base_size
        self.imsize = base_size * 2 ** (branch_num - 1)
        self.load_size = int(self.imsize * LOAD_RATIO)
        self.seed = seed
        self.bboxes = bboxes if bboxes is not None else [None] * len(manifest)
        self.eval_bbox_crop = eval_bbox_crop
        self.labels = manifest.labels
        # 0..K-1 in order of the label values, for a classifier over this split's K classes.
        self.classes, self.class_index = np.unique(self.labels, return_inverse=True)
        self.keys = [str(PurePosixPath(it.image).with_suffix("")) for it in manifest.items]
        self.epoch = 0
        self._cache: dict[tuple[int, bool], Image.Image] | None = {} if cache_images else None
        if train and len(self.classes) < 2:
            raise ManifestError(f"{manifest.path}: every image is of class {manifest.items[0].class_name!r}; "
                                "training needs a second class to draw wrong images from")

    @classmethod
    def from_files(cls, manifest_path: str | Path, embeddings_path: str | Path, dataset: str,
                   **kwargs: Any) -> GanDataset:
        """Reads the manifest (with its boxes) and the embedding pickle; ``kwargs`` as for the constructor."""
        manifest = load_manifest(manifest_path, dataset)
        embeddings = load_pickle(embeddings_path)
        return cls(manifest, embeddings, bboxes=read_bboxes(manifest_path), embeddings_path=embeddings_path,
                   **kwargs)

    @property
    def embedding_dim(self) -> int:
        return int(self.embeddings.shape[2])

    @property
    def captions_per_image(self) -> int:
        return int(self.embeddings.shape[1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.manifest)

    def _load(self, index: int, crop_box: bool) -> Image.Image:
        """The image as RGB, bbox-cropped when asked and a box exists, resized to ``load_size``."""
        if self._cache is None:
            return self._decode(index, crop_box)
        img = self._cache.get((index, crop_box))
        if img is None:
            img = self._cache[(index, crop_box)] = self._decode(index, crop_box)
        return img

    def _decode(self, index: int, crop_box: bool) -> Image.Image:
        where = f"{self.manifest.path} item {index}"
        arr = load_image(self.manifest.image_path(index), where=where, min_side=1)
        img = Image.fromarray(np.round(arr * 255.0).astype(np.uint8))
        box = self.bboxes[index]
        if crop_box and box is not None:
            left, top, right, bottom = bbox_square(box, *img.size)
            if right <= left or bottom <= top:
                raise ManifestError(f"{where}: 'bbox' {list(box)} lies outside the {img.size[0]}×{img.size[1]} image")
            img = img.crop((left, top, right, bottom))
        return resize_shorter(img, self.load_size)

    def _train_views(self, index: int, rng: np.random.Generator) -> list[torch.Tensor]:
        img = self._load(index, crop_box=True)
        w, h = img.size
        top = int(rng.integers(0, h - self.imsize + 1))
        left = int(rng.integers(0, w - self.imsize + 1))
        img = crop_at(img, top, left, self.imsize)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return branch_tensors(img, self.branch_num, self.base_size)

    def _wrong_index(self, index: int, rng: np.random.Generator) -> int:
        """An image of another class, uniform over the split (the fork redrew without a bound)."""
        label = self.labels[index]
        for _ in range(WRONG_IMAGE_TRIES):
            other = int(rng.integers(len(self)))
            if self.labels[other] != label:
                return other
        others = np.flatnonzero(self.labels != label)
        return int(others[rng.integers(len(others))])

    def eval_images(self, index: int) -> list[torch.Tensor]:
        """The deterministic views of an image (centre crop, no flip), one tensor per branch."""
        img = center_crop(self._load(index, crop_box=self.eval_bbox_crop), self.imsize)
        return branch_tensors(img, self.branch_num, self.base_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.manifest.items[index]
        if not self.train:
            return {
                "imgs": self.eval_images(index),
                "embeddings": torch.from_numpy(self.embeddings[index].copy()),
                "label": item.label,
                "index": index,
                "key": self.keys[index],
            }
        rng = np.random.default_rng([self.seed, self.epoch, index])
        caption = int(rng.integers(self.captions_per_image))
        imgs = self._train_views(index, rng)
        wrong = self._wrong_index(index, rng)
        return {
            "imgs": imgs,
            "wrong_imgs": self._train_views(wrong, rng),
            "embedding": torch.from_numpy(self.embeddings[index, caption].copy()),
            "caption_index": caption,
            "label": item.label,
            "class_index": int(self.class_index[index]),
            "wrong_class_index": int(self.class_index[wrong]),
            "index": index,
            "wrong_index": wrong,
            "key": self.keys[index],
        }


def dataset_from_config(cfg: GanConfig, paths: GanPaths | None = None) -> GanDataset:
    """The split a :class:`StackGAN.config.GanConfig` asks for (train when ``TRAIN.FLAG``, else test).

    Also checks ``TEXT.DIMENSION`` against the pickle, naming both.
    """
    paths = paths or resolve_paths(cfg)
    ds = GanDataset.from_files(
        paths.manifest, paths.embeddings, cfg.dataset, train=cfg.TRAIN.FLAG, branch_num=cfg.TREE.BRANCH_NUM,
        base_size=cfg.TREE.BASE_SIZE, seed=cfg.seed, eval_bbox_crop=cfg.eval_bbox_crop,
        cache_images=cfg.cache_images,
    )
    if ds.embedding_dim != cfg.TEXT.DIMENSION:
        raise ConfigError(f"{paths.embeddings} holds {ds.embedding_dim}-d speech embeddings but TEXT.DIMENSION "
                          f"is {cfg.TEXT.DIMENSION}; set TEXT.DIMENSION: {ds.embedding_dim} in the --cfg file "
                          f"(or pass --TEXT.DIMENSION {ds.embedding_dim})")
    return ds
