"""Settings of the generator stage (StackGAN-v2, docs/original.md#s11-1 and §13).

The original read a global EasyDict (``miscc/config.py``), merged a YAML file over it and let a few
``main.py`` flags patch it. Here the same keys, with the same upper-case names, nesting and defaults,
form one typed dataclass, so the authors' YAML files parse unchanged; the ``main.py`` flags and ours
are lower-case fields of the same dataclass. The order is: defaults ← ``--cfg FILE`` (also spelled
``--config``) ← explicit flags (``--TRAIN.BATCH_SIZE 16`` reaches a YAML key too) ← the original's
override flags ``--data_dir``, ``--eval_net_g`` and ``--branch_num``, which now act only when given
(docs/original.md#bug-26). Unknown keys and wrong types are errors that name the key and the file.

    cfg, ns = load_gan_config(["--cfg", "StackGAN/cfg/birds_3stages.yml", "--audio_switch", "googlenet_caffe"])
    paths = resolve_paths(cfg)   # manifest, embedding pickle, run folder
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2i.config import ConfigError, _apply, _nest, build_parser, load_yaml, option, require
from s2i.data.manifests import DATASETS

OUTPUT_ROOT = Path("./output/StackGAN")

# main.py picked the dataset class by a substring of DATA_DIR, in this order (docs/original.md#s11-2); 'lsun'
# and 'imagenet' (upstream's unconditional datasets) have no speech embeddings and are not supported.
DATA_DIR_MARKERS = (("Places", "places"), ("flowers", "flowers"), ("birds", "birds"), ("shapes", "shapes"))

# s2i.precision.PRECISIONS, spelt out so that reading a config does not import torch.
PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass
class TreeConfig:
    BRANCH_NUM: int = option(3, "number of generator branches / resolutions (64·2^i pixels for i < BRANCH_NUM)")
    BASE_SIZE: int = option(64, "side of the first branch's images")


@dataclass
class TestConfig:
    B_EXAMPLE: bool = option(True, "evaluation writes grids per image (True) or single 256² PNGs (False)")
    SAMPLE_NUM: int = option(30000, "unused by the fork (upstream's number of samples)")
    TRUNC: float = option(0.5, "unused by the fork (truncation of the noise)")


@dataclass
class CoeffConfig:
    KL: float = option(2.0, "weight of the conditioning-augmentation KL term")
    UNCOND_LOSS: float = option(0.0, "weight of the unconditional D/G terms")
    CAL_LOSS: float = option(0.0, "class-aware loss: > 0 switches it on (its weight: see --cal_weight_mode)")
    COLOR_LOSS: float = option(0.0, "weight of the colour-consistency loss (0 = off)")


@dataclass
class TrainConfig:
    FLAG: bool = option(True, "True = train, False = evaluate (generate test images)")
    NET_G: str = option("", "generator checkpoint to resume from or to evaluate")
    NET_D: str = option("", "discriminator checkpoint prefix: NET_D + '<i>.pth'")
    BATCH_SIZE: int = option(64, "images per step")
    VIS_COUNT: int = option(64, "images in the sample grids")
    MAX_EPOCH: int = option(600, "epochs to train")
    SNAPSHOT_INTERVAL: int = option(2000, "iterations between checkpoints and sample grids")
    DISCRIMINATOR_LR: float = option(2e-4, "Adam learning rate of each discriminator")
    GENERATOR_LR: float = option(2e-4, "Adam learning rate of the generator")
    LOG_INTERVAL: int = option(10, "iterations between logged losses")
    COEFF: CoeffConfig = dataclasses.field(default_factory=CoeffConfig)


@dataclass
class GanBlockConfig:
    EMBEDDING_DIM: int = option(128, "size of the conditioning code c (ef_dim)")
    DF_DIM: int = option(64, "base width of the discriminators")
    GF_DIM: int = option(64, "base width of the generator (the first stage has 16·GF_DIM channels)")
    Z_DIM: int = option(100, "noise size")
    R_NUM: int = option(2, "residual blocks per upper generator stage")
    B_CONDITION: bool = option(True, "conditional GAN (the discriminators see c)")
    NETWORK_TYPE: str = option("default", "unused (upstream's network switch)")


@dataclass
class TextConfig:
    DIMENSION: int = option(1024, "size of the speech embeddings (must match the embedding pickle)")


@dataclass
class GanConfig:
    # --- the original's cfg keys (docs/original.md#s11-1), same names, nesting and defaults ---
    CONFIG_NAME: str = option("", "name of the preset, part of the default run-folder name")
    DATASET_NAME: str = option("birds", "informational; the dataset is chosen by --dataset or DATA_DIR")
    EMBEDDING_TYPE: str = option("cnn-rnn", "informational")
    DATA_DIR: str = option("", "dataset folder holding train.json, test.json and {train,test}/ pickles")
    GPU_ID: str = option("0", "unused; the device comes from --device and --local_rank")
    CUDA: bool = option(True, "False keeps --device auto on the CPU (no longer forced True)")
    WORKERS: int = option(6, "data-loader worker processes (capped at the CPU count)")
    PROJECT_ROOT: str = option(".", "unused")
    BIRDS_DATA_ROOT: str = option(".", "unused")
    BIRDS_EMBEDDING_ROOT: str = option(".", "unused")
    INCEPTION_CUB: bool = option(False, "unused")
    TREE: TreeConfig = dataclasses.field(default_factory=TreeConfig)
    TEST: TestConfig = dataclasses.field(default_factory=TestConfig)
    TRAIN: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    GAN: GanBlockConfig = dataclasses.field(default_factory=GanBlockConfig)
    TEXT: TextConfig = dataclasses.field(default_factory=TextConfig)
    # --- main.py's flags (docs/original.md#s13) ---
    local_rank: int = option(0, "process index on this node; torchrun's LOCAL_RANK takes precedence",
                             flags=("--local-rank",))
    data_dir: str = option("", "overrides DATA_DIR when given (README: ./data/birds)")
    my_dataset: bool = option(False, "unused; kept so old commands parse (the original's path was broken)")
    asr_flag: bool = option(False, "unused; only upstream's char-CNN-RNN dataset read ASR features")
    audio_switch: str = option("", "tag of the embedding pickle: <split>/audio_features_<audio_switch>.pickle")
    output_dir: str = option("", "run name under ./output/StackGAN/ (default <dataset>_<CONFIG_NAME>_<time>)")
    distributed: bool = option(False, "train with DistributedDataParallel (launch with torchrun)")
    eval_net_g: str = option("", "generator checkpoint to evaluate; overrides TRAIN.NET_G when given")
    branch_num: int | None = option(None, "overrides TREE.BRANCH_NUM when given (the original always did, "
                                    "with 3)")
    # --- new in this reproduction ---
    seed: int = option(100, "seed of initialisation, noise and every random choice of the data "
                       "(the original computed 100 but never applied it)", flags=("--manualSeed",))
    device: str = option("auto", "auto = cuda when available (and CUDA is True), else cpu",
                         choices=("auto", "cpu", "cuda"))
    dataset: str | None = option(None, "manifest schema; default from DATA_DIR as the original did "
                                 "('Places', 'flowers', 'birds', 'shapes')", choices=DATASETS)
    split_json: str | None = option(None, "manifest to read instead of <DATA_DIR>/{train,test}.json")
    embedding_pickle: str | None = option(None, "embedding pickle to read instead of "
                                          "<DATA_DIR>/<split>/audio_features_<audio_switch>.pickle")
    resume: str | None = option(None, "checkpoint to continue training from (ours, or the authors' netG_<N>.pth)")
    max_steps: int | None = option(None, "stop after this many iterations in total (for short CPU runs)")
    embedding_norm: bool = option(False, "ours: standardise the speech embeddings with the training set's "
                                  "per-dimension mean and std inside G (stored in the checkpoint); off = the paper")
    ema_decay: float = option(0.999, "decay of the generator's exponential moving average")
    fixed_ema_bug: bool = option(True, "the live generator keeps its own weights after a snapshot (False = the "
                                 "original's bug: it continues from the EMA weights)")
    cal_weight_mode: str = option("switch", "switch = CAL_LOSS > 0 turns the class-aware loss on with weight 1 "
                                  "(the original); coefficient = multiply it by CAL_LOSS",
                                  choices=("switch", "coefficient"))
    eval_bbox_crop: bool = option(False, "crop test images to their bounding box too (upstream does; the fork "
                                  "does not)")
    aux_class_weight: float = option(0.0, "ours: weight of an AC-GAN auxiliary class loss (each D also classifies "
                                     "real images; G is pushed to draw its caption's class); 0 = off, the paper")
    teacher_weight: float = option(0.0, "ours: weight of a teacher loss on the last branch: the frozen teacher of "
                                   "stage B (EfficientNet-Lite0) should see in each generated image the pooled "
                                   "features of its caption's real image; 0 = off, the paper")
    teacher_layers: str = option("head,stage4:max", "EfficientNet-Lite0 layers of the teacher loss "
                                 "(as prepare_image_features.py --layers)")
    teacher_size: int = option(64, "side the images are resized to for the teacher loss")
    cache_images: bool = option(False, "ours: keep the decoded training images in memory after the first epoch "
                                "(same samples, less time; for small datasets such as shapes)")
    eval_samples_per_caption: int = option(1, "images generated per test caption in evaluation")
    precision: str = option("fp32", "arithmetic of G's and every D's passes in training and generation: fp32 (the "
                            "paper), bf16 (CUDA, or a CPU with native bf16), fp16 (CUDA only, with a gradient "
                            "scaler), auto = bf16 where native, else fp32; weights, optimizer state, moving average "
                            "and losses stay float32 (s2i/precision.py)", choices=PRECISIONS)
    channels_last: bool = option(False, "keep G's and every D's convolution weights and images in channels-last "
                                 "(NHWC) memory order (same model, other kernels; see benchmarks/gan_step.py)")
    progress: bool = option(True, "show progress bars")
    tensorboard: bool = option(True, "also log to TensorBoard when it is installed")

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.TREE.BRANCH_NUM <= 3, f"TREE.BRANCH_NUM must be 1, 2 or 3, got {self.TREE.BRANCH_NUM}"),
            (self.branch_num is None or 1 <= self.branch_num <= 3,
             f"--branch_num must be 1, 2 or 3, got {self.branch_num}"),
            (self.TREE.BASE_SIZE >= 4 and self.TREE.BASE_SIZE % 4 == 0,
             f"TREE.BASE_SIZE must be a positive multiple of 4, got {self.TREE.BASE_SIZE}"),
            (self.TRAIN.BATCH_SIZE >= 1, "TRAIN.BATCH_SIZE must be at least 1"),
            (self.TRAIN.SNAPSHOT_INTERVAL >= 1, "TRAIN.SNAPSHOT_INTERVAL must be at least 1"),
            (self.TRAIN.LOG_INTERVAL >= 1, "TRAIN.LOG_INTERVAL must be at least 1"),
            (self.TRAIN.MAX_EPOCH >= 0, "TRAIN.MAX_EPOCH may not be negative"),
            (self.max_steps is None or self.max_steps >= 0, "--max_steps may not be negative"),
            (0.0 <= self.ema_decay < 1.0, "--ema_decay must lie in [0, 1)"),
            (self.seed >= 0, f"--seed must not be negative, got {self.seed}"),
            (self.aux_class_weight >= 0, f"--aux_class_weight may not be negative, got {self.aux_class_weight}"),
            (self.teacher_weight >= 0, f"--teacher_weight may not be negative, got {self.teacher_weight}"),
            (self.teacher_size >= 32, f"--teacher_size must be at least 32 (EfficientNet-Lite0), got {self.teacher_size}"),
            (self.eval_samples_per_caption >= 1, "--eval_samples_per_caption must be at least 1"),
            (self.TEXT.DIMENSION >= 1 and self.GAN.EMBEDDING_DIM >= 1 and self.GAN.Z_DIM >= 1,
             "TEXT.DIMENSION, GAN.EMBEDDING_DIM and GAN.Z_DIM must be positive"),
        ]
        require(checks)

    @property
    def imsize(self) -> int:
        """Side of the largest images: ``BASE_SIZE · 2^(BRANCH_NUM − 1)`` (256 for the paper)."""
        return self.TREE.BASE_SIZE * 2 ** (self.TREE.BRANCH_NUM - 1)


def dataset_from_data_dir(data_dir: str) -> str | None:
    """The dataset ``main.py`` chose for a DATA_DIR (by substring, docs/original.md#s11-2), or None.

    The original's case-sensitive test comes first; a case-insensitive one (``./data/places``) second.
    """
    for fold in (False, True):
        text = data_dir.lower() if fold else data_dir
        for marker, name in DATA_DIR_MARKERS:
            if (marker.lower() if fold else marker) in text:
                return name
    return None


def _finish(cfg: GanConfig, where: str) -> GanConfig:
    """Applies the override flags and derives ``dataset``; the result is the effective config."""
    changes: dict[str, Any] = {}
    if cfg.data_dir:
        changes["DATA_DIR"] = cfg.data_dir
    if cfg.branch_num is not None:
        changes["TREE"] = {"BRANCH_NUM": cfg.branch_num}
    if cfg.eval_net_g:
        changes["TRAIN"] = {"NET_G": cfg.eval_net_g}
    cfg = _apply(cfg, changes, where)
    if not cfg.DATA_DIR and not (cfg.split_json and cfg.embedding_pickle):
        raise ConfigError("no data folder: set DATA_DIR in the --cfg file or pass --data_dir")
    if cfg.dataset is None:
        found = dataset_from_data_dir(cfg.DATA_DIR)
        if found is None:
            raise ConfigError(
                f"cannot tell the dataset from DATA_DIR {cfg.DATA_DIR!r} (it names none of 'Places', 'flowers', "
                f"'birds', 'shapes'); pass --dataset {{{','.join(DATASETS)}}}"
            )
        cfg = dataclasses.replace(cfg, dataset=found)
    return cfg


def load_gan_config(argv: list[str] | None = None, description: str = "StackGAN-v2 generator stage"
                    ) -> tuple[GanConfig, Any]:
    """Defaults ← ``--cfg``/``--config`` YAML ← explicit flags ← override flags.

    Args:
        argv: command-line arguments (None = ``sys.argv[1:]``).
        description: the ``--help`` headline.

    Returns:
        ``(cfg, namespace)``: the effective config (DATA_DIR, TREE.BRANCH_NUM, TRAIN.NET_G already
        overridden; ``dataset`` resolved) and the raw namespace, holding only the flags given.

    Exits through ``argparse`` (status 2) with a message naming the key and the file on a bad setting.
    """
    parser = build_parser(GanConfig, description)
    # main.py's spelling of --config.
    parser.add_argument("--cfg", dest="config", metavar="FILE", help="YAML file of settings (same as --config)")
    ns = parser.parse_args(argv)
    try:
        cfg = GanConfig()
        if getattr(ns, "config", None):
            cfg = _apply(cfg, load_yaml(ns.config), str(ns.config))
        explicit = {k: v for k, v in vars(ns).items() if k != "config"}
        cfg = _apply(cfg, _nest(explicit), "command line")
        cfg = _finish(cfg, "command line")
    except ConfigError as exc:
        parser.error(str(exc))
    return cfg, ns


def device_name(cfg: GanConfig) -> str:
    """The name to hand :func:`s2i.distributed.resolve_device`: ``--device`` when explicit, else ``cuda``
    when available and ``CUDA`` is True, else ``cpu`` (the YAML's ``CUDA: False`` keeps ``auto`` on the CPU)."""
    if cfg.device != "auto":
        return cfg.device
    import torch

    return "cuda" if cfg.CUDA and torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class GanPaths:
    """Where the generator stage reads and writes (docs/original.md#s1-1, §11.2, §11.6)."""

    data_root: Path
    split: str  # 'train' when TRAIN.FLAG, else 'test'
    manifest: Path  # <DATA_DIR>/<split>.json
    embeddings: Path  # <DATA_DIR>/<split>/audio_features_<audio_switch>.pickle
    output_root: Path  # ./output/StackGAN/<output_dir or <dataset>_<CONFIG_NAME>_<timestamp>>


def resolve_paths(cfg: GanConfig, timestamp: str | None = None) -> GanPaths:
    """The data and output paths of a config.

    Args:
        cfg: an effective config from :func:`load_gan_config`.
        timestamp: for the default run name; None = now, as ``%Y_%m_%d_%H_%M_%S`` (the original's format).
    """
    root = Path(cfg.DATA_DIR)
    split = "train" if cfg.TRAIN.FLAG else "test"
    manifest = Path(cfg.split_json) if cfg.split_json else root / f"{split}.json"
    embeddings = (Path(cfg.embedding_pickle) if cfg.embedding_pickle
                  else root / split / f"audio_features_{cfg.audio_switch}.pickle")
    if cfg.output_dir:
        name = os.path.expanduser(cfg.output_dir)
    else:
        stamp = timestamp or datetime.datetime.now().strftime("%Y_%m_%d_%H_%M_%S")
        name = f"{cfg.dataset}_{cfg.CONFIG_NAME or 'default'}_{stamp}"
    return GanPaths(data_root=root, split=split, manifest=manifest, embeddings=embeddings,
                    output_root=OUTPUT_ROOT / name)
