"""s2i/config.py: dataclass defaults ← ``--config`` YAML ← command-line flags, with strict checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.train_audio_encoder import EncoderTrainConfig
from s2i.config import ConfigError, _apply, dump_yaml, from_dict, load_yaml, option, parse_config, to_dict

REPO = Path(__file__).resolve().parents[1]

# The README's training command (docs/original.md#s8, §13), as run_audio_encoder.sh hands it to the script, with
# the --local_rank=0 that torch.distributed.launch appends.
README_ARGS = (
    "--batch_size 64 --epoch 1000 --learning_rate 1e-3 --print_every 50 --eval_every 10 --loss_diff 1 "
    "--loss_same 0.1 --lr_scheduler_step_size 200 --lr_scheduler_gamma 0.5 --dataset birds --jel_flag "
    "--l1_flag --distill_flag --lambda_l1 5 --lambda_distill 1000 --bidirectional --rnn_layers 1 "
    "--output_dir ./output/Audio_to_Image/log/birds_speech_encoder --num_workers 8 --dropout 0.5"
).split()


@dataclass
class Inner:
    size: int = option(3, "an int")
    scale: float = option(1.0, "a float")


@dataclass
class Small:
    count: int = option(1, "an int")
    rate: float = option(0.5, "a float")
    name: str = option("a", "a string")
    flag: bool = option(False, "a bool")
    limit: int | None = option(None, "an optional int")
    mode: str = option("x", "a choice", choices=("x", "y"))
    tags: list = option(["t"], "a list")
    inner: Inner = dataclasses.field(default_factory=Inner)


def _yaml(tmp_path: Path, text: str, name: str = "c.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _parse_error(cls, argv, capsys) -> str:
    """Runs parse_config expecting argparse's usage error (exit 2); returns stderr."""
    with pytest.raises(SystemExit) as exc:
        parse_config(cls, argv, "test")
    assert exc.value.code == 2
    return capsys.readouterr().err


# --- the paper's command ------------------------------------------------------------------------


def test_readme_command_parses_as_written():
    cfg, ns = parse_config(EncoderTrainConfig, [*README_ARGS, "--local_rank=0"], "test")
    expected = {
        "batch_size": 64, "epoch": 1000, "learning_rate": 1e-3, "print_every": 50, "eval_every": 10,
        "loss_diff": 1.0, "loss_same": 0.1, "lr_scheduler_step_size": 200, "lr_scheduler_gamma": 0.5,
        "dataset": "birds", "jel_flag": True, "l1_flag": True, "distill_flag": True, "lambda_l1": 5.0,
        "lambda_distill": 1000.0, "bidirectional": True, "rnn_layers": 1,
        "output_dir": "./output/Audio_to_Image/log/birds_speech_encoder", "num_workers": 8, "dropout": 0.5,
        "local_rank": 0,
    }
    for key, value in expected.items():
        got = getattr(cfg, key)
        assert got == value and type(got) is type(value), (key, got)
    # Flags the README leaves out keep the original's defaults (docs/original.md#s13).
    assert cfg.distill_T == 2.0
    assert cfg.resume is None
    assert cfg.data_path == "./data/birds/CUB_200_2011_audio/audio/0"
    assert cfg.frontend == FrontEndConfig()
    # Only the given flags are in the namespace (defaults are suppressed).
    assert "distill_T" not in vars(ns) and ns.epoch == 1000


def test_readme_command_loss_weights():
    cfg, _ = parse_config(EncoderTrainConfig, README_ARGS, "test")
    w = cfg.loss_weights()
    assert dataclasses.astuple(w) == (True, 1.0, 0.1, True, 5.0, True, 1000.0, 2.0, False, 1.0, 0.1)  # prototype loss off


def test_encoder_defaults_are_the_originals():
    cfg, _ = parse_config(EncoderTrainConfig, [], "test")
    assert (cfg.local_rank, cfg.num_workers, cfg.batch_size, cfg.epoch, cfg.eval_every) == (0, 8, 64, 100, 5)
    assert (cfg.loss_diff, cfg.loss_same, cfg.lr_scheduler_step_size, cfg.lr_scheduler_gamma) == (1.0, 1.0, 30, 0.2)
    assert (cfg.jel_flag, cfg.l1_flag, cfg.distill_flag, cfg.bidirectional) == (False, False, False, False)
    assert cfg.output_dir == "./output/Audio_to_Image/log/baseline"


@pytest.mark.parametrize("argv", [["--local_rank", "3"], ["--local-rank", "3"], ["--local-rank=3"], ["--local_rank=3"]])
def test_local_rank_both_spellings(argv):
    cfg, _ = parse_config(EncoderTrainConfig, argv, "test")
    assert cfg.local_rank == 3


