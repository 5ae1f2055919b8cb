"""Stage F's scoring: every metric of a generator's test-set images, and the results report.

Inputs are the files earlier stages wrote (shared/SPEC.md §1): the test manifest (captions, audio, real
images, and for TTS-made sets each caption's voice), the speech embeddings of stage D, the teacher
features of stage B, and the generator's evaluation folder (``<run>/Model/iteration<N>/flat_<res>/``,
one PNG per caption and sample, named ``<key with '/' as '__'>_sentence<i>_<k>.png``).

Voices: a caption whose TTS voice never spoke a training caption is *held out*. Every per-caption
metric (speech→image retrieval, attribute accuracy) is reported for all test captions, the seen voices
and the held-out voices, so a model that only understands its training speakers shows it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from s2i.data.manifests import Manifest
from s2i.data.safe_pickle import load_pickle
from s2i.metrics.retrieval import (
    class_centre_accuracy,
    mean_average_precision,
    precision_at_k,
    recall_at_k,
    similarity_matrix,
)

GENERATED_NAME = re.compile(r"^(?P<key>.+)_sentence(?P<caption>\d+)_(?P<sample>\d+)\.png$")
VOICE_GROUPS = ("all", "seen voices", "held-out voices")


class EvaluationError(ValueError):
    """The inputs of the evaluation do not fit together (a missing folder, a name no test item has, ...)."""


@dataclass(frozen=True)
class GeneratedImage:
    """One generated PNG and the test caption it was drawn from."""

    path: Path
    item: int  # index into the test manifest
    caption: int
    sample: int


# --------------------------------------------------------------------------- generated images


def generated_resolutions(images_dir: Path) -> list[int]:
    """The ``flat_<res>`` resolutions under a generator's evaluation folder, ascending."""
    found = sorted(int(p.name[5:]) for p in images_dir.glob("flat_*") if p.is_dir() and p.name[5:].isdigit())
    if not found:
        raise EvaluationError(f"{images_dir} has no flat_<resolution>/ folder; expected the output of "
                              f"`StackGAN/main.py --no-TRAIN.FLAG --eval_net_g G.pth` (…/Model/iteration<N>/)")
    return found


def generated_images(folder: Path, manifest: Manifest) -> list[GeneratedImage]:
    """Every PNG of a ``flat_<res>`` folder, matched to its test item and caption (sorted by name)."""
    keys = {str(Path(it.image).with_suffix("")).replace("/", "__"): i for i, it in enumerate(manifest.items)}
    out = []
    for path in sorted(folder.glob("*.png")):
        m = GENERATED_NAME.match(path.name)
        if m is None or m["key"] not in keys:
            raise EvaluationError(f"{path}: the name matches no item of {manifest.path}; expected "
                                  f"<image key>_sentence<i>_<k>.png as StackGAN's evaluation writes it")
        item, caption = keys[m["key"]], int(m["caption"])
        if caption >= len(manifest.items[item].audio):
            raise EvaluationError(f"{path}: caption {caption}, but {manifest.items[item].image} has "
                                  f"{len(manifest.items[item].audio)} in {manifest.path}")
        out.append(GeneratedImage(path, item, caption, int(m["sample"])))
    if not out:
        raise EvaluationError(f"{folder} holds no generated .png images")
    return out


def resized_copies(paths: Sequence[Path], size: int, folder: Path) -> list[Path]:
    """Real images resized (bicubic) to the generator's resolution, written once into ``folder``.

    FID compares like with like: the generated images are ``size`` px, so the real ones are too.
    """
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(paths):
        dst = folder / f"{i:06d}_{src.stem}.png"
        if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
            with Image.open(src) as im:
                img = im.convert("RGB").resize((size, size), Image.BICUBIC)
            tmp = dst.with_name(f".{dst.name}.partial")
            img.save(tmp, format="PNG")
            tmp.replace(dst)
        out.append(dst)
    return out


# --------------------------------------------------------------------------- voices


def caption_voices(manifest_path: Path) -> list[list[str | None]]:
    """The TTS voice of every caption of a manifest (None where the manifest records none)."""
    data = json.loads(Path(manifest_path).read_text(encoding="utf-8"))
    entries = data.get("data", data if isinstance(data, list) else [])
    out = []
    for entry in entries:
        n = len(entry.get("audio") or entry.get("wav") or [])
        tts = entry.get("tts") or []
        voices = [t.get("voice") if isinstance(t, dict) else None for t in tts]
        out.append((voices + [None] * n)[:n] if n else voices)
    return out


