"""Stage F's inputs: the generated images of an evaluation folder, the test captions' voices, and the
helpers the report needs.

Inputs are the files earlier stages wrote (docs/original.md#s1): the test manifest (captions, audio, real
images, and for TTS-made sets each caption's voice) and the generator's evaluation folder
(``<run>/Model/iteration<N>/flat_<res>/``, one PNG per caption and sample, named as
:mod:`s2i.data.naming` says: ``<key with '/' as '__'>_sentence<i>_<k>.png``).

Voices: a caption whose TTS voice never spoke a training caption is *held out*. Every per-caption
metric (speech→image retrieval, attribute accuracy) is reported for all test captions, the seen voices
and the held-out voices, so a model that only understands its training speakers shows it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from s2i.data.manifests import Manifest
from s2i.data.naming import flat_key, parse_generated_name
from s2i.metrics.context import EvaluationError, GeneratedImage

VOICE_GROUPS = ("all", "seen voices", "held-out voices")


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
    keys = {flat_key(str(Path(it.image).with_suffix(""))): i for i, it in enumerate(manifest.items)}
    out = []
    for path in sorted(folder.glob("*.png")):
        parsed = parse_generated_name(path)
        if parsed is None or parsed[0] not in keys:
            raise EvaluationError(f"{path}: the name matches no item of {manifest.path}; expected "
                                  f"<image key>_sentence<i>_<k>.png as StackGAN's evaluation writes it")
        key, caption, sample = parsed
        item = keys[key]
        if caption >= len(manifest.items[item].audio):
            raise EvaluationError(f"{path}: caption {caption}, but {manifest.items[item].image} has "
                                  f"{len(manifest.items[item].audio)} in {manifest.path}")
        out.append(GeneratedImage(path, item, caption, sample))
    if not out:
        raise EvaluationError(f"{folder} holds no generated .png images")
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
    "VOICE_GROUPS", "caption_voices", "finite", "generated_images", "generated_resolutions", "pick_samples",
    "voice_groups",
]