def test_bidirectional_boolean_optional_action():
    assert parse_config(EncoderTrainConfig, ["--bidirectional"], "t")[0].bidirectional is True
    assert parse_config(EncoderTrainConfig, ["--no-bidirectional"], "t")[0].bidirectional is False
    # The last of the two wins, as for any argparse flag.
    assert parse_config(EncoderTrainConfig, ["--bidirectional", "--no-bidirectional"], "t")[0].bidirectional is False


def test_no_flag_turns_off_a_yaml_true(tmp_path):
    path = _yaml(tmp_path, "bidirectional: true\njel_flag: true\n")
    cfg, _ = parse_config(EncoderTrainConfig, ["--config", str(path), "--no-bidirectional"], "t")
    assert cfg.bidirectional is False and cfg.jel_flag is True


# --- precedence -----------------------------------------------------------------------------------


def test_precedence_default_yaml_cli(tmp_path):
    path = _yaml(tmp_path, "epoch: 7\nbatch_size: 16\nlearning_rate: 0.01\n")
    cfg, _ = parse_config(EncoderTrainConfig, ["--config", str(path), "--batch_size", "4"], "t")
    assert cfg.epoch == 7  # YAML over default
    assert cfg.batch_size == 4  # CLI over YAML
    assert cfg.learning_rate == 0.01
    assert cfg.eval_every == 5  # default untouched


def test_precedence_holds_whatever_the_flag_order(tmp_path):
    path = _yaml(tmp_path, "count: 5\nname: yaml\n")
    cfg, _ = parse_config(Small, ["--count", "9", "--config", str(path)], "t")
    assert (cfg.count, cfg.name) == (9, "yaml")


def test_nested_block_from_yaml_and_cli(tmp_path):
    path = _yaml(tmp_path, "frontend: {n_mels: 64}\n")
    cfg, _ = parse_config(EncoderTrainConfig, ["--config", str(path)], "t")
    assert cfg.frontend.n_mels == 64
    assert cfg.frontend == dataclasses.replace(FrontEndConfig(), n_mels=64)

    cfg, _ = parse_config(EncoderTrainConfig, ["--frontend.n_mels", "64"], "t")
    assert cfg.frontend.n_mels == 64 and cfg.frontend.hop_length == 160

    # A partial YAML block keeps the other nested values; the CLI overrides one of them.
    path = _yaml(tmp_path, "frontend:\n  n_mels: 64\n  target_length: 512\n", "d.yml")
    cfg, _ = parse_config(EncoderTrainConfig, ["--config", str(path), "--frontend.n_mels", "80"], "t")
    assert (cfg.frontend.n_mels, cfg.frontend.target_length, cfg.frontend.sample_rate) == (80, 512, 16000)


def test_nested_small_dataclass(tmp_path):
    path = _yaml(tmp_path, "inner:\n  size: 8\n")
    cfg, _ = parse_config(Small, ["--config", str(path), "--inner.scale", "2"], "t")
    assert cfg.inner == Inner(size=8, scale=2.0)
    assert isinstance(cfg.inner.scale, float)


def test_yaml_float_in_exponent_notation(tmp_path):
    # PyYAML's YAML 1.1 rules read 1e-3 as a string; the README's value must work in a preset too.
    path = _yaml(tmp_path, "learning_rate: 1e-3\nlambda_distill: 1e3\nloss_same: -1.5E-1\n")
    cfg, _ = parse_config(EncoderTrainConfig, ["--config", str(path)], "t")
    assert (cfg.learning_rate, cfg.lambda_distill, cfg.loss_same) == (1e-3, 1000.0, -0.15)
    assert load_yaml(path)["learning_rate"] == 0.001


# --- unknown keys ---------------------------------------------------------------------------------


def test_unknown_top_level_yaml_key_names_key_and_file(tmp_path, capsys):
    path = _yaml(tmp_path, "epoch: 3\nepochs: 3\n")
    err = _parse_error(EncoderTrainConfig, ["--config", str(path)], capsys)
    assert "'epochs'" in err and str(path) in err and "unknown key" in err


def test_unknown_nested_yaml_key_names_dotted_key_and_file(tmp_path, capsys):
    path = _yaml(tmp_path, "frontend:\n  n_mel: 64\n")
    err = _parse_error(EncoderTrainConfig, ["--config", str(path)], capsys)
    assert "'frontend.n_mel'" in err and str(path) in err


def test_unknown_cli_flag_is_an_error(capsys):
    err = _parse_error(EncoderTrainConfig, ["--epochs", "3"], capsys)
    assert "--epochs" in err
    err = _parse_error(EncoderTrainConfig, ["--frontend.nmels", "3"], capsys)
    assert "--frontend.nmels" in err


