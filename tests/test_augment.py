"""Spectrogram augmentation: off by default and then the identity; each kind does what it says, within
its bounds, reproducibly; and the training config reaches it."""

import numpy as np
import pytest

from Audio_to_Image.augment import SpecAugmentConfig, augment_logmel
from Audio_to_Image.train_audio_encoder import EncoderTrainConfig
from s2i.config import ConfigError, parse_config


def _spec(n_mels=40, length=100, n=60, pad=-3.0):
    rng = np.random.default_rng(0)
    x = np.full((n_mels, length), pad, dtype=np.float32)
    x[:, :n] = rng.standard_normal((n_mels, n)).astype(np.float32)
    return x, n


def test_off_by_default_is_the_identity():
    spec, n = _spec()
    out, m = augment_logmel(spec, n, SpecAugmentConfig(), np.random.default_rng(1))
    assert m == n and out is spec


def test_time_stretch_changes_length_within_bounds_and_keeps_padding():
    spec, n = _spec(pad=-3.0)
    cfg = SpecAugmentConfig(time_stretch=0.2)
    lengths = set()
    for seed in range(30):
        out, m = augment_logmel(spec, n, cfg, np.random.default_rng(seed), pad_value=-3.0)
        assert out.shape == spec.shape and round(n * 0.8) <= m <= round(n * 1.2)
        assert np.all(out[:, m:] == -3.0)
        # The first and last frames are kept (the resampling spans the clip end to end).
        np.testing.assert_allclose(out[:, 0], spec[:, 0], atol=1e-6)
        np.testing.assert_allclose(out[:, m - 1], spec[:, n - 1], atol=1e-6)
        lengths.add(m)
    assert len(lengths) > 5


def test_stretch_never_grows_past_the_target_length():
    spec, n = _spec(length=64, n=62)
    out, m = augment_logmel(spec, n, SpecAugmentConfig(time_stretch=0.5), np.random.default_rng(3))
    assert out.shape == (40, 64) and m <= 64


def test_frequency_warp_moves_a_band():
    spec = np.zeros((40, 50), dtype=np.float32)
    spec[20] = 1.0  # one bright mel band
    out, _ = augment_logmel(spec, 50, SpecAugmentConfig(freq_warp=0.3), np.random.default_rng(0))
    peak = int(np.argmax(out[:, 10]))
    assert peak != 20 and 20 / 1.3 - 1 <= peak <= 20 / 0.7 + 1


def test_masks_fill_with_the_mean_and_are_reproducible():
    spec, n = _spec()
    cfg = SpecAugmentConfig(freq_masks=2, freq_mask_width=5, time_masks=2, time_mask_width=8)
    a, _ = augment_logmel(spec, n, cfg, np.random.default_rng(7))
    b, _ = augment_logmel(spec, n, cfg, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    changed = a[:, :n] != spec[:, :n]
    assert changed.any()
    assert np.allclose(a[:, :n][changed], spec[:, :n].mean(), atol=1e-5)


def test_config_flags_and_checks():
    cfg, _ = parse_config(EncoderTrainConfig, ["--augment.time_stretch", "0.1", "--augment.freq_masks", "2"], "t")
    assert cfg.augment.time_stretch == 0.1 and cfg.augment.freq_masks == 2 and cfg.augment.active
    with pytest.raises(ConfigError, match="time_stretch"):
        SpecAugmentConfig(time_stretch=1.5)
