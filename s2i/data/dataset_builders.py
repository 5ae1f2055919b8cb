"""Build ``train.json`` / ``test.json`` (docs/original.md#s1-2) from the public datasets as they are distributed.

The authors' split files can no longer be downloaded, so these builders recreate them from

* **birds**: the official ``CUB_200_2011/`` release (``images.txt``, ``classes.txt``,
  ``image_class_labels.txt``, ``bounding_boxes.txt``, ``train_test_split.txt``, ``images/``), the
  10-captions-per-image folder of Reed et al. (``text_c10/<class>/<image stem>.txt``) and its zero-shot
  class lists (``trainvalclasses.txt`` 150 classes, ``testclasses.txt`` 50 classes);
* **flowers**: Oxford-102 (``jpg/``, ``imagelabels.mat``, optionally ``setid.mat``) with Reed et al.'s
  ``text_c10/class_NNNNN/image_NNNNN.txt`` and class lists (82 / 20 classes);
* **places**: Places Audio Caption metadata (``{"image_base_path", "audio_base_path", "data": [...]}``),
  keeping the 7 classes of :data:`s2i.data.manifests.PLACES_CLASSES`.

Rules shared by every builder (documented here once):

* **Order.** Items are sorted by class (birds: ``classes.txt`` id; flowers: class number; places: the
  order of ``PLACES_CLASSES``), then by the order of the raw listing (``images.txt``, image number,
  metadata order). The order is the row order of every feature pickle written later.
* **Captions.** A caption file is read as UTF-8 (Latin-1 where it is not valid UTF-8); lines are
  stripped, blank lines skipped, and the first ``captions_per_image`` (10) lines are kept. A file with
  fewer non-blank lines is an error, because every later stage expects 10 captions per image.
* **Paths.** Paths written into a manifest are relative to ``root`` (the working directory, i.e. the
  repository root, as in the original) and start with ``./`` when they lie inside it; otherwise they
  are absolute. Symbolic links are not resolved, so a ``data/`` folder that is a link stays relative.
* **Errors.** Bad input raises :class:`DatasetBuildError` with one line naming the file and the line
  (or, for JSON metadata, the entry index). Things worth knowing that do not stop the build (classes
  in neither class list, duplicate Places images) are returned as warnings.

The functions here are pure apart from reading the raw files; writing is :func:`write_manifests`.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2i.data.manifests import PLACES_CLASSES, load_manifest
from s2i.files import portable_path

SPLITS = ("train", "test")
SPLIT_MODES = ("zero_shot", "image")
CAPTIONS_PER_IMAGE = 10


class DatasetBuildError(ValueError):
    """The raw dataset is missing a file, or a file disagrees with the others; the message names it."""


@dataclass
class BuildResult:
    """What a builder produced: one manifest dict per split, and what the user should hear about."""

    dataset: str
    manifests: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# small helpers


def locate(given: str | Path | None, candidates: Iterable[Path], what: str, flag: str, *, is_dir: bool) -> Path:
    """The path the user gave (which must exist), else the first candidate that exists."""
    check = Path.is_dir if is_dir else Path.is_file
    kind = "folder" if is_dir else "file"
    if given is not None:
        path = Path(given)
        if not check(path):
            raise DatasetBuildError(f"{what} {kind} {path} (given by {flag}) does not exist")
        return path
    tried = list(candidates)
    for path in tried:
        if check(path):
            return path
    raise DatasetBuildError(f"{what} {kind} not found (looked for {', '.join(str(p) for p in tried)}); "
                            f"pass {flag} to say where it is")


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) for each non-blank line of a text file."""
    if not path.is_file():
        raise DatasetBuildError(f"{path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # a few CUB caption files carry stray Windows-1252 bytes
    text = text.lstrip("\ufeff")
    return [(n, s) for n, line in enumerate(text.splitlines(), 1) if (s := line.strip())]


def read_id_table(path: Path, ncols: int, parse: Callable[[list[str]], Any], expected: str) -> dict[int, tuple[int, Any]]:
    """Reads ``id value...`` lines into ``{id: (line number, parse(values))}``; duplicate ids are errors."""
    table: dict[int, tuple[int, Any]] = {}
    for lineno, text in _lines(path):
        fields = text.split(maxsplit=ncols - 1)
        if len(fields) != ncols:
            raise DatasetBuildError(f"{path} line {lineno}: expected '{expected}', found {text!r}")
        try:
            key = int(fields[0])
            value = parse(fields[1:])
        except ValueError:
            raise DatasetBuildError(f"{path} line {lineno}: expected '{expected}', found {text!r}") from None
        if key in table:
            raise DatasetBuildError(f"{path} line {lineno}: id {key} already appears on line {table[key][0]}")
        table[key] = (lineno, value)
    if not table:
        raise DatasetBuildError(f"{path} is empty; expected lines of '{expected}'")
    return table


def read_class_list(path: Path, known: Iterable[str], known_from: str) -> list[str]:
    """Class names, one per line; a name that is not in ``known`` or appears twice is an error."""
    known = set(known)
    names: dict[str, int] = {}
    for lineno, name in _lines(path):
        if name not in known:
            raise DatasetBuildError(f"{path} line {lineno}: class {name!r} does not exist in {known_from}")
        if name in names:
            raise DatasetBuildError(f"{path} line {lineno}: class {name!r} already listed on line {names[name]}")
        names[name] = lineno
    if not names:
        raise DatasetBuildError(f"{path} lists no classes")
    return list(names)


def read_captions(path: Path, n: int, image: str, where: str) -> list[str]:
    """The first ``n`` non-blank lines of a caption file (rule in the module docstring)."""
    if not path.is_file():
        raise DatasetBuildError(f"caption file {path} is missing for image {image!r} ({where})")
    captions = [text for _, text in _lines(path)]
    if len(captions) < n:
        raise DatasetBuildError(f"caption file {path} has {len(captions)} non-blank lines; "
                                f"expected at least {n} (one caption per line)")
    return captions[:n]


def _split_of_classes(train: list[str], test: list[str], train_path: Path, test_path: Path) -> dict[str, str]:
    both = sorted(set(train) & set(test))
    if both:
        raise DatasetBuildError(f"class {both[0]!r} is in both {train_path} and {test_path} "
                                f"({len(both)} shared classes); a zero-shot split needs disjoint classes")
    return {**{c: "train" for c in train}, **{c: "test" for c in test}}


def _feature_path(out_dir: Path, split: str, tag: str, root: Path | None) -> str:
    return portable_path(out_dir / split / f"image_features_{tag}.pickle", root)


# ---------------------------------------------------------------------------------------------------
# birds: CUB-200-2011


@dataclass(frozen=True)
class BirdsSources:
    cub_dir: Path
    text_dir: Path
    train_classes: Path | None
    test_classes: Path | None


def locate_birds(raw: Path, *, cub_dir=None, text_dir=None, train_classes=None, test_classes=None,
                 split_mode: str = "zero_shot") -> BirdsSources:
    """Finds the CUB release, the caption folder and (zero-shot mode) the class lists under ``raw``.

    Looked for, in order: ``CUB_200_2011/``; ``text_c10/``, ``cub_icml/text_c10/``, ``text/``;
    ``trainvalclasses.txt`` / ``testclasses.txt`` in ``raw/`` or ``raw/cub_icml/``, then next to the captions.
    """
    raw = Path(raw)
    cub = locate(cub_dir, [raw / "CUB_200_2011", raw], "CUB-200-2011", "--cub_dir", is_dir=True)
    text = locate(text_dir, [raw / "text_c10", raw / "cub_icml" / "text_c10", raw / "text"],
                  "caption (text_c10)", "--text_dir", is_dir=True)
    lists: list[Path | None] = [None, None]
    if split_mode == "zero_shot":
        folders = [raw, raw / "cub_icml", text.parent]
        lists = [locate(given, [f / name for f in folders], "class list", flag, is_dir=False)
                 for given, name, flag in ((train_classes, "trainvalclasses.txt", "--train_classes"),
                                           (test_classes, "testclasses.txt", "--test_classes"))]
    return BirdsSources(cub, text, lists[0], lists[1])


def build_birds(src: BirdsSources, *, out_dir: Path, split_mode: str = "zero_shot",
                audio_base_path: Path | None = None, feature_tag: str = "googlenet_caffe",
                check_images: bool = True, captions_per_image: int = CAPTIONS_PER_IMAGE,
                root: Path | None = None) -> BuildResult:
    """Birds manifests: items ``{"image", "class", "text", "audio", "bbox"}`` (docs/original.md#s1-2).

    ``split_mode="zero_shot"``: the class lists (the paper's split, 150/50 classes);
    ``"image"``: the official per-image ``train_test_split.txt`` (all 200 classes in both splits).
    ``image_base_path`` is ``CUB_200_2011/images`` and an item's image is ``image_base_path/image``
    (docs/original.md#bug-20). Audio names are ``<class>/<stem>_<k>.wav``, k = 0..captions_per_image-1.
    """
    if split_mode not in SPLIT_MODES:
        raise DatasetBuildError(f"split mode {split_mode!r} is not one of {SPLIT_MODES}")
    cub = src.cub_dir
    images_dir = cub / "images"
    if not images_dir.is_dir():
        raise DatasetBuildError(f"{images_dir} does not exist (expected the CUB-200-2011 images folder)")
    classes = read_id_table(cub / "classes.txt", 2, lambda v: v[0], "id class_name")
    images = read_id_table(cub / "images.txt", 2, lambda v: v[0], "id class_name/file.jpg")
    labels = read_id_table(cub / "image_class_labels.txt", 2, lambda v: int(v[0]), "image_id class_id")
    boxes = read_id_table(cub / "bounding_boxes.txt", 5, lambda v: [float(x) for x in v], "image_id x y w h")
    split_table = None
    if split_mode == "image":
        split_table = read_id_table(cub / "train_test_split.txt", 2, lambda v: int(v[0]),
                                    "image_id is_training_image")

    class_name = {cid: name for cid, (_, name) in classes.items()}
    class_id = {name: cid for cid, name in class_name.items()}
    split_of_class: dict[str, str] = {}
    if split_mode == "zero_shot":
        assert src.train_classes is not None and src.test_classes is not None
        known_from = str(cub / "classes.txt")
        split_of_class = _split_of_classes(read_class_list(src.train_classes, class_id, known_from),
                                           read_class_list(src.test_classes, class_id, known_from),
                                           src.train_classes, src.test_classes)

    seen_paths: dict[str, int] = {}
    rows: list[tuple[int, int, str, str]] = []  # (class id, images.txt line, split, image id)
    for image_id, (lineno, rel) in images.items():
        where = f"{cub / 'images.txt'} line {lineno}"
        if rel in seen_paths:
            raise DatasetBuildError(f"{where}: image {rel!r} already listed on line {seen_paths[rel]}")
        seen_paths[rel] = lineno
        for table, name in ((labels, "image_class_labels.txt"), (boxes, "bounding_boxes.txt")):
            if image_id not in table:
                raise DatasetBuildError(f"{cub / name} has no line for image id {image_id} ({where})")
        cid = labels[image_id][1]
        if cid not in class_name:
            raise DatasetBuildError(f"{cub / 'image_class_labels.txt'} line {labels[image_id][0]}: "
                                    f"class id {cid} is not in {cub / 'classes.txt'}")
        cls = class_name[cid]
        if rel.split("/")[0] != cls:
            raise DatasetBuildError(f"{where}: image {rel!r} is not in the folder of its class {cls!r} "
                                    f"({cub / 'image_class_labels.txt'} line {labels[image_id][0]})")
        if split_table is not None:
            if image_id not in split_table:
                raise DatasetBuildError(f"{cub / 'train_test_split.txt'} has no line for image id {image_id} ({where})")
            flag = split_table[image_id][1]
            if flag not in (0, 1):
                raise DatasetBuildError(f"{cub / 'train_test_split.txt'} line {split_table[image_id][0]}: "
                                        f"expected 0 or 1, found {flag}")
            split = "train" if flag == 1 else "test"
        else:
            split = split_of_class.get(cls, "")
        rows.append((cid, lineno, split, image_id))
    for table, name in ((labels, "image_class_labels.txt"), (boxes, "bounding_boxes.txt")):
        extra = sorted(set(table) - set(images))
        if extra:
            raise DatasetBuildError(f"{cub / name} line {table[extra[0]][0]}: image id {extra[0]} "
                                    f"is not in {cub / 'images.txt'}")

    result = BuildResult("birds", {})
    if split_mode == "zero_shot":
        unused = sorted({class_name[r[0]] for r in rows if not r[2]})
        if unused:
            n = sum(1 for r in rows if not r[2])
            result.warnings.append(f"{len(unused)} classes ({', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''}) "
                                   f"are in neither class list; their {n} images are left out")
    audio_base = audio_base_path if audio_base_path is not None else out_dir / "CUB_200_2011_audio" / "audio" / "0"
    for split in SPLITS:
        data = []
        for cid, lineno, _, image_id in sorted(r for r in rows if r[2] == split):
            rel = images[image_id][1]
            where = f"{cub / 'images.txt'} line {lineno}"
            if check_images and not (images_dir / rel).is_file():
                raise DatasetBuildError(f"{where}: image file {images_dir / rel} does not exist "
                                        "(pass --no-check_images to skip this check)")
            stem = rel[:-len(Path(rel).suffix)] if Path(rel).suffix else rel
            data.append({
                "image": rel,
                "class": class_name[cid],
                "text": read_captions(src.text_dir / f"{stem}.txt", captions_per_image, rel, where),
                "audio": [f"{stem}_{k}.wav" for k in range(captions_per_image)],
                "bbox": boxes[image_id][1],
            })
        if not data:
            raise DatasetBuildError(f"the {split} split of birds ({split_mode} mode) has no images")
        result.manifests[split] = {
            "image_feature_path": _feature_path(out_dir, split, feature_tag, root),
            "audio_base_path": portable_path(audio_base, root),
            "image_base_path": portable_path(images_dir, root),
            "data": data,
        }
    return result


# ---------------------------------------------------------------------------------------------------
# flowers: Oxford-102


@dataclass(frozen=True)
class FlowersSources:
    flowers_dir: Path
    labels_file: Path
    text_dir: Path
    train_classes: Path | None
    test_classes: Path | None
    setid_file: Path | None


def locate_flowers(raw: Path, *, labels_file=None, text_dir=None, train_classes=None, test_classes=None,
                   setid_file=None, split_mode: str = "zero_shot") -> FlowersSources:
    """Finds ``jpg/``, ``imagelabels.mat``, the captions and the class lists (or ``setid.mat``) under ``raw``.

    Captions: ``text_c10/`` or ``cvpr2016_flowers/text_c10/``; class lists in ``raw/``,
    ``raw/cvpr2016_flowers/`` or next to the captions.
    """
    raw = Path(raw)
    if not (raw / "jpg").is_dir():
        raise DatasetBuildError(f"{raw / 'jpg'} does not exist (expected the Oxford-102 image folder; "
                                "pass --raw to say where the flowers folder is)")
    labels = locate(labels_file, [raw / "imagelabels.mat"], "Oxford-102 labels", "--labels_file", is_dir=False)
    text = locate(text_dir, [raw / "text_c10", raw / "cvpr2016_flowers" / "text_c10"],
                  "caption (text_c10)", "--text_dir", is_dir=True)
    lists: list[Path | None] = [None, None]
    setid = None
    if split_mode == "zero_shot":
        folders = [raw, raw / "cvpr2016_flowers", text.parent]
        lists = [locate(given, [f / name for f in folders], "class list", flag, is_dir=False)
                 for given, name, flag in ((train_classes, "trainvalclasses.txt", "--train_classes"),
                                           (test_classes, "testclasses.txt", "--test_classes"))]
    else:
        setid = locate(setid_file, [raw / "setid.mat"], "Oxford-102 split", "--setid_file", is_dir=False)
    return FlowersSources(raw, labels, text, lists[0], lists[1], setid)


def _mat_vector(path: Path, key: str) -> np.ndarray:
    """A 1-D integer vector from a MATLAB file, e.g. ``labels`` of ``imagelabels.mat``."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a file that is not MATLAB v5
        raise DatasetBuildError(f"{path} is not a readable MATLAB file: {exc}") from None
    if key not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__"))
        raise DatasetBuildError(f"{path}: no variable '{key}' (found: {found})")
    vec = np.asarray(mat[key]).ravel()
    if vec.size == 0 or not np.all(np.isfinite(vec)) or not np.all(vec == np.round(vec)) or vec.min() < 1:
        raise DatasetBuildError(f"{path}: '{key}' must be a non-empty vector of integers >= 1")
    return vec.astype(np.int64)


_FLOWER_CLASS = re.compile(r"^class_(\d{5})$")


def build_flowers(src: FlowersSources, *, out_dir: Path, split_mode: str = "zero_shot",
                  audio_base_path: Path | None = None, feature_tag: str = "googlenet_caffe",
                  check_images: bool = True, captions_per_image: int = CAPTIONS_PER_IMAGE,
                  root: Path | None = None) -> BuildResult:
    """Flowers manifests: items ``{"img", "class", "text", "wav"}`` (docs/original.md#s1-2).

    Image ``i`` (1-based) is ``jpg/image_{i:05d}.jpg`` with class ``labels[i-1]`` of ``imagelabels.mat``.
    ``split_mode="zero_shot"``: the class lists (82/20 classes); ``"image"``: ``setid.mat``
    (train = ``trnid`` + ``valid``, test = ``tstid``). ``image_base_path`` is the flowers folder.
    """
    if split_mode not in SPLIT_MODES:
        raise DatasetBuildError(f"split mode {split_mode!r} is not one of {SPLIT_MODES}")
    labels = _mat_vector(src.labels_file, "labels")
    present = sorted(set(labels.tolist()))
    if split_mode == "zero_shot":
        assert src.train_classes is not None and src.test_classes is not None
        known = [f"class_{c:05d}" for c in present]
        known_from = f"{src.labels_file} (classes {present[0]}..{present[-1]})"
        lists = []
        for path in (src.train_classes, src.test_classes):
            for lineno, name in _lines(path):
                if not _FLOWER_CLASS.match(name):
                    raise DatasetBuildError(f"{path} line {lineno}: expected a class like 'class_00001', found {name!r}")
            lists.append(read_class_list(path, known, known_from))
        by_class = _split_of_classes(lists[0], lists[1], src.train_classes, src.test_classes)
        split_of = {i: by_class.get(f"class_{c:05d}", "") for i, c in enumerate(labels.tolist(), 1)}
    else:
        assert src.setid_file is not None
        split_of = dict.fromkeys(range(1, len(labels) + 1), "")
        for key, split in (("trnid", "train"), ("valid", "train"), ("tstid", "test")):
            for i in _mat_vector(src.setid_file, key).tolist():
                if i > len(labels):
                    raise DatasetBuildError(f"{src.setid_file}: '{key}' names image {i}, but "
                                            f"{src.labels_file} has only {len(labels)} images")
                if split_of[i]:
                    raise DatasetBuildError(f"{src.setid_file}: image {i} is in more than one of trnid/valid/tstid")
                split_of[i] = split

    result = BuildResult("flowers", {})
    left_out = [i for i, s in split_of.items() if not s]
    if left_out:
        result.warnings.append(f"{len(left_out)} images (e.g. image_{left_out[0]:05d}) are in no split; "
                               "they are left out")
    audio_base = audio_base_path if audio_base_path is not None else out_dir / "audio"
    for split in SPLITS:
        data = []
        for c, i in sorted((int(labels[i - 1]), i) for i, s in split_of.items() if s == split):
            img = f"jpg/image_{i:05d}.jpg"
            where = f"{src.labels_file} entry {i}"
            if check_images and not (src.flowers_dir / img).is_file():
                raise DatasetBuildError(f"{where}: image file {src.flowers_dir / img} does not exist "
                                        "(pass --no-check_images to skip this check)")
            cls_dir = f"class_{c:05d}"
            data.append({
                "img": img,
                "class": str(c),
                "text": read_captions(src.text_dir / cls_dir / f"image_{i:05d}.txt", captions_per_image, img, where),
                "wav": [f"{cls_dir}/image_{i:05d}_{k}.wav" for k in range(captions_per_image)],
            })
        if not data:
            raise DatasetBuildError(f"the {split} split of flowers ({split_mode} mode) has no images")
        result.manifests[split] = {
            "image_feature_path": _feature_path(out_dir, split, feature_tag, root),
            "audio_base_path": portable_path(audio_base, root),
            "image_base_path": portable_path(src.flowers_dir, root),
            "data": data,
        }
    return result


# ---------------------------------------------------------------------------------------------------
# places: Places Audio Caption metadata, 7 indoor classes


PLACES_KEYS = ("uttid", "speaker", "asr_text", "wav", "image")


def locate_places_metadata(raw: Path, train_metadata=None, test_metadata=None) -> tuple[Path, Path | None]:
    """The train and (if any) test metadata files; with neither given, looks in ``raw/metadata/`` for
    ``train.json`` + ``val.json`` (or ``test.json``), then ``train_split.json`` + ``val_split.json``.
    A test file of ``None`` means: split the train file by image."""
    if test_metadata is not None and train_metadata is None:
        raise DatasetBuildError("--test_metadata needs --train_metadata as well")
    if train_metadata is not None:
        train = locate(train_metadata, [], "train metadata", "--train_metadata", is_dir=False)
        test = locate(test_metadata, [], "test metadata", "--test_metadata", is_dir=False) if test_metadata else None
        return train, test
    meta = Path(raw) / "metadata"
    for train_name, test_names in (("train.json", ("val.json", "test.json")),
                                   ("train_split.json", ("val_split.json", "test_split.json"))):
        if (meta / train_name).is_file():
            return meta / train_name, next((meta / t for t in test_names if (meta / t).is_file()), None)
    raise DatasetBuildError(f"no Places metadata found (looked for {meta / 'train.json'} and "
                            f"{meta / 'train_split.json'}); pass --train_metadata [--test_metadata]")


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetBuildError(f"{path} is not a readable JSON file: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise DatasetBuildError(f"{path}: expected a JSON object with a 'data' list of entries")
    return raw


def _resolve_base(value: str | None, meta_path: Path, fallbacks: list[Path]) -> tuple[Path | None, list[Path], int]:
    """The first existing folder among the metadata value (absolute; or relative to the metadata file's
    folder, then to the working directory) and the fallbacks. Returns (found or None, everything tried,
    how many of the tried paths came from the metadata value)."""
    tried: list[Path] = []
    if value:
        p = Path(value)
        tried += [p] if p.is_absolute() else [meta_path.parent / p, Path(p)]
    n_meta = len(tried)
    tried += fallbacks
    return next((p for p in tried if p.is_dir()), None), tried, n_meta


def _places_entries(path: Path, raw: dict[str, Any], result: BuildResult) -> list[dict[str, Any]]:
    """Checked entries of the 7 classes, in file order; ``uttid`` duplicates are errors."""
    kept, outside, uttids = [], 0, {}
    for i, entry in enumerate(raw["data"]):
        where = f"{path} entry {i}"
        if not isinstance(entry, dict):
            raise DatasetBuildError(f"{where}: expected an object, found {type(entry).__name__}")
        for key in ("image", "wav", "asr_text"):
            if not isinstance(entry.get(key), str):
                raise DatasetBuildError(f"{where}: '{key}' must be a string (has: {', '.join(sorted(entry))})")
        image, wav = entry["image"], entry["wav"]
        parts = image.split("/")
        if len(parts) < 3 or len(parts[0]) != 1:
            raise DatasetBuildError(f"{where}: image {image!r} is not of the form 'letter/class/file.jpg'")
        if not wav.startswith("wavs/"):
            raise DatasetBuildError(f"{where}: wav {wav!r} does not start with 'wavs/'")
        if "uttid" in entry:
            if entry["uttid"] in uttids:
                raise DatasetBuildError(f"{where}: uttid {entry['uttid']!r} already used by entry {uttids[entry['uttid']]}")
            uttids[entry["uttid"]] = i
        if parts[1] not in PLACES_CLASSES:
            outside += 1
            continue
        kept.append({"_where": where, **{k: entry[k] for k in PLACES_KEYS if k in entry}})
    result.notes.append(f"{path}: kept {len(kept)} of {len(raw['data'])} entries "
                        f"({outside} outside the 7 classes)")
    return kept


def _one_per_image(entries: list[dict[str, Any]], taken: dict[str, str], result: BuildResult) -> list[dict[str, Any]]:
    """Keeps the first caption of each image (a manifest is one item per image); ``taken`` maps the
    images already used, also by the other split, to where."""
    out, dropped = [], []
    for e in entries:
        key = e["image"][2:]  # the loader's identity of an image (docs/original.md#s1-2)
        if key in taken:
            dropped.append(f"{e['_where']} (image already used by {taken[key]})")
            continue
        taken[key] = e["_where"]
        out.append(e)
    if dropped:
        result.warnings.append(f"{len(dropped)} entries repeat an image and are left out, e.g. {dropped[0]}")
    return out


def split_stratified(entries: list[dict[str, Any]], test_fraction: float, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Per class, ``round(test_fraction * n)`` images (at least 1 and at most n-1 where n >= 2) go to
    test, drawn with ``random.Random(seed)`` over the classes in ``PLACES_CLASSES`` order; each split
    keeps the input order."""
    if not 0.0 < test_fraction < 1.0:
        raise DatasetBuildError(f"--test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    rng = random.Random(seed)
    test_ids: set[int] = set()
    for cls in PLACES_CLASSES:
        idx = [i for i, e in enumerate(entries) if e["image"].split("/")[1] == cls]
        n_test = round(test_fraction * len(idx))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test_ids.update(rng.sample(idx, n_test))
    return {"train": [e for i, e in enumerate(entries) if i not in test_ids],
            "test": [e for i, e in enumerate(entries) if i in test_ids]}


def build_places(train_metadata: Path, test_metadata: Path | None, *, raw: Path, out_dir: Path,
                 image_base_path: Path | None = None, audio_base_path: Path | None = None,
                 test_fraction: float = 0.1, seed: int = 0, feature_tag: str = "googlenet_caffe",
                 check_images: bool = True, root: Path | None = None) -> BuildResult:
    """Places manifests: the metadata entries of the 7 classes of ``PLACES_CLASSES``, keys
    ``uttid, speaker, asr_text, wav, image`` kept as they are (docs/original.md#s1-2).

    The class is the folder after the letter folder (``b/bedroom/x.jpg`` → ``bedroom``). A train and a
    test (val) file give the two splits; a single file is split by image with :func:`split_stratified`.
    ``image_base_path``: the override, else the metadata's (resolved), else ``raw/data`` (the original's
    subset layout), ``raw/images``; the image is looked for at ``base/<class>/...`` (the subset layout,
    what the original read) and ``base/<letter>/<class>/...`` (the Places205 layout).
    ``audio_base_path``: the override, else the metadata's; since the loader drops ``wavs/`` from each
    ``wav``, a base that holds a ``wavs/`` folder is replaced by that folder.
    """
    result = BuildResult("places", {})
    metas = {"train": train_metadata, "test": test_metadata if test_metadata is not None else train_metadata}
    raws = {"train": _read_metadata(train_metadata)}
    raws["test"] = _read_metadata(test_metadata) if test_metadata is not None else raws["train"]
    taken: dict[str, str] = {}
    if test_metadata is None:
        entries = _one_per_image(_places_entries(train_metadata, raws["train"], result), taken, result)
        per_split = split_stratified(entries, test_fraction, seed)
        result.notes.append(f"split {train_metadata} by image: test fraction {test_fraction}, seed {seed}")
    else:
        per_split = {split: _one_per_image(_places_entries(metas[split], raws[split], result), taken, result)
                     for split in SPLITS}

    for split in SPLITS:
        meta_path = metas[split]
        items = sorted(per_split[split], key=lambda e: PLACES_CLASSES.index(e["image"].split("/")[1]))
        if not items:
            raise DatasetBuildError(f"the {split} split of places has no entries of the classes "
                                    f"{', '.join(PLACES_CLASSES)} (from {meta_path})")
        if image_base_path is not None:
            img_base, tried, n_meta = (image_base_path if image_base_path.is_dir() else None), [image_base_path], 1
        else:
            img_base, tried, n_meta = _resolve_base(raws[split].get("image_base_path"), meta_path,
                                                    [raw / "data", raw / "images"])
        if img_base is None:
            if check_images:
                raise DatasetBuildError(f"{meta_path}: no image folder found (tried {', '.join(map(str, tried))}); "
                                        "pass --image_base_path")
            img_base = tried[0]
        elif n_meta and img_base not in tried[:n_meta]:
            result.warnings.append(f"{meta_path}: image_base_path {raws[split]['image_base_path']!r} does not "
                                   f"exist here; using {img_base}")
        if check_images:
            for e in items:
                # The two places Manifest.image_path looks: the subset layout and the Places205 one, whose
                # letter folder is the class's first letter.
                image = e["image"][2:]
                if not ((img_base / image).is_file() or (img_base / image[0] / image).is_file()):
                    raise DatasetBuildError(f"{e['_where']}: image {e['image']!r} not found under {img_base} "
                                            f"(looked for {img_base / image} and {img_base / image[0] / image}; "
                                            "pass --no-check_images to skip this check)")
        if audio_base_path is not None:
            audio_base = audio_base_path
        else:
            found, tried, _ = _resolve_base(raws[split].get("audio_base_path"), meta_path, [])
            if found is None and (raw / "wavs").is_dir():
                found = raw
            if found is None:
                found = tried[0] if tried else out_dir / "wavs"  # written as is: the audio may come later
                result.warnings.append(f"{meta_path}: audio folder {found} does not exist (yet)")
            audio_base = found
        if (audio_base / "wavs").is_dir():
            audio_base = audio_base / "wavs"
        result.manifests[split] = {
            "image_feature_path": _feature_path(out_dir, split, feature_tag, root),
            "audio_base_path": portable_path(audio_base, root),
            "image_base_path": portable_path(img_base, root),
            "data": [{k: v for k, v in e.items() if k != "_where"} for e in items],
        }
    return result


# ---------------------------------------------------------------------------------------------------
# summary and writing


def summarize(dataset: str, manifest: dict[str, Any]) -> dict[str, int]:
    """Classes, images and captions of one manifest dict."""
    data = manifest["data"]
    if dataset == "places":
        classes = {e["image"].split("/")[1] for e in data}
        captions = len(data)
    else:
        classes = {e["class"] for e in data}
        captions = sum(len(e["text"]) for e in data)
    return {"classes": len(classes), "images": len(data), "captions": captions}


def write_manifests(manifests: dict[str, dict[str, Any]], out_dir: Path, dataset: str, *,
                    force: bool = False) -> dict[str, Path]:
    """Writes ``<out_dir>/<split>.json`` for every split, all or none.

    Existing manifests are an error unless ``force``. Each file is written to a temporary name in the
    same folder, read back with :func:`s2i.data.manifests.load_manifest` (so a manifest the pipeline cannot
    read is never installed), and only then renamed over the target.
    """
    out_dir = Path(out_dir)
    targets = {split: out_dir / f"{split}.json" for split in manifests}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not force:
        raise DatasetBuildError(f"{', '.join(existing)} already exist(s); pass --force to overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    try:
        for split, manifest in manifests.items():
            tmp = out_dir / f".{split}.json.tmp{os.getpid()}"
            temps[split] = tmp
            tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            load_manifest(tmp, dataset)
        for split, tmp in temps.items():
            os.replace(tmp, targets[split])
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
    return targets
