"""Bad input, one case per input and stage (issue 7, "Bad input").

Every case either checks that the stage handles the input correctly (resampled, downmixed, normalised,
converted) or that it refuses it with one of our own error types (a ValueError / OSError /
UnpicklingError subclass defined in this project) whose message names the file or key and the reason.
No case may let a bare library exception escape, and every input is small so nothing can hang.

Categories (the closing note of issue 7 counts the cases per class): ``TestAudio``, ``TestImages``,
``TestManifestsAndFeatures``, ``TestConfigsAndFlags``, ``TestCheckpoints``.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from PIL import Image

from Audio_to_Image.audio import FrontEndConfig, compute_logmel, load_audio
from Audio_to_Image.datasets import SpeechImageDataset, load_teacher_features
from Audio_to_Image.feature_cache import FeatureCache, load_features
from Audio_to_Image.speech_encoder import CNNRNN, load_speech_encoder
from Audio_to_Image.train_audio_encoder import EncoderTrainConfig
from Audio_to_Image.train_audio_encoder import main as train_encoder_main
from s2i.checkpoints import CheckpointError
from s2i.config import ConfigError, parse_config
from s2i.data.images import ImageLoadError, load_image
from s2i.data.manifests import ManifestError, load_manifest
from s2i.data.safe_pickle import PickleFormatError, load_feature_list, save_pickle
from s2i.data.synthetic import SyntheticSpec, make_dataset
from StackGAN.model import G_NET, load_original_generator
from tests.conftest import train_args

SR = 16000
CFG = FrontEndConfig(target_length=256)
OUR_PACKAGES = ("Audio_to_Image", "StackGAN", "s2i")


def assert_user_error(exc: BaseException, *needles: str) -> None:
    """``exc`` is one of our user-error types, on one line, and mentions every needle."""
    assert isinstance(exc, (ValueError, OSError, pickle.UnpicklingError)), type(exc)
    assert type(exc).__module__.split(".")[0] in OUR_PACKAGES, f"bare library error {type(exc)!r}: {exc}"
    msg = str(exc)
    assert "\n" not in msg.strip(), f"not one line: {msg!r}"
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


def _tone(seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * 440 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)) / 1.3).astype(np.float32)


def _wav(path: Path, y: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    soundfile.write(path, y, sr, subtype=subtype)
    return path


# ------------------------------------------------------------------------------------------------
# Audio: load_audio / compute_logmel, and the training stage's path load_features + FeatureCache.
# Each builder returns (path, expectation): a substring of the refusal, or a check of the result.
# ------------------------------------------------------------------------------------------------

Check = Callable[[Path, np.ndarray, int], None]


def _finite_with_frames(seconds: float) -> Check:
    def check(path: Path, spec: np.ndarray, n_frames: int) -> None:
        assert np.isfinite(spec).all()
        assert n_frames == CFG.num_frames(int(round(seconds * SR)))
    return check


def _empty(tmp: Path):
    p = tmp / "empty.wav"
    p.write_bytes(b"")
    return p, "cannot be decoded"


def _zero_samples(tmp: Path):
    return _wav(tmp / "zero_samples.wav", np.zeros(0, np.float32)), "no samples"


def _truncated_header(tmp: Path):
    real = _wav(tmp / "real.wav", _tone(0.2))
    p = tmp / "truncated_header.wav"
    p.write_bytes(real.read_bytes()[:20])  # inside the 44-byte RIFF header
    return p, "cannot be decoded"


def _silence(tmp: Path):
    return _wav(tmp / "silence.wav", np.zeros(8000, np.float32)), _finite_with_frames(0.5)


def _clipping(tmp: Path):
    y = np.clip(_tone(0.5, amp=4.0), -1.0, 1.0)
    assert (np.abs(y) == 1.0).sum() > 100
    return _wav(tmp / "clipping.wav", y, subtype="PCM_16"), _finite_with_frames(0.5)


def _nan(tmp: Path):
    y = _tone(0.3)
    y[100] = np.nan
    return _wav(tmp / "nan.wav", y, subtype="FLOAT"), "non-finite"


def _inf(tmp: Path):
    y = _tone(0.3)
    y[5:9] = np.inf
    return _wav(tmp / "inf.wav", y, subtype="FLOAT"), "non-finite"


def _resampled(sr: int):
    def build(tmp: Path):
        seconds = 0.75
        path = _wav(tmp / f"rate_{sr}.wav", _tone(seconds, sr=sr), sr=sr)

        def check(path: Path, spec: np.ndarray, n_frames: int) -> None:
            assert load_audio(path).shape == (int(seconds * SR),)  # resampled to 16 kHz
            _finite_with_frames(seconds)(path, spec, n_frames)
        return path, check
    return build


def _stereo(tmp: Path):
    y = _tone(0.5)
    path = _wav(tmp / "stereo.wav", np.stack([y, np.zeros_like(y)], axis=1), subtype="FLOAT")

    def check(path: Path, spec: np.ndarray, n_frames: int) -> None:
        np.testing.assert_allclose(load_audio(path), y / 2, atol=1e-6)  # mean of the channels
        _finite_with_frames(0.5)(path, spec, n_frames)
    return path, check


def _sample_format(subtype: str, atol: float):
    def build(tmp: Path):
        y = _tone(0.5)
        path = _wav(tmp / f"format_{subtype}.wav", y, subtype=subtype)

        def check(path: Path, spec: np.ndarray, n_frames: int) -> None:
            np.testing.assert_allclose(load_audio(path), y, atol=atol)  # scaled to [-1, 1]
            _finite_with_frames(0.5)(path, spec, n_frames)
        return path, check
    return build


def _text_as_wav(tmp: Path):
    p = tmp / "notes.wav"
    p.write_text("these are not samples\n" * 10)
    return p, "cannot be decoded"


def _missing(tmp: Path):
    return tmp / "missing.wav", "does not exist"


AUDIO_CASES = {
    "empty_file": _empty,
    "zero_samples": _zero_samples,
    "truncated_header": _truncated_header,
    "silence": _silence,
    "clipping": _clipping,
    "nan_samples": _nan,
    "inf_samples": _inf,
    "8kHz": _resampled(8000),
    "48kHz": _resampled(48000),
    "stereo": _stereo,
    "8bit": _sample_format("PCM_U8", 1 / 64),
    "32bit_float": _sample_format("FLOAT", 0.0),
    "text_named_wav": _text_as_wav,
    "missing": _missing,
}


class TestAudio:
    @pytest.mark.parametrize("stage", ["compute_logmel", "feature_cache"])
    @pytest.mark.parametrize("case", list(AUDIO_CASES))
    def test_audio(self, tmp_path: Path, case: str, stage: str) -> None:
        path, expect = AUDIO_CASES[case](tmp_path)
        if stage == "compute_logmel":
            run = lambda: compute_logmel(path, CFG)  # noqa: E731
        else:
            cache = FeatureCache(tmp_path / "cache", CFG)
            run = lambda: load_features(path, CFG, cache)  # noqa: E731
        if isinstance(expect, str):
            with pytest.raises(Exception) as info:
                run()
            assert_user_error(info.value, path.name, expect)
        else:
            spec, n_frames = run()
            assert spec.shape == (CFG.n_mels, CFG.target_length)
            expect(path, spec, n_frames)
            if stage == "feature_cache":  # a second read comes from the cache and agrees
                again, n_again = load_features(path, CFG, cache)
                np.testing.assert_array_equal(again, spec)
                assert n_again == n_frames


# ------------------------------------------------------------------------------------------------
# Images: s2i.data.images.load_image (RGB float32 in [0, 1]; sides below min_side=16 are refused, larger
# images of any size are accepted: the 224-pixel crops come from the later resize to 227²).
# ------------------------------------------------------------------------------------------------


def _rgb(h: int = 32, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


class TestImages:
    def test_missing(self, tmp_path: Path) -> None:
        with pytest.raises(Exception) as info:
            load_image(tmp_path / "gone.jpg", where="train.json item 3")
        assert isinstance(info.value, ImageLoadError)
        assert_user_error(info.value, "gone.jpg", "train.json item 3", "does not exist")

    def test_corrupt(self, tmp_path: Path) -> None:
        p = tmp_path / "corrupt.jpg"
        p.write_bytes(np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes())
        with pytest.raises(Exception) as info:
            load_image(p)
        assert_user_error(info.value, "corrupt.jpg", "could not be decoded")

    def test_grayscale_is_tiled_to_rgb(self, tmp_path: Path) -> None:
        gray = _rgb()[:, :, 0]
        Image.fromarray(gray, "L").save(tmp_path / "gray.png")
        out = load_image(tmp_path / "gray.png")
        assert out.shape == (32, 40, 3) and out.dtype == np.float32
        for c in range(3):
            np.testing.assert_allclose(out[:, :, c], gray / 255.0, atol=1e-7)

    def test_rgba_drops_alpha(self, tmp_path: Path) -> None:
        rgb = _rgb()
        rgba = np.concatenate([rgb, np.full((32, 40, 1), 7, np.uint8)], axis=2)
        Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
        np.testing.assert_allclose(load_image(tmp_path / "rgba.png"), rgb / 255.0, atol=1e-7)

    def test_cmyk_jpeg_is_converted(self, tmp_path: Path) -> None:
        Image.fromarray(_rgb()).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
        with Image.open(tmp_path / "cmyk.jpg") as img:
            assert img.mode == "CMYK"
        out = load_image(tmp_path / "cmyk.jpg")
        assert out.shape == (32, 40, 3) and 0.0 <= out.min() and out.max() <= 1.0

    def test_tiny_below_min_side_is_refused(self, tmp_path: Path) -> None:
        Image.fromarray(_rgb(8, 12)).save(tmp_path / "tiny.png")
        with pytest.raises(Exception) as info:
            load_image(tmp_path / "tiny.png")
        assert_user_error(info.value, "tiny.png", "12×8", "minimum side of 16")

    def test_smaller_than_crop_is_accepted(self, tmp_path: Path) -> None:
        from s2i.data.images import caffe_resize

        Image.fromarray(_rgb(20, 20)).save(tmp_path / "small.png")
        out = load_image(tmp_path / "small.png")  # 20 < 224, but >= min_side
        assert out.shape == (20, 20, 3)
        assert caffe_resize(out, (227, 227)).shape == (227, 227, 3)


# ------------------------------------------------------------------------------------------------
# Manifests and features: load_manifest, load_feature_list, load_teacher_features,
# SpeechImageDataset, and the encoder trainer's check against --embedding_dim.
# ------------------------------------------------------------------------------------------------


def _item(i: int, **changes) -> dict:
    item = {"image": f"001.A/{i}.jpg", "class": "001.A", "text": [f"caption {i}"], "audio": [f"{i}.wav"]}
    item.update(changes)
    return item


def _manifest(tmp: Path, items: list[dict], **top) -> Path:
    p = tmp / "train.json"
    p.write_text(json.dumps({"audio_base_path": "audio", "image_feature_path": "feats.pickle", "data": items,
                             **top}, ensure_ascii=False), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    make_dataset(root, SyntheticSpec(num_classes=2, train_images_per_class=2, test_images_per_class=1,
                                     captions_per_image=1))
    return root


class TestManifestsAndFeatures:
    def test_missing_item_key(self, tmp_path: Path) -> None:
        item = _item(1)
        del item["audio"]
        p = _manifest(tmp_path, [_item(0), item])
        with pytest.raises(Exception) as info:
            load_manifest(p, "birds")
        assert isinstance(info.value, ManifestError)
        assert_user_error(info.value, "train.json item 1", "missing key 'audio'")

    def test_missing_top_level_key(self, tmp_path: Path) -> None:
        p = tmp_path / "test.json"
        p.write_text(json.dumps({"audio_base_path": "audio"}))
        with pytest.raises(Exception) as info:
            load_manifest(p, "birds")
        assert_user_error(info.value, "test.json", "missing key 'data'")

    def test_feature_rows_disagree_with_manifest(self, tmp_path: Path) -> None:
        p = _manifest(tmp_path, [_item(0), _item(1), _item(2)])
        save_pickle([np.zeros((10, 8), np.float32)] * 2, tmp_path / "feats.pickle")
        manifest = load_manifest(p, "birds")
        with pytest.raises(Exception) as info:
            load_teacher_features(manifest)
        assert_user_error(info.value, "feats.pickle", "2 rows", "3 images")

    def test_dataset_refuses_feature_list_of_other_length(self, tmp_path: Path) -> None:
        manifest = load_manifest(_manifest(tmp_path, [_item(0), _item(1)]), "birds")
        with pytest.raises(Exception) as info:
            SpeechImageDataset(manifest, [np.zeros((10, 8), np.float32)], CFG, None)
        assert_user_error(info.value, "train.json", "2 images", "1 rows")

    def test_feature_dim_disagrees_with_expected(self, tmp_path: Path) -> None:
        save_pickle(np.zeros((2, 10, 8), np.float32), tmp_path / "feats.pickle")
        with pytest.raises(Exception) as info:
            load_feature_list(tmp_path / "feats.pickle", expected_len=2, expected_dim=1024)
        assert isinstance(info.value, PickleFormatError)
        assert_user_error(info.value, "feats.pickle", "feature dimension 8", "1024")

    def test_feature_dim_disagrees_with_model(self, tiny_dataset: Path, tmp_path: Path) -> None:
        argv = train_args(tiny_dataset, tmp_path / "run", "--embedding_dim", "512", "--epoch", "1")
        with pytest.raises(Exception) as info:
            train_encoder_main(argv)
        assert isinstance(info.value, ConfigError)
        assert_user_error(info.value, "1024-d", "--embedding_dim is 512", "--embedding_dim 1024")

    def test_duplicate_image(self, tmp_path: Path) -> None:
        p = _manifest(tmp_path, [_item(0), _item(1), _item(0, audio=["other.wav"])])
        with pytest.raises(Exception) as info:
            load_manifest(p, "birds")
        assert_user_error(info.value, "train.json", "'001.A/0.jpg' appears twice", "items 0 and 2")

    def test_non_ascii_captions_are_preserved(self, tmp_path: Path) -> None:
        caption = "ein Vogel über dem Café — 小鳥 🐦"
        p = _manifest(tmp_path, [_item(0, text=[caption], audio=["ü/é.wav"]), _item(1)])
        manifest = load_manifest(p, "birds")
        assert manifest.items[0].captions == (caption,)
        assert manifest.audio_path(0, 0).name == "é.wav"


# ------------------------------------------------------------------------------------------------
# Configs and flags: parse_config (YAML ← flags) and settings that contradict a checkpoint.
# argparse-level refusals exit with status 2 and one "error:" line on stderr naming the key.
# ------------------------------------------------------------------------------------------------


def _parse_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        parse_config(EncoderTrainConfig, argv, "test")
    assert info.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(lines) == 1, lines
    return lines[0]


def _small_encoder(**kw) -> CNNRNN:
    args = {"embedding_dim": 32, "nhidden": 32, "nsent": 32, **kw}
    return CNNRNN(**args)


class TestConfigsAndFlags:
    def test_unknown_yaml_key(self, tmp_path: Path, capsys) -> None:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({"batch_size": 4, "lerning_rate": 0.1}))
        line = _parse_error(capsys, ["--config", str(tmp_path / "c.yaml")])
        assert "c.yaml" in line and "unknown key 'lerning_rate'" in line

    def test_wrong_type_in_yaml(self, tmp_path: Path, capsys) -> None:
        (tmp_path / "c.yaml").write_text("batch_size: eight\n")
        line = _parse_error(capsys, ["--config", str(tmp_path / "c.yaml")])
        assert "c.yaml" in line and "batch_size" in line and "eight" in line

    def test_wrong_type_on_command_line(self, capsys) -> None:
        line = _parse_error(capsys, ["--batch_size", "eight"])
        assert "--batch_size" in line and "eight" in line

    def test_invalid_yaml(self, tmp_path: Path, capsys) -> None:
        (tmp_path / "c.yaml").write_text("batch_size: [4\nlr: 0.1\n")
        line = _parse_error(capsys, ["--config", str(tmp_path / "c.yaml")])
        assert "c.yaml" in line and "invalid YAML" in line

    def test_contradictory_flags(self, capsys) -> None:
        line = _parse_error(capsys, ["--bidirectional", "--embedding_dim", "1023"])
        assert "--embedding_dim must be even with --bidirectional" in line

    def test_branch_num_below_checkpoint(self, tmp_path: Path) -> None:
        torch.save(G_NET(branch_num=3, gf_dim=8, text_dim=16).state_dict(), tmp_path / "netG_100.pth")
        with pytest.raises(Exception) as info:
            load_original_generator(tmp_path / "netG_100.pth", branch_num=2)
        assert_user_error(info.value, "netG_100.pth", "unexpected", "h_net3")

    def test_bidirectional_flag_vs_unidirectional_checkpoint(self, tmp_path: Path) -> None:
        torch.save({"meta": {"epoch": 3}, "state_dict": _small_encoder(bidirectional=False).state_dict()},
                   tmp_path / "epoch_3.pth")
        with pytest.raises(Exception) as info:
            load_speech_encoder(tmp_path / "epoch_3.pth", overrides={"bidirectional": True})
        assert_user_error(info.value, "epoch_3.pth", "RNN.weight_hh_l0_reverse", "architecture settings")


# ------------------------------------------------------------------------------------------------
# Checkpoints: truncated, wrong architecture, the authors' formats without settings.
# ------------------------------------------------------------------------------------------------


class TestCheckpoints:
    def _ours(self, path: Path, **kw) -> CNNRNN:
        model = _small_encoder(**kw)
        torch.save({"model": model.state_dict(), "model_args": {**model_args_of(model)}, "epoch": 1}, path)
        return model

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(Exception) as info:
            load_speech_encoder(tmp_path / "nope.pth")
        assert_user_error(info.value, "nope.pth", "does not exist")

    def test_truncated(self, tmp_path: Path) -> None:
        self._ours(tmp_path / "full.pth")
        data = (tmp_path / "full.pth").read_bytes()
        (tmp_path / "half.pth").write_bytes(data[: len(data) // 2])
        with pytest.raises(Exception) as info:
            load_speech_encoder(tmp_path / "half.pth")
        assert isinstance(info.value, CheckpointError)
        assert_user_error(info.value, "half.pth", "cannot read checkpoint")

    def test_wrong_architecture_lists_mismatches(self, tmp_path: Path) -> None:
        model = _small_encoder()
        args = {**model_args_of(model), "embedding_dim": 16}  # settings that do not match the weights
        torch.save({"model": model.state_dict(), "model_args": args}, tmp_path / "liar.pth")
        with pytest.raises(Exception) as info:
            load_speech_encoder(tmp_path / "liar.pth")
        assert isinstance(info.value, CheckpointError)
        assert_user_error(info.value, "liar.pth", "shape mismatches", "Conv.10")

    def test_generator_given_to_speech_encoder(self, tmp_path: Path) -> None:
        torch.save(G_NET(branch_num=1, gf_dim=8, text_dim=16).state_dict(), tmp_path / "netG.pth")
        with pytest.raises(Exception) as info:
            load_speech_encoder(tmp_path / "netG.pth")
        assert_user_error(info.value, "netG.pth", "not a CNNRNN state dict")

    def test_authors_encoder_without_settings(self, tmp_path: Path) -> None:
        model = _small_encoder(bidirectional=False, rnn_layers=2)
        state = {f"module.{k}": v for k, v in model.state_dict().items()}
        torch.save({"meta": {"epoch": 3}, "state_dict": state}, tmp_path / "epoch_3.pth")
        loaded, ckpt = load_speech_encoder(tmp_path / "epoch_3.pth")
        assert ckpt["meta"] == {"epoch": 3}
        assert not loaded.training
        for k, v in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[k], v)

    def test_authors_generator_with_module_prefix(self, tmp_path: Path) -> None:
        netG = G_NET(branch_num=2, gf_dim=8, text_dim=16)
        torch.save({f"module.{k}": v for k, v in netG.state_dict().items()}, tmp_path / "netG_2000.pth")
        loaded = load_original_generator(tmp_path / "netG_2000.pth")
        assert loaded.args["branch_num"] == 2 and loaded.args["gf_dim"] == 8 and loaded.args["text_dim"] == 16
        for k, v in netG.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[k], v)

    def test_state_dict_missing_keys(self, tmp_path: Path) -> None:
        state = _small_encoder().state_dict()
        del state["RNN.bias_hh_l0"]
        torch.save({"meta": {"epoch": 1}, "state_dict": state}, tmp_path / "epoch_1.pth")
        with pytest.raises(Exception) as info:
            load_speech_encoder(tmp_path / "epoch_1.pth")
        assert_user_error(info.value, "epoch_1.pth", "missing 1 keys", "RNN.bias_hh_l0")


def model_args_of(model: CNNRNN) -> dict:
    """The constructor arguments of a small test encoder, as our checkpoints store them."""
    from Audio_to_Image.speech_encoder import infer_model_args

    return infer_model_args(model.state_dict())