def test_from_dict_and_apply_raise_config_error_directly():
    with pytest.raises(ConfigError, match=r"ckpt: unknown key 'bogus'"):
        from_dict(Small, {"bogus": 1}, "ckpt")
    with pytest.raises(ConfigError, match=r"somewhere: unknown key 'inner\.bogus'"):
        _apply(Small(), {"inner": {"bogus": 1}}, "somewhere")
    with pytest.raises(ConfigError, match=r"checkpoint config: 'frontend.fmin' must be float, got 'a'"):
        from_dict(EncoderTrainConfig, {"frontend": {"fmin": "a"}})


# --- types ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key, typename",
    [
        ("count: 0.5", "count", "int"),
        ("flag: 'yes'", "flag", "bool"),
        ("name: 3", "name", "str"),
        ("count: true", "count", "int"),  # bool is not an int here
        ("rate: '0.5'", "rate", "float"),
        ("rate: true", "rate", "float"),
        ("inner: 3", "inner", "Inner"),
        ("inner: {size: 2.5}", "inner.size", "int"),
        ("count: null", "count", None),
    ],
)
def test_yaml_type_mismatch_names_the_key(tmp_path, capsys, text, key, typename):
    path = _yaml(tmp_path, text + "\n")
    err = _parse_error(Small, ["--config", str(path)], capsys)
    assert f"'{key}'" in err and str(path) in err
    if typename:
        assert f"must be {typename}" in err
    else:
        assert "may not be null" in err


def test_type_mismatch_in_encoder_config(tmp_path, capsys):
    path = _yaml(tmp_path, "batch_size: 0.5\n")
    assert "'batch_size' must be int, got 0.5" in _parse_error(EncoderTrainConfig, ["--config", str(path)], capsys)
    path = _yaml(tmp_path, "jel_flag: 'yes'\n")
    assert "'jel_flag' must be bool, got 'yes'" in _parse_error(EncoderTrainConfig, ["--config", str(path)], capsys)
    path = _yaml(tmp_path, "output_dir: 3\n")
    assert "'output_dir' must be str, got 3" in _parse_error(EncoderTrainConfig, ["--config", str(path)], capsys)


def test_cli_type_mismatch_names_the_flag(capsys):
    err = _parse_error(EncoderTrainConfig, ["--batch_size", "0.5"], capsys)
    assert "--batch_size expects int, got '0.5'" in err
    err = _parse_error(EncoderTrainConfig, ["--learning_rate", "fast"], capsys)
    assert "--learning_rate expects float" in err
    # A bool flag takes no value.
    err = _parse_error(EncoderTrainConfig, ["--jel_flag", "yes"], capsys)
    assert "yes" in err


def test_ints_widen_to_floats(tmp_path):
    path = _yaml(tmp_path, "rate: 2\ninner: {scale: 3}\n")
    cfg, _ = parse_config(Small, ["--config", str(path)], "t")
    assert cfg.rate == 2.0 and type(cfg.rate) is float
    assert cfg.inner.scale == 3.0 and type(cfg.inner.scale) is float
    cfg = from_dict(EncoderTrainConfig, {"lambda_distill": 1000})
    assert type(cfg.lambda_distill) is float


def test_optional_fields_accept_null_and_none(tmp_path):
    path = _yaml(tmp_path, "limit: 4\n")
    assert parse_config(Small, ["--config", str(path)], "t")[0].limit == 4
    path = _yaml(tmp_path, "limit: null\n", "n.yml")
    assert parse_config(Small, ["--config", str(path), "--limit", "7"], "t")[0].limit == 7
    assert parse_config(Small, ["--limit", "7", "--limit", "none"], "t")[0].limit is None
    assert parse_config(Small, ["--limit", "NULL"], "t")[0].limit is None
    assert parse_config(Small, ["--config", str(path)], "t")[0].limit is None
    cfg, _ = parse_config(EncoderTrainConfig, ["--resume", "none", "--frontend.fmax", "null"], "t")
    assert cfg.resume is None and cfg.frontend.fmax is None
    cfg, _ = parse_config(EncoderTrainConfig, ["--resume", "ck.pth", "--frontend.top_db", "60"], "t")
    assert cfg.resume == "ck.pth" and cfg.frontend.top_db == 60.0


def test_non_optional_string_keeps_the_word_none():
    assert parse_config(Small, ["--name", "none"], "t")[0].name == "none"


def test_choices_enforced_on_cli_and_in_yaml(tmp_path, capsys):
    assert parse_config(EncoderTrainConfig, ["--dataset", "flowers"], "t")[0].dataset == "flowers"
    err = _parse_error(EncoderTrainConfig, ["--dataset", "cars"], capsys)
    assert "--dataset" in err and "cars" in err
    path = _yaml(tmp_path, "dataset: cars\n")
    err = _parse_error(EncoderTrainConfig, ["--config", str(path)], capsys)
    assert "'dataset' must be one of" in err and "'cars'" in err and str(path) in err
    with pytest.raises(ConfigError, match="'mode' must be one of"):
        from_dict(Small, {"mode": "z"})


