"""Teacher-feature files of stage B: computing them, their sidecars, resuming and skipping.

Output format (docs/original.md#s1-3): a pickle (protocol 2) of a ``list`` of N ``(10, D)`` float32
arrays in manifest order, written atomically by :func:`s2i.data.safe_pickle.save_pickle`. Beside it,
``<pickle>.json`` (the *sidecar*) records what produced it::

    {"format": "s2i-image-features/1",
     "settings": {teacher, weights + SHA-256, layers, normalization, image_size, views{...}, ...},
     "manifest": {path, num_images, images_sha256, image_base_path},
     "output":   {pickle, sha256, num_images, views, dim, dtype, pickle_protocol},
     "run":      {device, backend, seconds, images_per_second, created, versions}}

A later run skips a split when the settings (weight files compared by SHA-256, not by path), the
manifest's image list and the pickle's SHA-256 all still match. Work in progress lives in
``<pickle>.partial/`` as one ``.npy`` per chunk of images, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from s2i.data.images import ImageLoadError, load_image, ten_views
from s2i.data.manifests import Manifest, write_manifest
from s2i.data.safe_pickle import save_pickle
from s2i.features.teachers import Teacher
from s2i.files import atomic_write, file_digest, portable_path, write_json_atomic

SIDECAR_FORMAT = "s2i-image-features/1"
PICKLE_PROTOCOL = 2


class FeatureFileError(ValueError):
    """An existing feature file would be overwritten without provenance, or a partial result is unusable."""


def sidecar_path(pickle_path: str | Path) -> Path:
    pickle_path = Path(pickle_path)
    return pickle_path.with_name(pickle_path.name + ".json")


def partial_dir(pickle_path: str | Path) -> Path:
    pickle_path = Path(pickle_path)
    return pickle_path.with_name(pickle_path.name + ".partial")


def manifest_fingerprint(manifest: Manifest) -> dict:
    """What a feature file depends on in its manifest: the ordered image list and each file's size.

    Sizes are cheap to read and survive copying a dataset; regenerating images changes them (or the
    images are identical). Paths are recorded but are not part of the comparison (see :func:`matches`).

    Raises:
        ImageLoadError: an image file does not exist (naming the file and the manifest item).
    """
    h = hashlib.sha256()
    for i, item in enumerate(manifest.items):
        path = manifest.image_path(i)
        if not path.is_file():  # found before any work is done, not hours into it
            raise ImageLoadError(f"image {path} ({manifest.path} item {i}) does not exist")
        h.update(f"{item.image}\t{path.stat().st_size}\n".encode())
    return {
        "path": str(Path(manifest.path).resolve()),
        "num_images": len(manifest),
        "images_sha256": h.hexdigest(),
        "image_base_path": str(Path(manifest.image_base_path).resolve()) if manifest.image_base_path else None,
    }


def _comparable(settings: dict) -> dict:
    """Settings with file paths dropped: weights are identified by their SHA-256."""
    out = dict(settings)
    weights = out.get("weights")
    if isinstance(weights, dict):
        out["weights"] = {k: v for k, v in weights.items() if k.endswith("sha256")}
    return out


def matches(sidecar: dict | None, settings: dict, fingerprint: dict, pickle_path: Path) -> tuple[bool, str]:
    """Whether an earlier result can be reused; the reason when not."""
    if sidecar is None:
        return False, "no sidecar"
    if sidecar.get("format") != SIDECAR_FORMAT:
        return False, f"sidecar format {sidecar.get('format')!r}"
    old = _comparable(sidecar.get("settings", {}))
    new = _comparable(settings)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        return False, "settings changed: " + ", ".join(changed)
    old_m = sidecar.get("manifest", {})
    for key in ("num_images", "images_sha256"):
        if old_m.get(key) != fingerprint[key]:
            return False, f"the manifest's images changed ({key})"
    if not pickle_path.is_file():
        return False, "the pickle is missing"
    if file_digest(pickle_path) != sidecar.get("output", {}).get("sha256"):
        return False, "the pickle differs from the one the sidecar describes"
    return True, "up to date"


def read_sidecar(pickle_path: str | Path) -> dict | None:
    path = sidecar_path(pickle_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def image_views(teacher: Teacher, image: np.ndarray, flip: str) -> np.ndarray:
    """One loaded image → its ten views ``(10, 3, S, S)`` float32 in the teacher's input space."""
    return ten_views(teacher.prepare(image), teacher.crop, flip)


