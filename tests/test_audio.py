"""Tests for the log-mel front-end (Audio_to_Image/audio.py, docs/original.md#s4 and the §15 parity checklist)."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from Audio_to_Image.audio import (
    AudioError,
    FrontEndConfig,
    LogMelTorch,
    compute_batch,
    compute_logmel,
    load_audio,
    logmel_reference,
    mel_filterbank,
    pad_or_crop,
    window_array,
)

# librosa.load (the reference we compare load_audio against) imports audioread, which warns on 3.11+.
pytestmark = pytest.mark.filterwarnings("ignore:'(aifc|audioop|sunau)' is deprecated:DeprecationWarning")

SR = 16000
CFG = FrontEndConfig()


def speech_like(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Harmonics of a gliding f0 (100-250 Hz) under moving formant envelopes, syllable-rate AM, noise."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = 175 + 75 * np.sin(2 * np.pi * (0.4 + 0.1 * seed) * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    formants = [
        (500 + 200 * np.sin(2 * np.pi * 1.3 * t), 100.0),
        (1500 + 400 * np.sin(2 * np.pi * 0.9 * t + 1), 150.0),
        (2500 + 300 * np.sin(2 * np.pi * 0.7 * t + 2), 250.0),
    ]
    y = np.zeros(n)
    for k in range(1, 40):
        fk = k * f0
        envelope = sum(np.exp(-0.5 * ((fk - fc) / bw) ** 2) for fc, bw in formants) + 0.02
        y += np.where(fk < 0.45 * sr, envelope / np.sqrt(k), 0.0) * np.sin(k * phase)
    y *= 0.2 + 0.8 * np.sin(2 * np.pi * 4.0 * t) ** 2  # ~4 syllables per second
    y += 0.002 * rng.standard_normal(n) * np.abs(y).max()
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def write(path: Path, y: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    sf.write(str(path), y, sr, subtype=subtype)
    return path


# --------------------------------------------------------------------------------------------------
# FrontEndConfig


def test_config_defaults_follow_spec() -> None:
    cfg = FrontEndConfig()
    assert (cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length) == (16000, 400, 400, 160)
    assert (cfg.window, cfg.window_symmetric, cfg.center, cfg.pad_mode) == ("hamming", True, True, "reflect")
    assert (cfg.n_mels, cfg.fmin, cfg.fmax_hz, cfg.mel_norm, cfg.mel_htk) == (
        40,
        20.0,
        8000.0,
        "slaney",
        False,
    )
    assert (cfg.amin, cfg.top_db, cfg.ref, cfg.target_length, cfg.pad_value) == (
        1e-10,
        80.0,
        "max",
        2048,
        0.0,
    )
    assert cfg.preemphasis == 0.97 and cfg.remove_dc and not cfg.max_abs_norm


def test_config_dict_round_trip_and_unknown_key() -> None:
    cfg = FrontEndConfig(n_mels=64, max_abs_norm=True)
    assert FrontEndConfig.from_dict(cfg.to_dict()) == cfg
    assert FrontEndConfig.from_dict({}) == FrontEndConfig()
    with pytest.raises(ValueError, match="n_mel"):
        FrontEndConfig.from_dict({"n_mel": 40})


def test_cache_key_is_stable_and_changes_with_every_field() -> None:
    key = FrontEndConfig().cache_key()
    assert key == FrontEndConfig().cache_key()
    assert len(key) == 16 and int(key, 16) >= 0
    assert FrontEndConfig(fmin=20).cache_key() == key  # ints are stored as floats
    assert FrontEndConfig(n_mels=np.int64(40)).cache_key() == key
    changes = {
        "n_mels": 64,
        "preemphasis": 0.95,
        "window_symmetric": False,
        "pad_mode": "constant",
        "target_length": 1024,
        "pad_value": -80.0,
        "max_abs_norm": True,
        "fmax": 7600.0,
        "top_db": None,
    }
    keys = {dataclasses.replace(FrontEndConfig(), **{k: v}).cache_key() for k, v in changes.items()}
    assert key not in keys and len(keys) == len(changes)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"win_length": 512}, "win_length"),
        ({"n_fft": 0}, "n_fft"),
        ({"hop_length": 16.0}, "hop_length"),
        ({"fmin": 9000.0, "fmax": None}, "fmin"),
        ({"fmax": 9000.0}, "fmax"),
        ({"pad_mode": "wrap"}, "pad_mode"),
        ({"ref": "mean"}, "ref"),
        ({"window": "no_such_window"}, "window"),
        ({"center": 1}, "center"),
        ({"mel_norm": "l2"}, "mel_norm"),
        ({"preemphasis": "0.97"}, "preemphasis"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        FrontEndConfig(**kwargs)


# --------------------------------------------------------------------------------------------------
# Window, filterbank, frame counts, pad/crop


def test_window_is_symmetric_hamming_by_default() -> None:
    w = window_array(CFG)
    assert w.shape == (400,)
    np.testing.assert_array_equal(w, scipy.signal.windows.hamming(400, sym=True))
    assert w[0] == w[-1]
    assert not np.allclose(w, scipy.signal.windows.hamming(400, sym=False))
    periodic = window_array(FrontEndConfig(window_symmetric=False))
    np.testing.assert_array_equal(periodic, librosa.filters.get_window("hamming", 400))


def test_mel_filterbank_is_librosa_slaney() -> None:
    fb = mel_filterbank(CFG)
    assert fb.shape == (40, 201) and fb.dtype == np.float32
    np.testing.assert_array_equal(fb, librosa.filters.mel(sr=16000, n_fft=400, n_mels=40, fmin=20))
    assert mel_filterbank(FrontEndConfig()) is fb  # cached per config
    assert not fb.flags.writeable


def test_three_seconds_give_301_frames() -> None:
    logmel = logmel_reference(speech_like(3.0), CFG)
    assert logmel.shape == (40, 301) and logmel.dtype == np.float32
    assert CFG.num_frames(48000) == 301
    assert logmel.max() == 0.0 and logmel.min() >= -80.0
    assert logmel.min() < -40.0  # the signal actually spans a dynamic range


def test_reference_matches_hand_written_pipeline() -> None:
    y = speech_like(1.0, seed=3)
    z = y - y.mean()
    z = np.append(z[0], z[1:] - 0.97 * z[:-1])
    spec = librosa.stft(
        z,
        n_fft=400,
        hop_length=160,
        win_length=400,
        window=scipy.signal.windows.hamming(400, sym=True),
        center=True,
        pad_mode="reflect",
    )
    mel = librosa.filters.mel(sr=16000, n_fft=400, n_mels=40, fmin=20) @ (np.abs(spec) ** 2)
    expected = librosa.power_to_db(mel, ref=np.max, amin=1e-10, top_db=80)
    np.testing.assert_array_equal(logmel_reference(y, CFG), expected)


def test_pad_short_and_crop_long() -> None:
    short = logmel_reference(speech_like(1.0), CFG)
    padded, n = pad_or_crop(short, CFG)
    assert padded.shape == (40, 2048) and padded.dtype == np.float32 and n == 101
    np.testing.assert_array_equal(padded[:, :101], short)
    assert np.all(padded[:, 101:] == 0.0)

    cfg = FrontEndConfig(pad_value=-80.0)
    padded, n = pad_or_crop(short, cfg)
    assert n == 101 and np.all(padded[:, 101:] == -80.0)

    long = logmel_reference(np.tile(speech_like(1.0), 25), CFG)
    assert long.shape == (40, 2501)
    cropped, n = pad_or_crop(long, CFG)
    assert cropped.shape == (40, 2048) and n == 2048
    np.testing.assert_array_equal(cropped, long[:, :2048])


def test_max_abs_norm() -> None:
    logmel = logmel_reference(speech_like(1.0), CFG)
    normed, n = pad_or_crop(logmel, FrontEndConfig(max_abs_norm=True))
    plain, _ = pad_or_crop(logmel, CFG)
    np.testing.assert_allclose(normed, plain / np.abs(plain).max(), rtol=0, atol=0)
    assert np.abs(normed).max() == 1.0 and n == 101


def test_silence_is_finite(tmp_path: Path) -> None:
    for y in (np.zeros(16000, np.float32), np.full(16000, 0.25, np.float32)):  # constant = silent after DC
        logmel = logmel_reference(y, CFG)
        assert np.all(np.isfinite(logmel)) and np.all(logmel == 0.0)
    path = write(tmp_path / "silence.wav", np.zeros(8000, np.float32))
    for cfg in (CFG, FrontEndConfig(max_abs_norm=True)):
        padded, n = compute_logmel(path, cfg)
        assert n == 51 and np.all(np.isfinite(padded))
        batch, nb = compute_batch([path], cfg)
        assert int(nb[0]) == 51 and torch.isfinite(batch).all()
        np.testing.assert_array_equal(batch[0].numpy(), padded)


# --------------------------------------------------------------------------------------------------
# Loading


def test_load_audio_equals_librosa_load(tmp_path: Path) -> None:
    for sr in (22050, 16000):
        path = write(tmp_path / f"speech_{sr}.wav", speech_like(1.3, sr=sr), sr=sr)
        y = load_audio(path)
        ref = librosa.load(path, sr=16000)[0]
        assert y.dtype == np.float32 and y.flags.c_contiguous and y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)


def test_stereo_is_downmixed_like_librosa(tmp_path: Path) -> None:
    left, right = speech_like(1.0, seed=1), speech_like(1.0, seed=2)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    y = load_audio(path)
    np.testing.assert_allclose(y, (left + right) / 2, rtol=0, atol=1e-7)
    np.testing.assert_allclose(y, librosa.load(path, sr=16000)[0], rtol=0, atol=1e-6)
    path44 = write(tmp_path / "stereo44.flac", np.stack([left, right, left], axis=1), sr=44100)
    np.testing.assert_allclose(load_audio(path44), librosa.load(path44, sr=16000)[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("suffix", "subtype", "atol"),
    [
        ("wav", "PCM_U8", 1 / 64),
        ("wav", "PCM_16", 1e-4),
        ("wav", "PCM_24", 1e-6),
        ("wav", "PCM_32", 1e-7),
        ("wav", "FLOAT", 0.0),
        ("wav", "DOUBLE", 0.0),
        ("flac", "PCM_S8", 1 / 64),
        ("flac", "PCM_16", 1e-4),
        ("flac", "PCM_24", 1e-6),
    ],
)
def test_sample_formats_load_to_the_same_signal(
    tmp_path: Path, suffix: str, subtype: str, atol: float
) -> None:
    y = speech_like(0.5)
    path = write(tmp_path / f"x_{subtype}.{suffix}", y, subtype=subtype)
    assert sf.info(str(path)).subtype == subtype
    loaded = load_audio(path)
    assert loaded.dtype == np.float32 and loaded.shape == y.shape
    np.testing.assert_allclose(loaded, y, rtol=0, atol=atol)


@pytest.mark.parametrize("sr", [8000, 48000])
def test_other_rates_are_resampled(tmp_path: Path, sr: int) -> None:
    n = int(1.25 * sr) + 7
    path = write(tmp_path / f"x_{sr}.wav", speech_like(n / sr, sr=sr)[:n], sr=sr)
    y = load_audio(path)
    assert y.shape == (int(np.ceil(n * 16000 / sr)),)
    np.testing.assert_allclose(y, librosa.load(path, sr=16000)[0], rtol=0, atol=1e-6)
    assert load_audio(path, sample_rate=sr).shape == (n,)


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    empty = write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    real = write(tmp_path / "real.wav", speech_like(0.5))
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(real.read_bytes()[:20])
    nan = speech_like(0.5)
    nan[100] = np.nan
    nan_path = write(tmp_path / "nan.wav", nan, subtype="FLOAT")
    inf = speech_like(0.5)
    inf[7] = np.inf
    inf_path = write(tmp_path / "inf.flac", inf, subtype="PCM_16")  # inf clips in PCM: must load
    return {
        "missing": (tmp_path / "missing.wav", "does not exist"),
        "text": (text, "cannot be decoded"),
        "empty": (empty, "no samples"),
        "truncated": (truncated, "cannot be decoded"),
        "nan": (nan_path, "non-finite"),
        "directory": (tmp_path, "directory"),
        "_inf_pcm": (inf_path, ""),
    }


@pytest.mark.parametrize("case", ["missing", "text", "empty", "truncated", "nan", "directory"])
def test_bad_audio_raises_audio_error_naming_the_file(tmp_path: Path, case: str) -> None:
    path, reason = _bad_files(tmp_path)[case]
    with pytest.raises(AudioError) as info:
        load_audio(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert str(path) in str(err) and reason in str(err)
    assert err.path == str(path)
    with pytest.raises(AudioError, match=reason):
        compute_logmel(path, CFG)
    clone = pickle.loads(pickle.dumps(err))  # crosses DataLoader/pool worker boundaries intact
    assert str(clone) == str(err)


def test_pcm_file_never_holds_non_finite_values(tmp_path: Path) -> None:
    path, _ = _bad_files(tmp_path)["_inf_pcm"]
    assert np.all(np.isfinite(load_audio(path)))


# --------------------------------------------------------------------------------------------------
# Batched torch path


def _batch(signals: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in signals])
    waves = torch.zeros(len(signals), int(lengths.max()))
    for i, s in enumerate(signals):
        waves[i, : len(s)] = torch.from_numpy(s)
    return waves, lengths


def _check_against_reference(frontend: LogMelTorch, signals: list[np.ndarray], tol: float) -> None:
    cfg = frontend.cfg
    waves, lengths = _batch(signals)
    logmel, n_frames = frontend(waves, lengths)
    assert logmel.dtype == torch.float32 and n_frames.dtype == torch.int64
    assert logmel.shape == (len(signals), cfg.n_mels, int(n_frames.max()))
    for i, y in enumerate(signals):
        ref = logmel_reference(y, cfg)
        assert int(n_frames[i]) == ref.shape[1] == cfg.num_frames(len(y))
        got = logmel[i, :, : ref.shape[1]].numpy()
        assert np.abs(got - ref).max() < tol, (len(y), np.abs(got - ref).max())
        assert torch.all(logmel[i, :, ref.shape[1] :] == cfg.pad_value)


def test_torch_batch_matches_reference_for_different_lengths() -> None:
    signals = [speech_like(s, seed=i) for i, s in enumerate([3.0, 1.0, 2.37, 1.61])]
    signals[2] = signals[2] + 0.05  # a DC offset, removed per utterance
    _check_against_reference(LogMelTorch(CFG), signals, tol=1e-3)


def test_torch_batch_handles_utterances_shorter_than_the_padding() -> None:
    # Shorter than n_fft // 2: numpy's reflect padding reflects repeatedly; so must the torch path.
    signals = [
        speech_like(0.5, seed=1),
        speech_like(0.5, seed=2)[:150],
        speech_like(0.5)[:1],
        speech_like(0.5)[:401],
    ]
    _check_against_reference(LogMelTorch(CFG), signals, tol=1e-3)


@pytest.mark.parametrize(
    "changes",
    [
        {"pad_mode": "constant"},
        {"pad_mode": "edge", "top_db": None},
        {"pad_mode": "symmetric", "window_symmetric": False, "n_fft": 512, "pad_value": -80.0},
        {"remove_dc": False, "preemphasis": 0.0, "power": 1.0, "n_mels": 64, "fmax": 7000.0},
        {"center": False, "win_length": 320, "mel_htk": True, "mel_norm": None},
    ],
)
def test_torch_batch_matches_reference_for_other_configs(changes: dict) -> None:
    cfg = dataclasses.replace(CFG, **changes)
    signals = [speech_like(1.2, seed=4), speech_like(0.7, seed=5) + 0.1]
    _check_against_reference(LogMelTorch(cfg), signals, tol=1e-3)


def test_torch_float32_is_close() -> None:
    signals = [speech_like(1.5, seed=6), speech_like(0.9, seed=7)]
    _check_against_reference(LogMelTorch(CFG, dtype=torch.float32), signals, tol=5e-3)


def test_padding_the_batch_further_changes_nothing() -> None:
    signals = [speech_like(1.0, seed=8), speech_like(0.6, seed=9)]
    waves, lengths = _batch(signals)
    frontend = LogMelTorch(CFG)
    a, na = frontend(waves, lengths)
    b, nb = frontend(torch.nn.functional.pad(waves, (0, 1234)), lengths)
    assert torch.equal(na, nb) and torch.equal(a, b)


@pytest.mark.parametrize("changes", [{}, {"max_abs_norm": True}, {"target_length": 150, "pad_value": -80.0}])
def test_pad_to_target_matches_pad_or_crop(changes: dict) -> None:
    cfg = dataclasses.replace(CFG, **changes)
    signals = [speech_like(2.0, seed=10), speech_like(0.8, seed=11)]
    frontend = LogMelTorch(cfg)
    padded, n_frames = frontend.pad_to_target(*frontend(*_batch(signals)))
    assert padded.shape == (2, 40, cfg.target_length)
    for i, y in enumerate(signals):
        ref, n_ref = pad_or_crop(logmel_reference(y, cfg), cfg)
        assert int(n_frames[i]) == n_ref
        np.testing.assert_allclose(
            padded[i].numpy(), ref, rtol=0, atol=1e-3 if not cfg.max_abs_norm else 1e-5
        )


def test_compute_batch_matches_compute_logmel(tmp_path: Path) -> None:
    paths = [
        write(tmp_path / "a.wav", speech_like(1.4, seed=12)),
        write(tmp_path / "b.flac", speech_like(0.6, sr=22050, seed=13), sr=22050),
        write(tmp_path / "c.wav", speech_like(2.1, seed=14), subtype="PCM_16"),
    ]
    batch, n_frames = compute_batch(paths, CFG, device="cpu")
    assert batch.shape == (3, 40, 2048) and batch.dtype == torch.float32
    for i, p in enumerate(paths):
        ref, n = compute_logmel(p, CFG)
        assert int(n_frames[i]) == n
        assert np.abs(batch[i].numpy() - ref).max() < 1e-3


def test_forward_rejects_bad_lengths() -> None:
    frontend = LogMelTorch(CFG)
    with pytest.raises(ValueError, match="lengths"):
        frontend(torch.zeros(2, 100), torch.tensor([100, 101]))
    with pytest.raises(ValueError, match="lengths"):
        frontend(torch.zeros(2, 100), torch.tensor([0, 50]))
    with pytest.raises(ValueError, match="waves"):
        frontend(torch.zeros(100), torch.tensor([100]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_path_on_cuda_matches_cpu() -> None:
    signals = [speech_like(2.0, seed=15), speech_like(1.1, seed=16)]
    waves, lengths = _batch(signals)
    cpu = LogMelTorch(CFG)
    gpu = LogMelTorch(CFG).to("cuda")
    a, na = cpu(waves, lengths)
    b, nb = gpu(waves.cuda(), lengths.cuda())
    assert torch.equal(na, nb.cpu())
    assert (a - b.cpu()).abs().max() < 1e-4
