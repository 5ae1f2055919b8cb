"""Tests for the on-disk log-mel feature cache (Audio_to_Image/feature_cache.py)."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from Audio_to_Image import audio, feature_cache
from Audio_to_Image.audio import AudioError, FrontEndConfig, compute_logmel
from Audio_to_Image.feature_cache import FeatureCache, header_frames, load_features

SR = 16000
CFG = FrontEndConfig()


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A gliding harmonic tone with formant-like weights and syllable-rate AM (see test_audio.py)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 175 + 75 * np.sin(2 * np.pi * 0.5 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    y = sum(np.exp(-0.5 * ((k * 175 - 700) / 400) ** 2) * np.sin(k * phase) / k for k in range(1, 30))
    y = y * (0.2 + 0.8 * np.sin(2 * np.pi * 4.0 * t) ** 2) + 0.01 * rng.standard_normal(t.shape)
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def make_wav(path: Path, seconds: float = 1.0, seed: int = 0) -> Path:
    sf.write(str(path), speech_like(seconds, seed), SR, subtype="PCM_16")
    return path


def forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("audio was decoded although the cache should have been used")

    for module in (audio, feature_cache):
        monkeypatch.setattr(module, "load_audio", boom)
    monkeypatch.setattr(feature_cache, "compute_entry", boom)


def entry_files(cache: FeatureCache) -> list[Path]:
    return sorted(cache.dir.glob("*/*.npy"))


def test_miss_then_hit_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav = make_wav(tmp_path / "a.wav", seconds=1.2)
    cache = FeatureCache(tmp_path / "cache", CFG)
    assert not cache.contains(wav)
    first = cache.get(wav)
    assert first.shape == (40, 121) and first.dtype == np.float32
    assert cache.contains(wav) and len(entry_files(cache)) == 1
    entry = cache.entry_path(wav)
    assert entry.parent.name == entry.stem[:2] and entry.parent.parent == tmp_path / "cache" / CFG.cache_key()

    forbid_decoding(monkeypatch)
    np.testing.assert_array_equal(cache.get(wav), first)
    padded, n = FeatureCache(tmp_path / "cache", CFG).load(wav)  # a fresh object finds the same entry
    assert padded.shape == (40, 2048) and n == 121


def test_frontend_json_describes_the_config(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache", CFG)
    meta = json.loads((cache.dir / "frontend.json").read_text())
    assert meta["cache_key"] == CFG.cache_key()
    assert FrontEndConfig.from_dict(meta["config"]) == CFG


@pytest.mark.parametrize("changes", [{}, {"max_abs_norm": True}, {"target_length": 64, "pad_value": -80.0}])
def test_load_is_bit_identical_to_compute_logmel(tmp_path: Path, changes: dict) -> None:
    cfg = dataclasses.replace(CFG, **changes)
    cache = FeatureCache(tmp_path / "cache", cfg)
    for seconds, seed in [(0.9, 1), (1.7, 2)]:
        wav = make_wav(tmp_path / f"s{seed}.wav", seconds, seed)
        expected, n_expected = compute_logmel(wav, cfg)
        for _ in range(2):  # miss, then hit
            got, n = cache.load(wav)
            assert n == n_expected and got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)
            assert got.tobytes() == expected.tobytes()
        assert cache.get(wav).shape == (40, n_expected)  # stored cropped, unpadded


def test_long_audio_is_stored_cropped(tmp_path: Path) -> None:
    cfg = FrontEndConfig(target_length=100)
    wav = make_wav(tmp_path / "long.wav", seconds=1.5)
    cache = FeatureCache(tmp_path / "cache", cfg)
    assert cache.get(wav).shape == (40, 100)
    padded, n = cache.load(wav)
    assert n == 100
    np.testing.assert_array_equal(padded, compute_logmel(wav, cfg)[0])


def test_config_change_uses_another_folder(tmp_path: Path) -> None:
    wav = make_wav(tmp_path / "a.wav")
    a = FeatureCache(tmp_path / "cache", CFG)
    b = FeatureCache(tmp_path / "cache", FrontEndConfig(n_mels=64))
    assert a.dir != b.dir
    assert a.get(wav).shape[0] == 40 and b.get(wav).shape[0] == 64
    assert len(entry_files(a)) == 1 and len(entry_files(b)) == 1


def test_rewritten_or_touched_audio_is_recomputed(tmp_path: Path) -> None:
    wav = make_wav(tmp_path / "a.wav", seconds=1.0, seed=1)
    cache = FeatureCache(tmp_path / "cache", CFG)
    old = cache.get(wav)
    old_entry = cache.entry_path(wav)

    make_wav(wav, seconds=1.0, seed=2)  # same size, new content
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, old_entry.stat().st_mtime_ns + 10**9))
    new_entry = cache.entry_path(wav)
    assert new_entry != old_entry
    new = cache.get(wav)
    assert not np.array_equal(new, old)
    np.testing.assert_array_equal(new, compute_logmel(wav, CFG)[0][:, : new.shape[1]])

    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))  # touch only
    assert cache.entry_path(wav) not in (old_entry, new_entry)
    assert not cache.contains(wav)
    np.testing.assert_array_equal(cache.get(wav), new)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape", "wrong_dtype", "empty"])
def test_corrupt_entry_is_recomputed(tmp_path: Path, damage: str) -> None:
    wav = make_wav(tmp_path / "a.wav")
    cache = FeatureCache(tmp_path / "cache", CFG)
    good = cache.get(wav)
    entry = cache.entry_path(wav)
    raw = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        entry.write_bytes(b"\x00garbage" * 10)
    elif damage == "wrong_shape":
        np.save(entry, good[:, :, None])
    elif damage == "wrong_dtype":
        np.save(entry, good.astype(np.float64))
    else:
        entry.write_bytes(b"")
    np.testing.assert_array_equal(cache.get(wav), good)
    np.testing.assert_array_equal(np.load(entry), good)  # repaired on disk


def test_prefill_counts_and_skips_existing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wavs = [make_wav(tmp_path / f"w{i}.wav", 0.5 + 0.1 * i, seed=i) for i in range(5)]
    cache = FeatureCache(tmp_path / "cache", CFG)
    cache.get(wavs[0])
    assert cache.prefill(wavs + [wavs[1]], progress=False) == 4  # duplicates computed once
    assert len(entry_files(cache)) == 5
    assert cache.prefill(wavs, progress=False) == 0
    forbid_decoding(monkeypatch)
    for w in wavs:
        assert cache.get(w).shape == (40, CFG.num_frames(len(sf.read(str(w))[0])))


def test_prefill_with_workers(tmp_path: Path) -> None:
    wavs = [make_wav(tmp_path / f"w{i}.wav", 0.4, seed=i) for i in range(4)]
    cache = FeatureCache(tmp_path / "cache", CFG)
    assert cache.prefill(wavs, num_workers=2, progress=False) == 4
    for w in wavs:
        np.testing.assert_array_equal(cache.load(w)[0], compute_logmel(w, CFG)[0])
    assert not [p for p in cache.dir.rglob("*") if p.name.endswith(".tmp")]  # no temp files left behind


def test_concurrent_writers_of_one_entry(tmp_path: Path) -> None:
    wav = make_wav(tmp_path / "a.wav")
    cache = FeatureCache(tmp_path / "cache", CFG)
    job = (str(cache.root), CFG.to_dict(), str(wav))
    with multiprocessing.Pool(2) as pool:
        pool.map(feature_cache._prefill_one, [job] * 6, chunksize=1)
    assert len(entry_files(cache)) == 1
    assert not [p for p in cache.dir.rglob("*") if p.name.endswith(".tmp")]
    np.testing.assert_array_equal(cache.load(wav)[0], compute_logmel(wav, CFG)[0])


def test_prefill_propagates_bad_audio(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    cache = FeatureCache(tmp_path / "cache", CFG)
    with pytest.raises(AudioError, match="bad.wav"):
        cache.prefill([bad], progress=False)
    with pytest.raises(AudioError, match="missing.wav"):
        cache.get(tmp_path / "missing.wav")
    assert not entry_files(cache)


def test_load_features_with_and_without_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav = make_wav(tmp_path / "a.wav")
    expected, n_expected = compute_logmel(wav, CFG)
    padded, n = load_features(wav, CFG, None)
    np.testing.assert_array_equal(padded, expected)
    cache = FeatureCache(tmp_path / "cache", CFG)
    padded, n = load_features(wav, CFG, cache)
    assert n == n_expected
    np.testing.assert_array_equal(padded, expected)
    with pytest.raises(ValueError, match="config"):
        load_features(wav, FrontEndConfig(n_mels=64), cache)

    calls = []
    real = audio.load_audio
    monkeypatch.setattr(audio, "load_audio", lambda *a, **k: calls.append(a) or real(*a, **k))
    load_features(wav, CFG, None)
    load_features(wav, CFG, None)
    assert len(calls) == 2  # cache off: decoded every time


def test_cache_pickles_for_dataloader_workers(tmp_path: Path) -> None:
    wav = make_wav(tmp_path / "a.wav")
    cache = FeatureCache(tmp_path / "cache", CFG)
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.dir == cache.dir and clone.cfg == cache.cfg
    np.testing.assert_array_equal(clone.get(wav), cache.get(wav))


@pytest.mark.parametrize("sample_rate,seconds", [(16000, 1.234), (16000, 0.01), (22050, 0.77), (8000, 1.01),
                                                 (44100, 0.5)])
def test_header_frames_equal_the_loaded_frame_count(tmp_path: Path, sample_rate: int, seconds: float) -> None:
    """What length-bucketed batches are planned with: the frame count from the header, no decoding, also
    for files that load_audio resamples."""
    wav = tmp_path / "a.wav"
    y = np.random.default_rng(0).uniform(-0.5, 0.5, int(seconds * sample_rate)).astype(np.float32)
    sf.write(str(wav), y, sample_rate, subtype="PCM_16")
    assert header_frames(wav, CFG) == compute_logmel(wav, CFG)[1]
    short = FrontEndConfig(target_length=50)
    assert header_frames(wav, short) == compute_logmel(wav, short)[1] == min(50, header_frames(wav, CFG))


def test_header_frames_of_a_bad_file_name_it(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="missing.wav"):
        header_frames(tmp_path / "missing.wav", CFG)
    (tmp_path / "bad.wav").write_text("not audio")
    with pytest.raises(AudioError, match="bad.wav.*header"):
        header_frames(tmp_path / "bad.wav", CFG)