def voice_groups(test_voices: list[list[str | None]], train_voices: list[list[str | None]]
                 ) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Masks over the flattened (item, caption) test captions for each of :data:`VOICE_GROUPS`.

    Returns:
        (group → boolean mask of length Σ captions, {"seen": [...], "held_out": [...]} voice names).
        Without voice records the seen/held-out groups are empty.
    """
    seen = {v for caps in train_voices for v in caps if v}
    flat = [v for caps in test_voices for v in caps]
    known = np.array([v is not None for v in flat], dtype=bool)
    is_seen = np.array([v in seen for v in flat], dtype=bool)
    groups = {"all": np.ones(len(flat), dtype=bool), "seen voices": known & is_seen,
              "held-out voices": known & ~is_seen}
    names = {"seen": sorted({v for v in flat if v and v in seen}),
             "held_out": sorted({v for v in flat if v and v not in seen})}
    return groups, names


# --------------------------------------------------------------------------- speech encoder


def retrieval_metrics(speech: np.ndarray, caption_labels: np.ndarray, image_feats: np.ndarray,
                      image_labels: np.ndarray, k: int = 50) -> dict[str, float]:
    """Speech-encoder metrics of a set of caption embeddings against every test image.

    Args:
        speech: ``(Q, D)`` caption embeddings; ``caption_labels (Q,)`` their classes.
        image_feats: ``(N, D)`` teacher features of the test images (one view each); ``image_labels (N,)``.
        k: the cut-off of the paper's precision (``ap50``).
    Returns:
        ``accu`` and ``ap{k}`` (the paper's class-centre metrics in percent, k capped at N),
        ``s2i_R1/5/10`` and ``s2i_mAP`` (speech query → image gallery, class level, cosine), ``queries``.
    """
    sim = similarity_matrix(speech, image_feats, "cosine")
    rec = recall_at_k(sim, caption_labels, image_labels, (1, 5, 10))
    # The class-centre metrics need a speech centre for every image class; a small group (one voice) may
    # miss a class, and then they are not defined.
    complete = set(np.unique(image_labels)) <= set(np.unique(caption_labels))
    out = {
        "accu": class_centre_accuracy(image_feats, speech, image_labels, caption_labels) if complete else math.nan,
        f"ap{k}": (precision_at_k(image_feats, speech, image_labels, caption_labels, min(k, len(image_feats)))
                   if complete else math.nan),
    }
    out.update({f"s2i_R{kk}": float(v) for kk, v in rec.items()})
    out["s2i_mAP"] = mean_average_precision(sim, caption_labels, image_labels)
    out["queries"] = int(len(speech))
    return out


def load_speech_embeddings(path: Path, n_items: int) -> np.ndarray:
    """Stage D's ``audio_features_<tag>.pickle`` as ``(N, C, D)``, checked against the manifest."""
    emb = np.asarray(load_pickle(path), dtype=np.float64)
    if emb.ndim != 3 or emb.shape[0] != n_items:
        raise EvaluationError(f"{path}: expected speech embeddings of shape (N={n_items}, captions, D), "
                              f"found {emb.shape}")
    return emb


def speech_encoder_section(emb: np.ndarray, image_feats: np.ndarray, labels: np.ndarray,
                           groups: dict[str, np.ndarray], k: int = 50) -> dict[str, dict[str, float]]:
    """:func:`retrieval_metrics` of every caption's embedding, per voice group."""
    n, c, _ = emb.shape
    speech = emb.reshape(n * c, -1)
    cap_labels = np.repeat(labels, c)
    out = {}
    for name, mask in groups.items():
        if mask.shape[0] != n * c:
            raise EvaluationError(f"voice records cover {mask.shape[0]} captions, the embeddings {n * c}")
        if mask.any():
            out[name] = retrieval_metrics(speech[mask], cap_labels[mask], image_feats, labels, k)
    return out


def per_voice_recall(emb: np.ndarray, image_feats: np.ndarray, labels: np.ndarray,
                     voices: list[list[str | None]], held_out: set[str]) -> list[dict[str, Any]]:
    """Speech→image Recall@1 of the captions of each TTS voice, one row per voice (held-out ones first)."""
    n, c, _ = emb.shape
    speech = emb.reshape(n * c, -1)
    cap_labels = np.repeat(labels, c)
    flat = np.array([v for caps in voices for v in caps], dtype=object)
    rows = []
    for voice in sorted({v for v in flat if v}, key=lambda v: (v not in held_out, v)):
        mask = flat == voice
        rec = recall_at_k(similarity_matrix(speech[mask], image_feats, "cosine"), cap_labels[mask], labels, (1,))
        rows.append({"voice": voice, "held out": "yes" if voice in held_out else "", "captions": int(mask.sum()),
                     "s2i_R1": float(rec[1])})
    return rows


def first_views(features: list[np.ndarray]) -> np.ndarray:
    """View 0 (the centre crop) of every image's teacher features, ``(N, D)``."""
    return np.stack([np.asarray(f, dtype=np.float64).reshape(-1, f.shape[-1])[0] for f in features])


# --------------------------------------------------------------------------- helpers for the report


def finite(value: Any) -> Any:
    """JSON has no NaN/inf: they become None (a metric that could not be computed)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def pick_samples(images: list[GeneratedImage], n: int, held_out: np.ndarray, offsets: np.ndarray,
                 seed: int = 0) -> list[tuple[int, int]]:
    """Up to ``n`` (item, caption) pairs for the report: one per item where possible, spread over the
    test set, about a third of them spoken by held-out voices when there are any."""
    pairs = sorted({(g.item, g.caption) for g in images})
    if not pairs or n <= 0:
        return []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    flat = np.array([offsets[i] + c for i, c in pairs])
    out_held = [pairs[j] for j in order if held_out[flat[j]]]
    out_seen = [pairs[j] for j in order if not held_out[flat[j]]]
    n_held = min(len(out_held), n // 3 if out_seen else n)
    chosen, items = [], set()
    for pool, quota in ((out_held, n_held), (out_seen, n - n_held)):
        taken = 0
        for p in pool:
            if taken >= quota:
                break
            if p[0] not in items:
                chosen.append(p)
                items.add(p[0])
                taken += 1
    return sorted(chosen)


__all__ = [
    "EvaluationError", "GeneratedImage", "VOICE_GROUPS", "caption_voices", "finite", "first_views",
    "generated_images", "generated_resolutions", "load_speech_embeddings", "per_voice_recall", "pick_samples",
    "resized_copies", "retrieval_metrics", "speech_encoder_section", "voice_groups",
]
