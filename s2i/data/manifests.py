"""Dataset manifests (``train.json`` / ``test.json``, docs/original.md#s1-2) for birds, flowers, places and shapes.

One entry per image, in the same order as the rows of the feature pickles. This module is the one
place that knows each dataset's key names and class-label rules; every stage reads manifests here.

Relative paths inside a manifest are taken relative to the working directory, as in the original
(which is always run from the repository root); where that does not exist, relative to the folder of
the manifest itself, so a dataset folder can be moved as a whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2i.files import write_json_atomic

DATASETS = ("birds", "flowers", "places", "shapes")
DATA_ROOTS = {"birds": "./data/birds", "flowers": "./data/flowers", "places": "./data/Places_subset",
              "shapes": "./data/shapes"}
"""Default dataset folder of each dataset (the original's paths, docs/original.md#s1-1)."""
PLACES_CLASSES = ("bedroom", "dinette", "dining_room", "home_office", "hotel_room", "kitchenette", "living_room")


class ManifestError(ValueError):
    """A manifest is missing, malformed, or disagrees with the files that go with it."""


@dataclass(frozen=True)
class ManifestItem:
    """One image with its captions. ``audio`` paths are relative to the manifest's ``audio_base_path``."""

    image: str
    label: int
    class_name: str
    captions: tuple[str, ...]
    audio: tuple[str, ...]


@dataclass
class Manifest:
    path: Path
    dataset: str
    audio_base_path: Path
    image_base_path: Path | None
    image_feature_path: Path | None
    items: list[ManifestItem]
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def audio_path(self, index: int, caption: int) -> Path:
        return self.audio_base_path / self.items[index].audio[caption]

    def image_path(self, index: int) -> Path:
        """``image_base_path / image``. The original's feature script joined ``image_base_path/images/image``
        instead (docs/original.md#bug-20); where only that file exists, it is used, so both conventions work. Places
        images may also sit in the Places205 layout ``base/<letter>/<class>/...`` (the letter folder that
        the manifest's ``image[2:]`` drops is the class's first letter)."""
        if self.image_base_path is None:
            raise ManifestError(f"{self.path}: no 'image_base_path', so image files cannot be found")
        image = self.items[index].image
        path = self.image_base_path / image
        if path.exists():
            return path
        others = [self.image_base_path / "images" / image]
        if self.dataset == "places":
            others.append(self.image_base_path / image[0] / image)
        return next((p for p in others if p.exists()), path)

    def all_audio_paths(self) -> list[Path]:
        """Every caption's audio file, image by image, caption by caption (the extraction order, docs/original.md#s10)."""
        return [self.audio_base_path / a for item in self.items for a in item.audio]

    @property
    def labels(self) -> np.ndarray:
        return np.array([it.label for it in self.items], dtype=np.int64)


def resolve_data_path(p: str | Path, manifest_dir: Path) -> Path:
    """Absolute as is; relative to the working directory if it exists there, else to the manifest's folder."""
    p = Path(p)
    if p.is_absolute():
        return p
    if (Path.cwd() / p).exists() or not (manifest_dir / p).exists():
        return Path.cwd() / p
    return manifest_dir / p


def _need(entry: dict, key: str, where: str) -> Any:
    if key not in entry:
        raise ManifestError(f"{where}: missing key '{key}' (has: {', '.join(sorted(entry))})")
    return entry[key]


def _str_list(entry: dict, key: str, where: str, required: bool = True) -> tuple[str, ...]:
    """A list of strings; a bare string is an error rather than a tuple of its characters."""
    value = _need(entry, key, where) if required else entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: '{key}' must be a list of strings, found {type(value).__name__}")
    return tuple(value)


def _parse_item(dataset: str, entry: dict, where: str) -> ManifestItem:
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected an object, found {type(entry).__name__}")
    if dataset in ("birds", "shapes"):
        image = _need(entry, "image", where)
        cls = str(_need(entry, "class", where))
        try:
            label = int(cls.split(".")[0]) - 1
        except ValueError:
            raise ManifestError(f"{where}: class {cls!r} is not of the form 'NNN.Name'") from None
        captions = _str_list(entry, "text", where, required=False)
        audio = _str_list(entry, "audio", where)
    elif dataset == "flowers":
        image = _need(entry, "img", where)
        cls = str(_need(entry, "class", where))
        try:
            label = int(cls) - 1
        except ValueError:
            raise ManifestError(f"{where}: class {cls!r} is not an integer string like '17'") from None
        captions = _str_list(entry, "text", where, required=False)
        audio = _str_list(entry, "wav", where)
    elif dataset == "places":
        image = str(_need(entry, "image", where))[2:]  # 'b/bedroom/x.jpg' → 'bedroom/x.jpg'
        cls = image.split("/")[0]
        if cls not in PLACES_CLASSES:
            raise ManifestError(f"{where}: image {image!r} is not in one of the classes {PLACES_CLASSES}")
        label = PLACES_CLASSES.index(cls)
        captions = (str(entry.get("asr_text", "")),)
        audio = (str(_need(entry, "wav", where))[5:],)  # 'wavs/NN/utt.wav' → 'NN/utt.wav'
    else:
        raise ManifestError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    if label < 0:
        raise ManifestError(f"{where}: class {cls!r} gives a negative label; classes are numbered from 1")
    if isinstance(audio, str) or not audio or not all(isinstance(a, str) for a in audio):
        raise ManifestError(f"{where}: expected a non-empty list of audio paths")
    return ManifestItem(image=str(image), label=label, class_name=cls, captions=captions, audio=audio)


def load_manifest(path: str | Path, dataset: str) -> Manifest:
    """Reads and checks a ``train.json``/``test.json``; errors name the file and the item."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"manifest {path}: expected a JSON object with a 'data' list")
    data = _need(raw, "data", str(path))
    if not isinstance(data, list) or not data:
        raise ManifestError(f"manifest {path}: 'data' must be a non-empty list of items")
    items = [_parse_item(dataset, e, f"{path} item {i}") for i, e in enumerate(data)]
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.image in seen:
            raise ManifestError(f"{path}: image {it.image!r} appears twice (items {seen[it.image]} and {i})")
        seen[it.image] = i
    here = path.parent
    feat = raw.get("image_feature_path")
    img_base = raw.get("image_base_path")
    extra = {k: v for k, v in raw.items() if k not in ("data", "audio_base_path", "image_base_path", "image_feature_path")}
    return Manifest(
        path=path,
        dataset=dataset,
        audio_base_path=resolve_data_path(_need(raw, "audio_base_path", str(path)), here),
        image_base_path=resolve_data_path(img_base, here) if img_base else None,
        image_feature_path=resolve_data_path(feat, here) if feat else None,
        items=items,
        extra=extra,
    )


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> None:
    """Writes a manifest dict as JSON atomically (temporary file, then rename), keeping key order."""
    write_json_atomic(path, manifest, indent=1)
