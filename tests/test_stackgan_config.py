"""StackGAN/config.py: the original's cfg keys and YAML files (docs/original.md#s11-1), main.py's flags (docs/original.md#s13)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from s2i.config import from_dict, to_dict
from s2i.distributed import resolve_device
from StackGAN.config import (
    GanConfig,
    dataset_from_data_dir,
    device_name,
    load_gan_config,
    resolve_paths,
)

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "StackGAN" / "cfg"

README_TRAIN = ("--cfg ./StackGAN/cfg/birds_3stages.yml --output_dir birds_speech_encoder "
                "--audio_switch googlenet_caffe --data_dir ./data/birds --branch_num 3").split()
README_EVAL = [*README_TRAIN[2:], "--cfg", "./StackGAN/cfg/eval_birds.yml",
               "--eval_net_g", "./output/StackGAN/birds_speech_encoder/Model/netG_220000.pth"]

# docs/original.md#s11-1, Default column.
DEFAULTS = {
    "CONFIG_NAME": "", "DATASET_NAME": "birds", "EMBEDDING_TYPE": "cnn-rnn", "DATA_DIR": "", "GPU_ID": "0",
    "WORKERS": 6, "CUDA": True, "PROJECT_ROOT": ".", "BIRDS_DATA_ROOT": ".", "BIRDS_EMBEDDING_ROOT": ".",
    "INCEPTION_CUB": False,
    "TREE.BRANCH_NUM": 3, "TREE.BASE_SIZE": 64,
    "TEST.B_EXAMPLE": True, "TEST.SAMPLE_NUM": 30000, "TEST.TRUNC": 0.5,
    "TRAIN.FLAG": True, "TRAIN.NET_G": "", "TRAIN.NET_D": "", "TRAIN.BATCH_SIZE": 64, "TRAIN.VIS_COUNT": 64,
    "TRAIN.MAX_EPOCH": 600, "TRAIN.SNAPSHOT_INTERVAL": 2000, "TRAIN.DISCRIMINATOR_LR": 2e-4,
    "TRAIN.GENERATOR_LR": 2e-4, "TRAIN.LOG_INTERVAL": 10,
    "TRAIN.COEFF.KL": 2.0, "TRAIN.COEFF.UNCOND_LOSS": 0.0, "TRAIN.COEFF.CAL_LOSS": 0.0,
    "TRAIN.COEFF.COLOR_LOSS": 0.0,
    "GAN.EMBEDDING_DIM": 128, "GAN.DF_DIM": 64, "GAN.GF_DIM": 64, "GAN.Z_DIM": 100, "GAN.R_NUM": 2,
    "GAN.B_CONDITION": True, "GAN.NETWORK_TYPE": "default",
    "TEXT.DIMENSION": 1024,
}

# docs/original.md#s11-1, birds_3stages.yml column (an empty cell keeps the default).
BIRDS = {
    **DEFAULTS,
    "CONFIG_NAME": "3stages", "DATA_DIR": "./data/birds", "WORKERS": 8, "TRAIN.BATCH_SIZE": 24,
    "TRAIN.MAX_EPOCH": 10000, "TRAIN.SNAPSHOT_INTERVAL": 5000, "TRAIN.COEFF.UNCOND_LOSS": 1.0,
    "TRAIN.COEFF.CAL_LOSS": 50.0, "TRAIN.LOG_INTERVAL": 100,
}

EVAL_BIRDS = {
    "CONFIG_NAME": "3stages", "DATASET_NAME": "birds", "EMBEDDING_TYPE": "cnn-rnn", "DATA_DIR": "./data/birds",
    "GPU_ID": "0", "WORKERS": 8, "TREE.BRANCH_NUM": 3, "TEST.B_EXAMPLE": False, "TRAIN.FLAG": False,
    "TRAIN.BATCH_SIZE": 24, "GAN.EMBEDDING_DIM": 128, "TEXT.DIMENSION": 1024,
}


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check(cfg, expected: dict) -> None:
    for key, value in expected.items():
        got = _get(cfg, key)
        assert got == value and type(got) is type(value), (key, got, value)


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        load_gan_config(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    return path


# --- the original's keys and files -----------------------------------------------------------------


def test_defaults_are_the_originals():
    _check(GanConfig(), DEFAULTS)
    # Every original key is a field (nothing extra among the upper-case names, nothing missing).
    upper = {k for k in DEFAULTS}
    flat = set()

    def walk(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            elif f.name.isupper():
                flat.add(prefix + f.name)

    walk(GanConfig())
    assert flat == upper


def test_birds_yaml_gives_every_value_of_its_column():
    cfg, _ = load_gan_config(["--cfg", str(CFG / "birds_3stages.yml")])
    _check(cfg, BIRDS)
    assert cfg.dataset == "birds" and cfg.imsize == 256


@pytest.mark.parametrize("name, branches", [("eval_birds.yml", 3), ("eval_places.yml", 2)])
def test_eval_yamls(name, branches):
    cfg, _ = load_gan_config(["--cfg", str(CFG / name)])
    _check(cfg, {**EVAL_BIRDS, "TREE.BRANCH_NUM": branches})
    assert cfg.TRAIN.NET_G.endswith("netG_220000.pth")
    assert cfg.TRAIN.NET_D == ""


@pytest.mark.parametrize("name, dataset, branches", [
    ("flowers_3stages.yml", "flowers", 3), ("places_2stages.yml", "places", 2), ("shapes_cpu.yml", "shapes", 2),
])
def test_our_presets(name, dataset, branches):
    cfg, _ = load_gan_config(["--cfg", str(CFG / name)])
    assert cfg.dataset == dataset and cfg.DATASET_NAME == dataset
    assert cfg.TREE.BRANCH_NUM == branches and cfg.TRAIN.FLAG
    assert cfg.TRAIN.COEFF.CAL_LOSS == 50.0 and cfg.TRAIN.COEFF.UNCOND_LOSS == 1.0


def test_shapes_preset_is_cpu_sized():
    cfg, _ = load_gan_config(["--cfg", str(CFG / "shapes_cpu.yml")])
    assert cfg.imsize == 128 and cfg.GAN.GF_DIM <= 32 and cfg.GAN.DF_DIM <= 32
    assert 16 <= cfg.TRAIN.BATCH_SIZE <= 24 and cfg.DATA_DIR == "./data/shapes"
    assert cfg.TEXT.DIMENSION == 1360  # the default EfficientNet-Lite0 teacher (head + max-pooled stage 4)


def test_scientific_notation_is_a_float(tmp_path):
    path = _yaml(tmp_path, "DATA_DIR: ./data/birds\nTRAIN:\n  DISCRIMINATOR_LR: 2e-4\n  GENERATOR_LR: 1E-3\n")
    cfg, _ = load_gan_config(["--cfg", str(path)])
    assert cfg.TRAIN.DISCRIMINATOR_LR == 2e-4 and cfg.TRAIN.GENERATOR_LR == 1e-3
    assert type(cfg.TRAIN.DISCRIMINATOR_LR) is float


# --- strictness --------------------------------------------------------------------------------------


def test_unknown_key_names_key_and_file(tmp_path, capsys):
    path = _yaml(tmp_path, "DATA_DIR: ./data/birds\nTRAIN:\n  COEFF:\n    CAL_LOS: 50.0\n")
    err = _error(["--cfg", str(path)], capsys)
    assert "TRAIN.COEFF.CAL_LOS" in err and str(path) in err


def test_wrong_type_names_key_and_file(tmp_path, capsys):
    path = _yaml(tmp_path, "DATA_DIR: ./data/birds\nTRAIN:\n  BATCH_SIZE: 24.5\n")
    err = _error(["--cfg", str(path)], capsys)
    assert "TRAIN.BATCH_SIZE" in err and str(path) in err and "int" in err
    path = _yaml(tmp_path, "GPU_ID: 0\n")  # the original's files quote it: a string
    err = _error(["--cfg", str(path), "--data_dir", "./data/birds"], capsys)
    assert "GPU_ID" in err and str(path) in err


def test_missing_config_file(capsys):
    err = _error(["--cfg", "no/such.yml"], capsys)
    assert "no/such.yml" in err


def test_misspelt_flag_is_an_error(capsys):
    _error(["--cfg", str(CFG / "birds_3stages.yml"), "--branch_nu", "2"], capsys)


# --- flags ------------------------------------------------------------------------------------------


def test_readme_train_command():
    cfg, ns = load_gan_config(README_TRAIN)
    _check(cfg, {**BIRDS, "DATA_DIR": "./data/birds"})
    assert cfg.output_dir == "birds_speech_encoder" and cfg.audio_switch == "googlenet_caffe"
    assert cfg.branch_num == 3 and cfg.dataset == "birds"
    assert ns.config == "./StackGAN/cfg/birds_3stages.yml"
    paths = resolve_paths(cfg)
    assert paths.split == "train"
    assert paths.manifest == Path("data/birds/train.json")
    assert paths.embeddings == Path("data/birds/train/audio_features_googlenet_caffe.pickle")
    assert paths.output_root == Path("output/StackGAN/birds_speech_encoder")


def test_readme_eval_command():
    cfg, _ = load_gan_config(README_EVAL)
    _check(cfg, EVAL_BIRDS)
    assert cfg.TRAIN.NET_G == "./output/StackGAN/birds_speech_encoder/Model/netG_220000.pth"
    paths = resolve_paths(cfg)
    assert paths.split == "test" and paths.manifest == Path("data/birds/test.json")
    assert paths.embeddings == Path("data/birds/test/audio_features_googlenet_caffe.pickle")


def test_eval_net_g_overrides_only_when_given():
    cfg, _ = load_gan_config(["--cfg", str(CFG / "eval_birds.yml")])
    assert cfg.TRAIN.NET_G == "./output/StackGAN/birds_speech_encoder/Model/netG_220000.pth"
    cfg, _ = load_gan_config(["--cfg", str(CFG / "eval_birds.yml"), "--eval_net_g", "x/netG_5.pth"])
    assert cfg.TRAIN.NET_G == "x/netG_5.pth"


def test_branch_num_overrides_only_when_given():
    places = str(CFG / "eval_places.yml")
    cfg, _ = load_gan_config(["--cfg", places])
    assert cfg.TREE.BRANCH_NUM == 2 and cfg.branch_num is None and cfg.imsize == 128
    cfg, _ = load_gan_config(["--cfg", places, "--branch_num", "3"])
    assert cfg.TREE.BRANCH_NUM == 3 and cfg.imsize == 256
    cfg, _ = load_gan_config(["--cfg", places, "--TREE.BRANCH_NUM", "1"])
    assert cfg.TREE.BRANCH_NUM == 1
    # --branch_num is main.py's override and wins over the YAML-key flag.
    cfg, _ = load_gan_config(["--cfg", places, "--TREE.BRANCH_NUM", "1", "--branch_num", "2"])
    assert cfg.TREE.BRANCH_NUM == 2


def test_branch_num_range(capsys):
    err = _error(["--cfg", str(CFG / "birds_3stages.yml"), "--branch_num", "4"], capsys)
    assert "branch_num" in err


def test_config_spelling_and_yaml_key_flags():
    cfg, _ = load_gan_config(["--config", str(CFG / "birds_3stages.yml"), "--TRAIN.BATCH_SIZE", "4",
                              "--TRAIN.COEFF.CAL_LOSS", "1", "--no-GAN.B_CONDITION", "--WORKERS", "0"])
    assert cfg.TRAIN.BATCH_SIZE == 4 and cfg.TRAIN.COEFF.CAL_LOSS == 1.0 and not cfg.GAN.B_CONDITION
    assert cfg.WORKERS == 0 and cfg.TRAIN.MAX_EPOCH == 10000


def test_seed_and_its_original_name():
    cfg, _ = load_gan_config(["--cfg", str(CFG / "birds_3stages.yml")])
    assert cfg.seed == 100
    cfg, _ = load_gan_config(["--cfg", str(CFG / "birds_3stages.yml"), "--manualSeed", "7"])
    assert cfg.seed == 7
    cfg, _ = load_gan_config(["--cfg", str(CFG / "birds_3stages.yml"), "--seed", "8"])
    assert cfg.seed == 8


def test_original_flags_accepted():
    cfg, _ = load_gan_config([*README_TRAIN, "--local_rank=1", "--my_dataset", "--asr_flag", "--distributed"])
    assert cfg.local_rank == 1 and cfg.my_dataset and cfg.asr_flag and cfg.distributed
    cfg, _ = load_gan_config([*README_TRAIN, "--local-rank=2"])
    assert cfg.local_rank == 2


def test_our_defaults():
    cfg, _ = load_gan_config(README_TRAIN)
    assert cfg.device == "auto" and cfg.resume is None and cfg.max_steps is None
    assert cfg.ema_decay == 0.999 and cfg.fixed_ema_bug and cfg.cal_weight_mode == "switch"
    assert not cfg.eval_bbox_crop and cfg.eval_samples_per_caption == 1
    assert cfg.CUDA  # kept, not forced: CUDA False keeps --device auto on the CPU
    off, _ = load_gan_config([*README_TRAIN, "--no-CUDA"])
    assert device_name(off) == "cpu"
    assert device_name(dataclasses.replace(cfg, device="cpu")) == "cpu"
    assert resolve_device(device_name(off)) == torch.device("cpu")  # through the one resolver


def test_precision_is_fp32_in_every_preset(capsys):
    # The shapes presets move to `auto` once the demo has been measured with it (issue 12).
    cfg, _ = load_gan_config(README_TRAIN)
    assert cfg.precision == "fp32" and not cfg.channels_last
    for name in ("birds_3stages.yml", "flowers_3stages.yml", "places_2stages.yml", "eval_birds.yml", "eval_places.yml"):
        assert load_gan_config(["--cfg", str(CFG / name), "--data_dir", "./data/birds"])[0].precision == "fp32", name
    for name in ("shapes_demo.yml", "shapes_cpu.yml"):
        assert load_gan_config(["--cfg", str(CFG / name)])[0].precision == "fp32", name
    cfg, _ = load_gan_config([*README_TRAIN, "--precision", "bf16", "--channels_last"])
    assert cfg.precision == "bf16" and cfg.channels_last
    err = _error([*README_TRAIN, "--precision", "fp8"], capsys)
    assert "--precision" in err and "fp8" in err


def test_cal_weight_mode_choices(capsys):
    err = _error([*README_TRAIN, "--cal_weight_mode", "weight"], capsys)
    assert "cal_weight_mode" in err


# --- dataset and paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("data_dir, dataset", [
    ("./data/Places_subset", "places"), ("./data/flowers", "flowers"), ("./data/birds", "birds"),
    ("./data/shapes", "shapes"), ("/x/places", "places"), ("./data/toy", None),
])
def test_dataset_from_data_dir(data_dir, dataset):
    assert dataset_from_data_dir(data_dir) == dataset


def test_eval_places_needs_only_the_data_dir():
    cfg, _ = load_gan_config(["--cfg", str(CFG / "eval_places.yml"), "--data_dir", "./data/Places_subset"])
    assert cfg.dataset == "places" and cfg.DATA_DIR == "./data/Places_subset"
    assert resolve_paths(cfg).manifest == Path("data/Places_subset/test.json")


def test_dataset_flag_wins_and_unknown_dir_errors(capsys):
    cfg, _ = load_gan_config(["--data_dir", "./data/toy", "--dataset", "shapes"])
    assert cfg.dataset == "shapes"
    err = _error(["--data_dir", "./data/toy"], capsys)
    assert "--dataset" in err and "./data/toy" in err
    err = _error([], capsys)
    assert "DATA_DIR" in err


def test_default_run_name_and_overrides():
    cfg, _ = load_gan_config(["--cfg", str(CFG / "birds_3stages.yml")])
    paths = resolve_paths(cfg, timestamp="2020_01_02_03_04_05")
    assert paths.output_root == Path("output/StackGAN/birds_3stages_2020_01_02_03_04_05")
    assert paths.embeddings == Path("data/birds/train/audio_features_.pickle")  # the original's empty tag
    cfg, _ = load_gan_config(["--cfg", str(CFG / "birds_3stages.yml"), "--split_json", "a.json",
                              "--embedding_pickle", "b.pickle", "--output_dir", "/abs/run"])
    paths = resolve_paths(cfg)
    assert paths.manifest == Path("a.json") and paths.embeddings == Path("b.pickle")
    assert paths.output_root == Path("/abs/run")


def test_config_round_trip():
    cfg, _ = load_gan_config(README_EVAL)
    assert from_dict(GanConfig, to_dict(cfg)) == cfg


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        load_gan_config(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--cfg" in out and "--TRAIN.BATCH_SIZE" in out and "--manualSeed" in out
    assert "--precision STR" in out and "--channels_last" in out
