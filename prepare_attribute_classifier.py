"""Trains the shapes attribute classifier (colour and shape) that judges generated images, kept with the dataset.

    python prepare_attribute_classifier.py                          # ./data/shapes/attribute_classifier.pth
    python prepare_attribute_classifier.py --data_root data/shapes --force

Trains on the images of ``<data_root>/train.json``, scores the real images of ``test.json`` (the ceiling a
generator can reach) and writes one checkpoint dict (``s2i.evaluation.attribute_classifier``) atomically.
A second run reuses a checkpoint made with the same settings from the same images; ``--force`` retrains.
About 20 s on one CPU core for the 768 training images of the default dataset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from s2i.checkpoints import CheckpointError
from s2i.cli import run_cli
from s2i.config import option, parse_config, require
from s2i.data.manifests import DATA_ROOTS, load_manifest
from s2i.distributed import resolve_device
from s2i.evaluation.attribute_classifier import (
    TrainSettings,
    load_classifier,
    load_labelled_split,
    save_classifier,
    train_attribute_classifier,
)
from s2i.features.image_features import manifest_fingerprint

CHECKPOINT_NAME = "attribute_classifier.pth"


@dataclass
class AttributeClassifierConfig:
    data_root: str = option(DATA_ROOTS["shapes"], "shapes dataset folder with train.json and test.json")
    out: str | None = option(None, f"checkpoint to write (default: <data_root>/{CHECKPOINT_NAME})")
    epochs: int = option(TrainSettings.epochs, "passes over the training images")
    batch_size: int = option(TrainSettings.batch_size, "images per step")
    lr: float = option(TrainSettings.lr, "peak learning rate of the one-cycle schedule")
    width: int = option(TrainSettings.width, "channels of the first conv block (then 2x, 4x, 4x)")
    seed: int = option(TrainSettings.seed, "seed of the initial weights, the batch order and the augmentation")
    device: str = option("auto", "auto (cuda if available), cpu or cuda", choices=("auto", "cpu", "cuda"))
    num_threads: int = option(1, "CPU threads while training (1 gives the same weights on every machine; "
                              "0 leaves torch's default)")
    force: bool = option(False, "retrain even when an up-to-date classifier exists")

    def __post_init__(self) -> None:
        require([(self.epochs >= 1, "--epochs must be at least 1"), (self.batch_size >= 2, "--batch_size must be at least 2"),
                 (self.lr > 0, "--lr must be positive"), (self.width >= 1, "--width must be at least 1"),
                 (self.num_threads >= 0, "--num_threads must be 0 or more")])

    def settings(self) -> TrainSettings:
        return TrainSettings(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, width=self.width,
                             seed=self.seed)

    def checkpoint_path(self) -> Path:
        return Path(self.out) if self.out else Path(self.data_root) / CHECKPOINT_NAME


def _data_fingerprint(train_json: Path, test_json: Path) -> dict[str, Any]:
    """What the classifier was trained and scored on: each split's image list and file sizes."""
    out = {}
    for split, path in (("train", train_json), ("test", test_json)):
        fp = manifest_fingerprint(load_manifest(path, "shapes"))
        out[split] = {"num_images": fp["num_images"], "images_sha256": fp["images_sha256"]}
    return out


def _reusable(path: Path, settings: TrainSettings, data: dict[str, Any]) -> tuple[dict | None, str]:
    """The existing checkpoint's dict when it was made with these settings from these images; else why not."""
    if not path.exists():
        return None, "no checkpoint yet"
    try:
        _, ckpt = load_classifier(path)
    except CheckpointError as exc:
        return None, str(exc)
    old = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    new = asdict(settings)
    if old != new:
        return None, "settings changed: " + ", ".join(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))
    if ckpt.get("data") != data:
        return None, "the dataset's images changed"
    return ckpt, "up to date"


def _line(result: dict[str, Any]) -> str:
    return (f"colour {result['colour_accuracy']:.4f}, shape {result['shape_accuracy']:.4f}, "
            f"both {result['both_accuracy']:.4f} ({result['n']} images)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg, _ = parse_config(AttributeClassifierConfig, argv, __doc__.splitlines()[0])
    root = Path(cfg.data_root)
    train_json, test_json = root / "train.json", root / "test.json"
    path = cfg.checkpoint_path()
    settings = cfg.settings()
    data = _data_fingerprint(train_json, test_json)
    ckpt, why = _reusable(path, settings, data)
    if ckpt is not None and not cfg.force:
        summary = ckpt["summary"]
        print(f"attribute classifier {path}: up to date, reused (--force retrains); real test accuracy "
              f"{_line(summary['test'])}")
        return {"path": str(path), "reused": True, **summary}
    if path.exists() and not cfg.force:
        print(f"attribute classifier {path}: retraining ({why})")
    device = resolve_device(cfg.device)
    train = load_labelled_split(train_json, settings.input_size)
    test = load_labelled_split(test_json, settings.input_size)
    print(f"attribute classifier: training on {len(train[0])} images of {train_json} ({device})")
    model, summary = train_attribute_classifier(*train, settings, test=test, device=device,
                                                num_threads=cfg.num_threads or None, log=print)
    save_classifier(path, model, settings, summary, data)
    print(f"attribute classifier: real test accuracy (the ceiling for generated images) {_line(summary['test'])}; "
          f"blurred (σ 1 px) {_line(summary['test_blurred'])}; trained in {summary['seconds']}s → {path}")
    return {"path": str(path), "reused": False, **summary}


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
