"""A small generated speech–image dataset for tests, benchmarks and smoke runs, made in seconds.

Each class has its own "word": a sequence of gliding harmonic syllables whose pitches and formants
are drawn per class. Every caption of an image says its class's word with its own speed, pitch,
loudness and noise, 1–3 s long. Teacher features are class centres plus image and view noise, so a
good speech encoder can separate the classes and a bad one cannot. Written in the birds schema
(docs/original.md#s1-2): ``train.json``/``test.json``, ``{train,test}/image_features.pickle`` and 16 kHz wavs.

    python -m s2i.data.synthetic --out data/toy
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from s2i.data.safe_pickle import save_pickle


@dataclass(frozen=True)
class SyntheticSpec:
    num_classes: int = 4
    train_images_per_class: int = 6
    test_images_per_class: int = 3
    captions_per_image: int = 3
    feature_dim: int = 1024
    views: int = 10
    sample_rate: int = 16000
    min_seconds: float = 1.0
    max_seconds: float = 3.0
    seed: int = 0


def _class_word(rng: np.random.Generator) -> list[tuple[float, float, float, float]]:
    """(start f0, end f0, first formant, second formant) of each syllable of a class's word."""
    return [
        (rng.uniform(90, 260), rng.uniform(90, 260), rng.uniform(300, 900), rng.uniform(900, 2600))
        for _ in range(int(rng.integers(2, 5)))
    ]


def speak_word(word, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One utterance of ``word``: harmonic glides shaped by two formant bumps, with a gap between syllables."""
    n = int(seconds * sr)
    y = np.zeros(n, dtype=np.float64)
    pitch = rng.uniform(0.85, 1.15)
    slots = np.linspace(0, n, len(word) + 1).astype(int)
    for (f0a, f0b, fa, fb), lo, hi in zip(word, slots[:-1], slots[1:]):
        m = int((hi - lo) * rng.uniform(0.6, 0.85))
        t = np.arange(m) / sr
        f0 = pitch * np.linspace(f0a, f0b, m)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        seg = np.zeros(m)
        for h in range(1, int(4000 / max(f0a, f0b))):
            fh = h * f0
            gain = np.exp(-(((fh - fa) / 150.0) ** 2)) + 0.6 * np.exp(-(((fh - fb) / 250.0) ** 2)) + 0.02
            seg += gain * np.sin(h * phase)
        env = np.sin(np.pi * np.arange(m) / m) ** 0.5
        y[lo: lo + m] += seg * env * (1.0 + 0.3 * np.sin(2 * np.pi * 4.0 * t))
    y /= max(np.abs(y).max(), 1e-9)
    y = y * rng.uniform(0.3, 0.8) + rng.normal(0, rng.uniform(0.002, 0.01), n)
    return y.astype(np.float32)


def make_dataset(root: str | Path, spec: SyntheticSpec | None = None) -> dict[str, Path]:
    """Writes the dataset under ``root``; returns the paths of the two manifests."""
    root = Path(root)
    spec = spec or SyntheticSpec()
    rng = np.random.default_rng(spec.seed)
    words = [_class_word(rng) for _ in range(spec.num_classes)]
    centres = rng.normal(0.0, 1.0, (spec.num_classes, spec.feature_dim))
    out = {}
    for split, per_class in (("train", spec.train_images_per_class), ("test", spec.test_images_per_class)):
        items, feats = [], []
        for c in range(spec.num_classes):
            cls = f"{c + 1:03d}.class_{c + 1}"
            for i in range(per_class):
                stem = f"{cls}/{split}_{i:03d}"
                audio = []
                for k in range(spec.captions_per_image):
                    rel = f"{stem}_{k}.wav"
                    path = root / "audio" / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    secs = rng.uniform(spec.min_seconds, spec.max_seconds)
                    sf.write(path, speak_word(words[c], secs, spec.sample_rate, rng), spec.sample_rate,
                             subtype="PCM_16")
                    audio.append(rel)
                items.append({"image": f"{stem}.jpg", "class": cls, "audio": audio,
                              "text": [f"the word of class {c + 1}"] * spec.captions_per_image})
                image_feat = centres[c] + rng.normal(0, 0.3, spec.feature_dim)
                views = image_feat + rng.normal(0, 0.1, (spec.views, spec.feature_dim))
                feats.append(np.abs(views).astype(np.float32))
        feat_path = root / split / "image_features.pickle"
        feat_path.parent.mkdir(parents=True, exist_ok=True)
        save_pickle(feats, feat_path)
        manifest = {
            "image_feature_path": str(feat_path.resolve()),
            "audio_base_path": str((root / "audio").resolve()),
            "image_base_path": str((root / "images").resolve()),
            "data": items,
        }
        out[split] = root / f"{split}.json"
        out[split].write_text(json.dumps(manifest, indent=1))
    return out


def make_tiny_gan_dataset(root: str | Path) -> Path:
    """A tiny generator-stage set: 3 classes x 6 images (a coloured square on grey, 80 px), 2 captions each,
    and 24-d 'speech embeddings' (``<split>/audio_features_t.pickle``) that carry the class, in both splits.
    Enough for a StackGAN to learn from in a few CPU steps (tests, benchmarks/kill_resume.py)."""
    root = Path(root)
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    items = []
    for c in range(3):
        for i in range(6):
            img = np.full((80, 80, 3), 120, np.uint8)
            img[20:60, 20:60] = colours[c]
            Image.fromarray(img).save(root / "images" / f"{c}_{i}.png")
            items.append({"image": f"{c}_{i}.png", "class": f"{c + 1:03d}.c{c}", "text": ["x", "y"],
                          "audio": [f"{c}_{i}_0.wav", f"{c}_{i}_1.wav"]})
    for split in ("train", "test"):
        (root / split).mkdir()
        manifest = {"image_feature_path": "unused.pickle", "audio_base_path": "audio",
                    "image_base_path": str(root / "images"), "data": items}
        (root / f"{split}.json").write_text(json.dumps(manifest))
        emb = np.stack([np.stack([np.repeat(np.eye(3)[c], 8) + rng.normal(0, 0.1, 24) for _ in range(2)])
                        for c in range(3) for _ in range(6)]).astype(np.float32)
        save_pickle(emb, root / split / "audio_features_t.pickle")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a small generated speech–image dataset.")
    parser.add_argument("--out", required=True, help="dataset folder to create")
    for name, default in SyntheticSpec().__dict__.items():
        parser.add_argument(f"--{name}", type=type(default), default=default, help=f"default {default}")
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    paths = make_dataset(out, SyntheticSpec(**args))
    print(f"wrote {paths['train']} and {paths['test']}")


if __name__ == "__main__":
    main()
