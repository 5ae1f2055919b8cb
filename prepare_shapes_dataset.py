"""Builds the "shapes" dataset, the offline default: 256-px images of one coloured shape on grey, ten
captions each, and ``train.json``/``test.json`` manifests in the birds schema (docs/original.md#s1-2).

    python prepare_shapes_dataset.py                          # ./data/shapes, 960 images, 24 classes
    python prepare_shapes_dataset.py --split compositional    # hold some colour-shape pairs out of training

The next stages: ``python Audio_to_Image/text_to_speech.py --dataset shapes`` (spoken captions) and
``python prepare_image_features.py --dataset shapes`` (teacher features). A second run skips finished
work; a run with other settings refuses to touch an existing dataset unless ``--force``.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from s2i.cli import run_cli
from s2i.config import ConfigError, option, parse_config, to_dict
from s2i.data import shapes
from s2i.data.manifests import write_manifest
from s2i.files import atomic_write, portable_path, write_json_atomic


@dataclass
class ShapesConfig:
    out: str = option("./data/shapes", "dataset folder to write")
    num_images: int = option(960, "images in all (balanced over the 24 classes)")
    image_size: int = option(256, "side of the stored images in pixels (lower resolutions are derived by resizing)")
    test_fraction: float = option(0.2, "share of each class's images in the test split")
    captions_per_image: int = option(10, "captions per image (10, as CUB and Oxford-102)")
    split: str = option("image", "image: every class in both splits; compositional: the --holdout colour-shape "
                        "pairs appear in test only", choices=("image", "compositional"))
    holdout: str = option("red triangle, green square, blue circle, white triangle",
                          "colour-shape pairs held out of training by --split compositional")
    noise: float = option(3.0, "standard deviation of the pixel noise, in grey levels")
    seed: int = option(0, "seed of every drawing")
    feature_tag: str = option("efficientnet_lite0", "teacher name in the feature-file names the manifests point to")
    force: bool = option(False, "rebuild a dataset that was made with other settings")
    workers: int = option(0, "threads drawing images (0 = one per CPU); the files do not depend on it")
    progress: bool = option(True, "show progress bars")

    def __post_init__(self) -> None:
        if self.num_images < 2 * len(shapes.class_names()):
            raise ConfigError(f"--num_images must be at least {2 * len(shapes.class_names())} (two per class)")
        if not 0 < self.test_fraction < 1:
            raise ConfigError("--test_fraction must lie strictly between 0 and 1")
        if self.workers < 0:
            raise ConfigError("--workers must be >= 0")
        if self.image_size < 16 or self.captions_per_image < 1:
            raise ConfigError("--image_size must be at least 16 and --captions_per_image at least 1")
        shapes.parse_holdout(self.holdout)

    def generator_settings(self) -> dict:
        """What the images and captions depend on: a dataset made with other values is another dataset."""
        d = to_dict(self)
        for k in ("out", "force", "progress", "workers"):
            d.pop(k)
        return d


def _valid_png(path: Path, size: int) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
            return im.size == (size, size) and im.mode == "RGB"
    except Exception:  # any unreadable or truncated file is simply redrawn
        return False


def _check_existing(cfg: ShapesConfig, out: Path) -> bool:
    """True when the dataset is complete with these settings; an error when it was begun with others.

    ``generator.json`` is written before the first image, so even an interrupted build with other
    settings is recognised and never mixed with this one.
    """
    record = out / "generator.json"
    if record.exists():
        try:
            old = json.loads(record.read_text())
        except json.JSONDecodeError:
            old = None
        if old != cfg.generator_settings() and not cfg.force:
            raise ConfigError(
                f"{out} was made with other settings ({old}); pass --force to rebuild the dataset (later stages' "
                f"audio and features for it must then be rebuilt too), or choose another --out"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, cfg.generator_settings(), indent=1)
    manifests = [out / "train.json", out / "test.json"]
    return not cfg.force and all(p.exists() for p in manifests)


def build(cfg: ShapesConfig) -> dict:
    out = Path(cfg.out)
    t0 = time.time()
    complete = _check_existing(cfg, out)
    plan = shapes.class_plan(cfg.num_images, cfg.seed)
    holdout = shapes.parse_holdout(cfg.holdout) if cfg.split == "compositional" else ()
    train_idx, test_idx = shapes.split_indices(plan, cfg.test_fraction, cfg.seed, holdout)
    items: dict[int, dict] = {}
    to_draw: list[tuple[shapes.ShapeSample, int, Path]] = []
    for index in range(cfg.num_images):
        # Separate streams for the attributes/captions and for the pixels, so an image that is already on
        # disk need not be redrawn to get its captions right.
        rng = np.random.default_rng([cfg.seed, index, 0])
        sample = shapes.draw_sample(rng, *plan[index])
        caps = shapes.captions(sample, rng, cfg.captions_per_image)
        rel = f"{sample.class_name}/shape_{index:05d}.png"
        path = out / "images" / rel
        if cfg.force or not (path.exists() if complete else _valid_png(path, cfg.image_size)):
            to_draw.append((sample, index, path))
        stem = rel[: -len(".png")]
        items[index] = {
            "image": rel,
            "class": sample.class_name,
            "text": caps,
            "audio": [f"{stem}_{k}.wav" for k in range(cfg.captions_per_image)],
            "attributes": {"colour": sample.colour, "shape": sample.shape, "size": sample.size,
                           "position": sample.position, "rgb": list(sample.rgb), "background": sample.background},
        }

    def draw(job: tuple[shapes.ShapeSample, int, Path]) -> None:
        sample, index, path = job
        image = shapes.render(sample, np.random.default_rng([cfg.seed, index, 1]), cfg.image_size, cfg.noise)
        with atomic_write(path, durable=False) as fh:
            image.save(fh, format="PNG")

    # Pillow releases the GIL while it resizes and compresses, so threads draw in parallel; every image
    # depends on its index alone, so the files are the same for any number of workers.
    workers = cfg.workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in tqdm(pool.map(draw, to_draw), total=len(to_draw), desc="shapes", disable=not cfg.progress,
                      mininterval=1.0):
            pass
    drawn = len(to_draw)
    if not complete:
        for split, idx in (("train", train_idx), ("test", test_idx)):
            write_manifest(out / f"{split}.json", {
                "image_feature_path": portable_path(out / split / f"image_features_{cfg.feature_tag}.pickle"),
                "audio_base_path": portable_path(out / "audio"),
                "image_base_path": portable_path(out / "images"),
                "split": split,
                "classes": shapes.class_names(),
                "generator": cfg.generator_settings(),
                "data": [items[i] for i in idx],
            })
    summary = {
        "out": str(out), "images": cfg.num_images, "drawn": drawn, "train": len(train_idx), "test": len(test_idx),
        "classes_in_train": len({plan[i] for i in train_idx}), "classes_in_test": len({plan[i] for i in test_idx}),
        "manifests": "kept (already complete)" if complete else "written", "seconds": round(time.time() - t0, 1),
    }
    return summary


def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_config(ShapesConfig, argv, __doc__.splitlines()[0])
    summary = build(cfg)
    print(f"shapes: {summary['images']} images ({summary['drawn']} drawn, "
          f"{summary['images'] - summary['drawn']} already there), "
          f"{summary['train']} train / {summary['test']} test, {summary['classes_in_train']} classes in train, "
          f"{summary['classes_in_test']} in test; manifests {summary['manifests']} in {summary['out']} "
          f"({summary['seconds']}s)")
    return summary


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