def test_post_init_checks_become_usage_errors(tmp_path, capsys):
    err = _parse_error(EncoderTrainConfig, ["--batch_size", "0"], capsys)
    assert "--batch_size must be at least 1" in err
    # The nested front-end's own checks are reported the same way, not as a traceback.
    err = _parse_error(EncoderTrainConfig, ["--frontend.n_mels", "0"], capsys)
    assert "n_mels" in err and "command line" in err
    path = _yaml(tmp_path, "frontend: {win_length: 800}\n")
    err = _parse_error(EncoderTrainConfig, ["--config", str(path)], capsys)
    assert "win_length" in err and str(path) in err


# --- YAML files -----------------------------------------------------------------------------------


def test_invalid_yaml_is_one_clear_error(tmp_path, capsys):
    path = _yaml(tmp_path, "epoch: [1, 2\nbatch_size: 3\n")
    err = _parse_error(EncoderTrainConfig, ["--config", str(path)], capsys)
    assert f"{path}: invalid YAML" in err
    assert "Traceback" not in err
    # One error line (the YAML parser's multi-line report is folded into it) after the usage text.
    assert err.count("error:") == 1
    assert err.rstrip("\n").splitlines()[-1].split("error: ", 1)[1].startswith(f"{path}: invalid YAML")


def test_yaml_list_is_one_clear_error(tmp_path, capsys):
    path = _yaml(tmp_path, "- epoch: 3\n- batch_size: 4\n")
    err = _parse_error(EncoderTrainConfig, ["--config", str(path)], capsys)
    assert f"{path}: expected a mapping of settings, got list" in err


def test_missing_and_empty_yaml(tmp_path, capsys):
    err = _parse_error(EncoderTrainConfig, ["--config", str(tmp_path / "nope.yml")], capsys)
    assert "nope.yml does not exist" in err
    path = _yaml(tmp_path, "# only a comment\n")
    cfg, _ = parse_config(EncoderTrainConfig, ["--config", str(path)], "t")
    assert cfg == EncoderTrainConfig()


# --- round trips ----------------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip():
    cfg, _ = parse_config(EncoderTrainConfig, [*README_ARGS, "--frontend.n_mels", "64", "--resume", "x.pth"], "t")
    d = to_dict(cfg)
    assert d["frontend"]["n_mels"] == 64 and d["lambda_distill"] == 1000.0 and d["resume"] == "x.pth"
    assert from_dict(EncoderTrainConfig, d) == cfg
    small = Small(count=4, limit=None, tags=["a", "b"], inner=Inner(size=9))
    assert from_dict(Small, to_dict(small)) == small


def test_dump_yaml_reloads_through_parse_config(tmp_path):
    cfg, _ = parse_config(EncoderTrainConfig, [*README_ARGS, "--frontend.fmax", "7600"], "t")
    path = tmp_path / "config.yaml"
    dump_yaml(cfg, path)
    again, _ = parse_config(EncoderTrainConfig, ["--config", str(path)], "t")
    assert again == cfg


def test_list_default_is_not_shared():
    a, b = Small(), Small()
    a.tags.append("u")
    assert b.tags == ["t"]


def test_help_lists_flags_and_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_config(EncoderTrainConfig, ["--help"], "t")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--jel_flag", "--lambda_l1", "--local-rank", "--frontend.n_mels", "--no-bidirectional"):
        assert flag in out
    assert "(default: 64)" in out


# --- presets --------------------------------------------------------------------------------------

PRESETS = sorted({*(REPO / "cfg").glob("*speech_encoder*.yml"), *(REPO / "Audio_to_Image" / "cfg").glob("*.yml")})


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_speech_encoder_presets_parse(preset):
    cfg, _ = parse_config(EncoderTrainConfig, ["--config", str(preset)], "t")
    for key, value in load_yaml(preset).items():
        if isinstance(value, dict):
            for sub, v in value.items():
                assert getattr(getattr(cfg, key), sub) == v, f"{key}.{sub}"
        else:
            assert getattr(cfg, key) == value, key


@pytest.mark.skipif(not (REPO / "Audio_to_Image/cfg/birds.yml").is_file(), reason="no birds preset")
def test_birds_preset_is_the_readme_command():
    preset, _ = parse_config(EncoderTrainConfig, ["--config", str(REPO / "Audio_to_Image/cfg/birds.yml")], "t")
    readme, _ = parse_config(EncoderTrainConfig, README_ARGS, "t")
    assert preset == readme
