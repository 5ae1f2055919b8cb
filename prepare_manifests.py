"""Build train.json / test.json (docs/original.md#s1-2) from the raw public datasets, since the authors' split files are gone.

Birds (CUB-200-2011 + Reed et al.'s text_c10 and zero-shot class lists):
    python prepare_manifests.py --dataset birds --raw ./data/birds
Flowers (Oxford-102 + text_c10 and class lists):
    python prepare_manifests.py --dataset flowers --raw ./data/flowers
Places (Places Audio Caption metadata, 7 classes):
    python prepare_manifests.py --dataset places --raw ./data/Places_subset

Run from the repository root: paths inside it are written relative to it (``./data/...``), others
absolute. Existing manifests are kept unless ``--force``. Parsing rules: ``s2i/data/dataset_builders.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from s2i.cli import run_cli
from s2i.config import ConfigError, option, parse_config
from s2i.data import dataset_builders as db

DEFAULT_RAW = {"birds": "./data/birds", "flowers": "./data/flowers", "places": "./data/Places_subset"}


@dataclass
class PrepareConfig:
    dataset: str = option("birds", "which dataset to build", choices=tuple(DEFAULT_RAW))
    raw: str | None = option(None, "raw dataset folder (default: ./data/birds, ./data/flowers, ./data/Places_subset)")
    out_dir: str | None = option(None, "folder for train.json/test.json (default: the raw folder)")
    force: bool = option(False, "overwrite existing manifests")
    check_images: bool = option(True, "check that every listed image exists on disk")
    split_mode: str = option("zero_shot", "birds/flowers: zero_shot = the class lists (the paper's), "
                             "image = the official per-image split", choices=db.SPLIT_MODES)
    feature_tag: str = option("googlenet_caffe", "teacher tag in image_feature_path "
                              "(<out_dir>/<split>/image_features_<tag>.pickle)")
    audio_base_path: str | None = option(None, "audio root written into the manifests (default: birds "
                                         "<out_dir>/CUB_200_2011_audio/audio/0, flowers <out_dir>/audio, "
                                         "places the metadata's)")
    captions_per_image: int = option(db.CAPTIONS_PER_IMAGE, "birds/flowers: captions kept per image "
                                     "(the first N non-blank lines; fewer is an error)")
    # birds and flowers
    text_dir: str | None = option(None, "caption folder text_c10/ (default: searched under the raw folder)")
    train_classes: str | None = option(None, "zero-shot train class list (default: trainvalclasses.txt)")
    test_classes: str | None = option(None, "zero-shot test class list (default: testclasses.txt)")
    # birds
    cub_dir: str | None = option(None, "birds: the CUB_200_2011 folder (default: <raw>/CUB_200_2011)")
    # flowers
    labels_file: str | None = option(None, "flowers: imagelabels.mat (default: <raw>/imagelabels.mat)")
    setid_file: str | None = option(None, "flowers, --split_mode image: setid.mat (default: <raw>/setid.mat)")
    # places
    train_metadata: str | None = option(None, "places: train metadata JSON (default: <raw>/metadata/train.json)")
    test_metadata: str | None = option(None, "places: test metadata JSON (default: <raw>/metadata/val.json; "
                                       "without one, the train file is split)")
    image_base_path: str | None = option(None, "places: image root (default: the metadata's, else <raw>/data)")
    test_fraction: float = option(0.1, "places with one metadata file: fraction of each class's images for test")
    seed: int = option(0, "places with one metadata file: seed of the split")


# Flags that only mean something for some datasets; giving one elsewhere is a mistake worth reporting.
ONLY_FOR = {
    "split_mode": ("birds", "flowers"), "captions_per_image": ("birds", "flowers"), "text_dir": ("birds", "flowers"),
    "train_classes": ("birds", "flowers"), "test_classes": ("birds", "flowers"), "cub_dir": ("birds",),
    "labels_file": ("flowers",), "setid_file": ("flowers",), "train_metadata": ("places",),
    "test_metadata": ("places",), "image_base_path": ("places",), "test_fraction": ("places",),
    "seed": ("places",),
}


def _check_flags(cfg: PrepareConfig, given: frozenset[str]) -> None:
    for key in sorted(given):
        if key in ONLY_FOR and cfg.dataset not in ONLY_FOR[key]:
            raise ConfigError(f"--{key} applies to {' and '.join(ONLY_FOR[key])} only, not {cfg.dataset}")
    if cfg.split_mode == "image" and given & {"train_classes", "test_classes"}:
        raise ConfigError("--train_classes/--test_classes apply to --split_mode zero_shot only")
    if cfg.split_mode == "zero_shot" and "setid_file" in given:
        raise ConfigError("--setid_file applies to --split_mode image only")
    if cfg.captions_per_image < 1:
        raise ConfigError(f"--captions_per_image must be at least 1, got {cfg.captions_per_image}")


def _path(p: str | None) -> Path | None:
    return Path(p) if p is not None else None


def build(cfg: PrepareConfig, given: frozenset[str] = frozenset()) -> db.BuildResult:
    """Locates the raw files and runs the dataset's builder; ``given`` = the flags set explicitly."""
    raw = Path(cfg.raw or DEFAULT_RAW[cfg.dataset])
    if not raw.is_dir():
        raise db.DatasetBuildError(f"raw dataset folder {raw} does not exist (pass --raw)")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else raw
    common = dict(out_dir=out_dir, audio_base_path=_path(cfg.audio_base_path), feature_tag=cfg.feature_tag,
                  check_images=cfg.check_images)
    if cfg.dataset == "birds":
        src = db.locate_birds(raw, cub_dir=cfg.cub_dir, text_dir=cfg.text_dir, train_classes=cfg.train_classes,
                              test_classes=cfg.test_classes, split_mode=cfg.split_mode)
        return db.build_birds(src, split_mode=cfg.split_mode, captions_per_image=cfg.captions_per_image, **common)
    if cfg.dataset == "flowers":
        src = db.locate_flowers(raw, labels_file=cfg.labels_file, text_dir=cfg.text_dir,
                                train_classes=cfg.train_classes, test_classes=cfg.test_classes,
                                setid_file=cfg.setid_file, split_mode=cfg.split_mode)
        return db.build_flowers(src, split_mode=cfg.split_mode, captions_per_image=cfg.captions_per_image, **common)
    train_meta, test_meta = db.locate_places_metadata(raw, cfg.train_metadata, cfg.test_metadata)
    if test_meta is not None and given & {"test_fraction", "seed"}:
        raise ConfigError(f"--test_fraction/--seed split one metadata file, but there is a test file too ({test_meta})")
    return db.build_places(train_meta, test_meta, raw=raw, image_base_path=_path(cfg.image_base_path),
                           test_fraction=cfg.test_fraction, seed=cfg.seed, **common)


def main(argv: list[str] | None = None) -> dict[str, Path]:
    """Builds, writes and reports; returns ``{split: manifest path}``."""
    cfg, ns = parse_config(PrepareConfig, argv, __doc__.splitlines()[0])
    given = frozenset(vars(ns)) - {"config"}
    _check_flags(cfg, given)
    result = build(cfg, given)
    out_dir = Path(cfg.out_dir or cfg.raw or DEFAULT_RAW[cfg.dataset])
    paths = db.write_manifests(result.manifests, out_dir, cfg.dataset, force=cfg.force)
    for note in result.notes:
        print(note)
    for warning in result.warnings:
        print(f"warning: {warning}")
    for split, path in paths.items():
        s = db.summarize(cfg.dataset, result.manifests[split])
        print(f"{cfg.dataset} {split}: {s['classes']} classes, {s['images']} images, "
              f"{s['captions']} captions -> {path}")
    return paths


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