def iter_features(
    manifest: Manifest,
    teacher: Teacher,
    flip: str,
    start: int,
    stop: int,
    *,
    batch_size: int = 16,
    min_side: int = 16,
    on_image: Callable[[], None] | None = None,
) -> Iterator[np.ndarray]:
    """Features of images ``start..stop-1``, one ``(10, D)`` float32 array per image, in order.

    ``batch_size`` images (10× as many views) go through the network at once. Loading errors name the
    file and the manifest item.
    """
    pending: list[np.ndarray] = []

    def flush() -> Iterator[np.ndarray]:
        batch = np.concatenate(pending)
        feats = teacher.forward(batch).astype(np.float32, copy=False)
        pending.clear()
        yield from feats.reshape(-1, 10, feats.shape[1])

    for i in range(start, stop):
        where = f"{manifest.path} item {i}"
        image = load_image(manifest.image_path(i), where=where, min_side=min_side)
        pending.append(image_views(teacher, image, flip))
        if on_image:
            on_image()
        if len(pending) == batch_size:
            yield from flush()
    if pending:
        yield from flush()


class PartialResult:
    """Chunks of finished features in ``<pickle>.partial/``, tied to one set of settings.

    A folder left by a run with other settings (or another manifest) is discarded.
    """

    def __init__(self, pickle_path: Path, key: dict) -> None:
        self.root = partial_dir(pickle_path)
        self.key = key
        stamp = self.root / "settings.json"
        if self.root.is_dir():
            try:
                old = json.loads(stamp.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                old = None
            if old != json.loads(json.dumps(key)):
                shutil.rmtree(self.root)
        if not self.root.is_dir():
            self.root.mkdir(parents=True)
            write_json_atomic(stamp, key)

    def _chunk(self, start: int, stop: int) -> Path:
        return self.root / f"chunk_{start:08d}_{stop:08d}.npy"

    def has(self, start: int, stop: int) -> bool:
        return self._chunk(start, stop).is_file()

    def save(self, start: int, stop: int, feats: np.ndarray) -> None:
        path = self._chunk(start, stop)
        with atomic_write(path, make_parents=False) as f:
            np.save(f, np.ascontiguousarray(feats, dtype=np.float32), allow_pickle=False)

    def load(self, start: int, stop: int, views: int, dim: int) -> np.ndarray:
        path = self._chunk(start, stop)
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise FeatureFileError(f"{path}: unreadable partial result ({exc}); delete {self.root}") from None
        if arr.shape != (stop - start, views, dim) or arr.dtype != np.float32:
            raise FeatureFileError(f"{path}: shape {arr.shape} {arr.dtype}, expected {(stop - start, views, dim)} "
                                   f"float32; delete {self.root}")
        return arr

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def add_feature_path_to_manifest(manifest_path: str | Path, feature_path: str | Path) -> str:
    """Adds ``image_feature_path`` to a manifest JSON, keeping every other key and the item order.

    The path is written as the other stages write manifest paths (``s2i.files.portable_path``:
    ``./relative`` under the working directory, else absolute), just before ``data`` where the
    original schema has it; the file is replaced atomically.

    Returns:
        The string written.
    """
    manifest_path = Path(manifest_path)
    raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    value = portable_path(feature_path)
    out = {}
    for k, v in raw.items():
        if k == "data" and "image_feature_path" not in out:
            out["image_feature_path"] = value
        out[k] = v
    out.setdefault("image_feature_path", value)
    write_manifest(manifest_path, out)
    return value


def compute_split(
    manifest: Manifest,
    teacher: Teacher,
    *,
    pickle_path: Path,
    flip: str,
    settings: dict,
    batch_size: int,
    chunk_size: int,
    min_side: int,
    force: bool,
    progress: bool,
    log: Callable[[str], None],
    run_info: dict,
) -> dict:
    """Computes (or reuses) one split's features; returns a summary.

    Raises:
        FeatureFileError: ``pickle_path`` exists but was not written by this stage (no sidecar) and
            ``force`` is off; this protects e.g. the authors' released features.
        ImageLoadError: an image is missing, corrupt or too small.
    """
    fingerprint = manifest_fingerprint(manifest)
    sidecar = read_sidecar(pickle_path)
    ok, why = matches(sidecar, settings, fingerprint, pickle_path)
    if ok and not force:
        log(f"{pickle_path}: up to date ({sidecar['output']['num_images']} images, {sidecar['output']['dim']}-d, "
            f"{settings['teacher']}); skipped (--force recomputes)")
        return {"pickle": str(pickle_path), "skipped": True, "num_images": len(manifest),
                "dim": int(sidecar["output"]["dim"]), "seconds": 0.0}
    if pickle_path.exists() and sidecar is None and not partial_dir(pickle_path).is_dir() and not force:
        raise FeatureFileError(
            f"{pickle_path} exists but has no sidecar {sidecar_path(pickle_path).name}, so it was not written by "
            "this script (e.g. the authors' released features); pass --force to overwrite it, or point the "
            "manifest's image_feature_path elsewhere")
    if sidecar is not None and not ok:
        log(f"{pickle_path}: recomputing ({why})")
    pickle_path.parent.mkdir(parents=True, exist_ok=True)
    for stale in pickle_path.parent.glob(f".{pickle_path.name}.*.tmp"):
        stale.unlink(missing_ok=True)  # the pickle or sidecar a killed run was writing
    key = {"settings": settings, "manifest": {k: fingerprint[k] for k in ("num_images", "images_sha256")}}
    partial = PartialResult(pickle_path, key)
    n = len(manifest)
    bounds = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    todo = [(a, b) for a, b in bounds if not partial.has(a, b)]
    done_images = n - sum(b - a for a, b in todo)
    if done_images:
        log(f"{pickle_path}: resuming, {done_images} of {n} images already done")
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=n - done_images, desc=f"{settings['teacher']} {manifest.path.name}", unit="img",
                   dynamic_ncols=True)
    t0 = time.time()
    try:
        for a, b in todo:
            feats = np.stack(list(iter_features(manifest, teacher, flip, a, b, batch_size=batch_size,
                                                min_side=min_side, on_image=bar.update if bar else None)))
            partial.save(a, b, feats)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.time() - t0
    dim = teacher.dim
    rows: list[np.ndarray] = []
    for a, b in bounds:
        rows.extend(partial.load(a, b, 10, dim))
    save_pickle(rows, pickle_path, protocol=PICKLE_PROTOCOL)
    computed = n - done_images
    record = {
        "format": SIDECAR_FORMAT,
        "settings": settings,
        "manifest": fingerprint,
        "output": {"pickle": str(pickle_path.resolve()), "sha256": file_digest(pickle_path), "num_images": n,
                   "views": 10, "dim": dim, "dtype": "float32", "pickle_protocol": PICKLE_PROTOCOL,
                   "layout": "list of N (views, dim) arrays in manifest order"},
        "run": {**run_info, "seconds": round(seconds, 3), "images_computed": computed,
                "images_per_second": round(computed / seconds, 3) if seconds > 0 and computed else None,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }
    write_json_atomic(sidecar_path(pickle_path), record)
    partial.remove()
    rate = f", {computed / seconds:.2f} images/s" if seconds > 0 and computed else ""
    log(f"{pickle_path}: wrote {n} × (10, {dim}) float32 in {seconds:.1f}s{rate}")
    return {"pickle": str(pickle_path), "skipped": False, "num_images": n, "dim": dim, "seconds": seconds}

