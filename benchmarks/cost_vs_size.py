"""How stages C, D and F (with the FID pass) grow with the data: wall time and peak memory at 1x, 4x and 16x
a generated dataset, side by side in one run, and a prediction for a CUB-sized run.

    python benchmarks/cost_vs_size.py                                  # scales 1,4,16 of a 40-image base
    python benchmarks/cost_vs_size.py --base_images 960                # 1x = the demo's size (hours on 2 cores)
    python benchmarks/cost_vs_size.py --scales 1,2 --base_images 48    # a smoke run (about 2 minutes)
    python benchmarks/cost_vs_size.py --stages generate,evaluate --keep out/cost   # some stages, data kept

The data is made offline in seconds, without TTS: ``--pool`` distinct clips (a generated "word" of 2-6 s at
16 kHz, CUB's caption lengths) and ``--pool`` distinct 128-px shape pictures, hard-linked under one name per
caption and per image (so every file is a file of its own for every stage, at almost no disk space; the
log-mel cache of stage C does take 61 kB per caption, 9.4 GB for 16x the demo);
manifests in the birds schema with a TTS voice per caption (12 voices in training, 4 more held out in test,
as the demo); random teacher features of stage B's shape (10 views x 1360). A class has
``--images_per_class`` images (40, as the demo), and a fifth of each class is test, as in the demo.

Each stage is its real script in a subprocess, as ``demo.py`` runs it, with a fixed amount of work per item:

* C ``Audio_to_Image/train_audio_encoder.py --config Audio_to_Image/cfg/shapes.yml --epoch 1``: the log-mel
  cache of every caption, one training epoch, the test evaluation;
* D ``Audio_to_Image/extract_audio_feature.py``: every caption of both splits (log-mels from C's cache);
* F ``StackGAN/main.py --no-TRAIN.FLAG``: one image per test caption from an untrained generator of the demo
  preset's size (``StackGAN/cfg/shapes_demo.yml``; the cost does not depend on the weights);
* F ``evaluate.py --fid_max_images 0``: FID and IS of every generated image and the retrieval metrics of
  every test caption.

Wall time, and peak memory as ``os.wait4`` reports it (the largest resident set among the stage's
processes). A child started by ``fork``/``vfork`` starts from its parent's memory, so its ``ru_maxrss`` is
at least the parent's peak: this script's own process therefore imports neither numpy nor torch, and
makes each scale's data in a child of its own (``--prepare``); the tables give that floor. Growth ratios compare consecutive scales (linear = the ratio of the scales); the slope ratio
divides the extra seconds per extra item of the later pair by those of the earlier pair, so start-up costs
cancel (linear = 1.00). The retrieval metrics compare every test caption with every test image, so they
are also timed alone at each scale's test size and at CUB's (``--probe_cub``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

# numpy, torch and the project's modules are imported inside the functions that the children run (the data
# maker, the probe): whatever this process holds would count in every stage's peak (see the docstring).

REPO = Path(__file__).resolve().parents[1]

STAGES = ("encoder", "embeddings", "generate", "evaluate")
ENCODER_CONFIG = "Audio_to_Image/cfg/shapes.yml"
GENERATOR_CONFIG = "StackGAN/cfg/shapes_demo.yml"
TAG = "cost"  # --audio_switch of the benchmark's embeddings
FEATURE_DIM = 1360  # stage B's EfficientNet-Lite0 features (head + max-pooled stage 4), as the shapes presets
VIEWS = 10
TRAIN_VOICES = tuple(f"seen{i:02d}" for i in range(12))
HELD_OUT_VOICES = tuple(f"held{i}" for i in range(4))
DEMO = {"images": 960, "captions": 9600}
CUB = {"images": 11788, "train": 8855, "test": 2933, "captions": 10}  # CUB-200-2011, the paper's split


@dataclass(frozen=True)
class Sizes:
    images: int
    train: int
    test: int
    classes: int
    captions: int  # per image

    def count(self, what: str) -> int:
        """How many items of one kind: the quantity a stage's work grows with."""
        return {"images": self.images, "train": self.train, "all captions": self.images * self.captions,
                "test captions": self.test * self.captions}[what]


# What each row's work grows with (for the slope ratio and the CUB prediction).
GROWS_WITH = {
    "C speech encoder": "all captions", "C  log-mel cache": "all captions", "C  one epoch": "train",
    "D embeddings": "all captions", "F generate": "test captions", "F evaluate": "test captions",
    "F  FID": "test captions", "F  IS": "test captions", "F  retrieval": "test captions",
}
MEMORY_NOISE_MIB = 128  # how far peaks moved between runs of nearly the same size here (F evaluate: 1,377-1,545 MiB)
CUB_SIZES = Sizes(CUB["images"], CUB["train"], CUB["test"], 200, CUB["captions"])


# --------------------------------------------------------------------------------------------------
# Data


def make_pools(root: Path, n: int, image_size: int, min_s: float, max_s: float) -> tuple[list[Path], list[Path]]:
    """``n`` distinct wavs (``min_s``-``max_s`` s) and ``n`` distinct PNGs that every dataset links to; made once."""
    if (root / "done").is_file():
        return sorted((root / "audio").glob("*.wav")), sorted((root / "images").glob("*.png"))
    import numpy as np
    import soundfile as sf

    from s2i.data import shapes
    from s2i.data.synthetic import _class_word, speak_word

    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    words = [_class_word(rng) for _ in range(8)]
    (root / "audio").mkdir(parents=True)
    (root / "images").mkdir(parents=True)
    wavs, pngs = [], []
    pairs = [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    for i in range(n):
        wav = root / "audio" / f"{i:04d}.wav"
        sf.write(wav, speak_word(words[i % len(words)], rng.uniform(min_s, max_s), 16000, rng), 16000,
                 subtype="PCM_16")
        sample = shapes.draw_sample(rng, *pairs[i % len(pairs)])
        png = root / "images" / f"{i:04d}.png"
        shapes.render(sample, rng, image_size, supersample=2).save(png)
        wavs.append(wav)
        pngs.append(png)
    (root / "done").touch()
    return wavs, pngs


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)


def make_dataset(root: Path, n_images: int, args: argparse.Namespace, pools: tuple[list[Path], list[Path]]) -> Sizes:
    """Manifests, linked wavs and images, and teacher features of ``n_images`` images under ``root``."""
    import numpy as np

    from s2i.data.safe_pickle import save_pickle

    wavs, pngs = pools
    rng = np.random.default_rng(n_images)
    n_classes = max(2, round(n_images / args.images_per_class))
    centres = np.abs(rng.normal(0.0, 1.0, (n_classes, FEATURE_DIM)))
    by_class: list[list[int]] = [list(range(c, n_images, n_classes)) for c in range(n_classes)]
    test = {i for members in by_class for i in members[: max(1, round(0.2 * len(members)))]}
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    feats: dict[str, list[Any]] = {"train": [], "test": []}
    for i in range(n_images):
        c = i % n_classes
        cls = f"{c + 1:03d}.class_{c + 1}"
        split = "test" if i in test else "train"
        (root / "audio" / cls).mkdir(parents=True, exist_ok=True)
        (root / "images" / cls).mkdir(parents=True, exist_ok=True)
        stem = f"{cls}/img_{i:06d}"
        _link(pngs[int(rng.integers(len(pngs)))], root / "images" / f"{stem}.png")
        audio = []
        for k in range(args.captions):
            _link(wavs[int(rng.integers(len(wavs)))], root / "audio" / f"{stem}_{k}.wav")
            audio.append(f"{stem}_{k}.wav")
        voices = TRAIN_VOICES if split == "train" else TRAIN_VOICES + HELD_OUT_VOICES
        splits[split].append({"image": f"{stem}.png", "class": cls, "text": [f"caption {k}" for k in range(len(audio))],
                              "audio": audio, "tts": [{"voice": voices[int(rng.integers(len(voices)))]}
                                                      for _ in audio]})
        feats[split].append((centres[c] + rng.normal(0, 0.3, (VIEWS, FEATURE_DIM))).astype(np.float32))
    for split, items in splits.items():
        (root / split).mkdir(exist_ok=True)
        save_pickle(feats[split], root / split / "image_features.pickle")
        manifest = {"image_feature_path": str((root / split / "image_features.pickle").resolve()),
                    "audio_base_path": str((root / "audio").resolve()),
                    "image_base_path": str((root / "images").resolve()), "data": items}
        (root / f"{split}.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return Sizes(n_images, len(splits["train"]), len(splits["test"]), n_classes, args.captions)


def stand_in_encoder(path: Path) -> None:
    """An untrained encoder of the shapes preset in our checkpoint format (stage D without stage C)."""
    import torch

    from Audio_to_Image.speech_encoder import CNNRNN, model_args_from
    from Audio_to_Image.training_config import EncoderTrainConfig
    from s2i.checkpoints import atomic_save
    from s2i.config import parse_config

    cfg, _ = parse_config(EncoderTrainConfig, ["--config", str(REPO / ENCODER_CONFIG)], "stand-in")
    torch.manual_seed(0)
    args = model_args_from(cfg)
    model = CNNRNN(**args)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"state_dict": model.state_dict(), "model_args": args, "frontend": cfg.frontend.to_dict(),
                 "epoch": 0, "meta": {"epoch": 0}}, path)


def stand_in_embeddings(root: Path, sizes: Sizes) -> None:
    """Random test-split speech embeddings (stage F without stage D)."""
    import numpy as np

    from s2i.data.safe_pickle import save_pickle

    rng = np.random.default_rng(1)
    save_pickle(rng.normal(0, 0.05, (sizes.test, sizes.captions, FEATURE_DIM)).astype(np.float32),
                root / "test" / f"audio_features_{TAG}.pickle")


def untrained_generator(path: Path) -> None:
    """G of the demo preset (1 branch, 64 px, GF_DIM 16), randomly initialised, as a stage-E snapshot."""
    import torch

    from s2i.checkpoints import atomic_save
    from StackGAN.config import load_gan_config
    from StackGAN.model import G_NET
    from StackGAN.training_loop import model_args

    cfg, _ = load_gan_config(["--cfg", str(REPO / GENERATOR_CONFIG)])
    torch.manual_seed(0)
    G = G_NET(**model_args(cfg)[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"format": "s2i.stackgan.v1", "G_args": dict(G.args), "G_ema": G.state_dict(), "step": 0}, path)


def prepare(args: argparse.Namespace) -> None:
    """The ``--prepare ROOT`` child: the pools (once, beside ROOT), one scale's data, the untrained generator
    and the stand-ins the chosen stages need; prints the sizes and seconds as one JSON line."""
    root = Path(args.prepare)
    stages = args.stages.split(",")
    t0 = time.perf_counter()
    pools = make_pools(root.parent / "pool", args.pool, args.image_size, args.min_seconds, args.max_seconds)
    t1 = time.perf_counter()
    sizes = make_dataset(root, args.prepare_images, args, pools)
    t2 = time.perf_counter()
    untrained_generator(root / "generator" / "Model" / "G.pth")
    if "embeddings" in stages and "encoder" not in stages:
        stand_in_encoder(root / "encoder" / "latest.pth")
    if {"generate", "evaluate"} & set(stages) and "embeddings" not in stages:
        stand_in_embeddings(root, sizes)
    print(json.dumps({"sizes": asdict(sizes), "pool_seconds": t1 - t0, "data_seconds": t2 - t1}))


def prepare_scale(root: Path, n_images: int, stages: list[str], args: argparse.Namespace) -> tuple[Sizes, float]:
    """Runs the ``--prepare`` child for one scale; returns its sizes and the seconds the data took."""
    root.mkdir()
    argv = [sys.executable, str(Path(__file__).resolve()), "--prepare", str(root), "--prepare_images", str(n_images),
            "--stages", ",".join(stages)]
    for flag in ("images_per_class", "captions", "pool", "min_seconds", "max_seconds", "image_size"):
        argv += [f"--{flag}", str(getattr(args, flag))]
    run_stage(argv, root / "prepare.log")
    record = json.loads((root / "prepare.log").read_text(encoding="utf-8").splitlines()[-1])
    z = Sizes(**record["sizes"])
    pools = f"pools made in {record['pool_seconds']:.1f}s, " if record["pool_seconds"] > 0.1 else ""
    print(f"{root.name}: {z.images} images ({z.train} train / {z.test} test, {z.classes} classes), "
          f"{z.images * z.captions} captions; {pools}data made in {record['data_seconds']:.1f}s", flush=True)
    return z, record["data_seconds"]


# --------------------------------------------------------------------------------------------------
# Running a stage


def run_stage(argv: list[str], log: Path) -> tuple[float, float]:
    """Runs one command from the repository root, its output into ``log``; returns (seconds, peak MiB).

    The peak is ``ru_maxrss`` of ``os.wait4``: the largest resident set among the process and the
    processes it waited for (as ``demo.py`` records it)."""
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out, subprocess.Popen(argv, cwd=REPO, stdout=out,
                                                                   stderr=subprocess.STDOUT) as proc:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise SystemExit(f"{' '.join(argv[1:3])} failed (exit status {proc.returncode}); the end of {log}:\n"
                         + "\n".join(tail))
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def stage_commands(root: Path, device: str) -> dict[str, list[str]]:
    py, dev = sys.executable, ["--device", device]
    gen = root / "generator" / "Model"
    return {
        "encoder": [py, "Audio_to_Image/train_audio_encoder.py", "--config", ENCODER_CONFIG, "--dataset", "birds",
                    "--data_root", str(root), "--output_dir", str(root / "encoder"), "--epoch", "1",
                    "--no-progress", "--no-tensorboard", *dev],
        "embeddings": [py, "Audio_to_Image/extract_audio_feature.py", "--dataset", "birds", "--data_root", str(root),
                       "--model", str(root / "encoder" / "latest.pth"), "--audio_switch", TAG, "--no-progress", *dev],
        "generate": [py, "StackGAN/main.py", "--cfg", GENERATOR_CONFIG, "--dataset", "birds", "--data_dir", str(root),
                     "--audio_switch", TAG, "--no-TRAIN.FLAG", "--eval_net_g", str(gen / "G.pth"), "--no-progress",
                     *dev],
        "evaluate": [py, "evaluate.py", "--dataset", "birds", "--data_root", str(root), "--images",
                     str(gen / "iteration0"), "--audio_switch", TAG, "--fid_max_images", "0", "--no-progress", *dev],
    }


def encoder_parts(run: Path) -> dict[str, float]:
    """Seconds of the log-mel cache fill and of the training epoch, from the run's log and metrics."""
    out = {}
    m = re.search(r"feature cache: computed \d+ of \d+ log-mels in ([\d.]+)s", (run / "log.txt").read_text())
    if m:
        out["C  log-mel cache"] = float(m.group(1))
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("split") == "train":
            out["C  one epoch"] = float(rec["seconds"])
    return out


def evaluate_parts(images: Path) -> dict[str, float]:
    """Seconds of each metric, from the evaluated folder's metrics.json."""
    seconds = json.loads((images / "metrics.json").read_text())["seconds"]
    names = {"fid": "F  FID", "inception_score": "F  IS", "speech_encoder": "F  retrieval"}
    return {names[k]: float(v) for k, v in seconds.items() if k in names}


def logged_settings(root: Path) -> str:
    """The speed settings the stages logged (precision, length buckets), which other options may change."""
    found = []
    for stage, log in (("C", root / "encoder.log"), ("D", root / "embeddings.log"), ("F", root / "generate.log")):
        text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
        m = re.search(r"precision (\w+(?: \(\w+\))?)", text)
        parts = ([f"precision {m.group(1)}"] if m else []) + (["length buckets"] if "length buckets" in text else [])
        if parts:
            found.append(f"{stage}: {', '.join(parts)}")
    return "; ".join(found) or "none logged"


def run_one(stage: str, root: Path, device: str) -> dict[str, tuple[float, float | None]]:
    """One stage on one prepared dataset; returns row name → (seconds, peak MiB or None)."""
    cmd = stage_commands(root, device)[stage]
    if stage == "encoder":
        rows = {"C speech encoder": run_stage(cmd, root / "encoder.log")}
        return rows | {k: (v, None) for k, v in encoder_parts(root / "encoder").items()}
    if stage == "embeddings":
        return {"D embeddings": run_stage(cmd, root / "embeddings.log")}
    if stage == "generate":
        return {"F generate": run_stage(cmd, root / "generate.log")}
    rows = {"F evaluate": run_stage(cmd, root / "evaluate.log")}
    return rows | {k: (v, None) for k, v in evaluate_parts(root / "generator" / "Model" / "iteration0").items()}


# --------------------------------------------------------------------------------------------------
# The retrieval metrics alone


def probe_retrieval(n_images: int, captions: int = 10, seed: int = 0) -> None:
    """Stage F's retrieval metrics (``s2i.metrics.speech_encoder``) of random embeddings, the way
    ``evaluate.py`` calls them: every voice group and every voice; prints one JSON line."""
    import numpy as np

    from s2i.evaluation.scoring import voice_groups
    from s2i.metrics.speech_encoder import caption_ranks, per_voice_recall, speech_encoder_section

    rng = np.random.default_rng(seed)
    n_classes = max(2, round(n_images / 59))  # CUB's test split: 2,933 images of 50 classes
    labels = np.arange(n_images) % n_classes
    centres = rng.normal(0, 1, (n_classes, FEATURE_DIM))
    feats = 0.3 * centres[labels] + rng.normal(0, 1, (n_images, FEATURE_DIM))
    emb = 0.1 * centres[labels][:, None] + rng.normal(0, 1, (n_images, captions, FEATURE_DIM))
    voices = list(TRAIN_VOICES + HELD_OUT_VOICES)
    test_voices = [[voices[int(v)] for v in rng.integers(len(voices), size=captions)] for _ in range(n_images)]
    groups, names = voice_groups(test_voices, [list(TRAIN_VOICES)])
    t0 = time.perf_counter()
    ranks = caption_ranks(emb, feats, labels)  # as score_speech_encoder: one ranking for every group and voice
    section = speech_encoder_section(emb, feats, labels, groups, ranks=ranks)
    per_voice_recall(emb, feats, labels, test_voices, set(names["held_out"]), ranks=ranks)
    print(json.dumps({"seconds": time.perf_counter() - t0, "s2i_R1": section["all"]["s2i_R1"]}))


def run_probe(n_images: int, log: Path) -> tuple[float, float, float]:
    """(seconds of the metrics alone, wall seconds of the process, its peak MiB)."""
    wall, mib = run_stage([sys.executable, str(Path(__file__).resolve()), "--probe_retrieval", str(n_images)], log)
    return json.loads(log.read_text().splitlines()[-1])["seconds"], wall, mib


# --------------------------------------------------------------------------------------------------
# The tables


def _fmt(v: float | None, digits: int = 1) -> str:
    return "" if v is None else f"{v:,.{digits}f}"


def growth_table(results: dict[int, dict[str, tuple[float, float | None]]], sizes: dict[int, Sizes],
                 index: int, unit: str, digits: int = 1, noise: float = 0.0) -> list[str]:
    """Markdown rows of seconds (``index`` 0) or peak MiB (1) per scale, the growth ratios, the slope
    ratio (seconds only), and the linear prediction at CUB's size from the two largest scales. A rise
    between them of at most ``noise`` is taken for no rise (peak memory moves by that much run to run)."""
    scales = sorted(results)
    with_slope = len(scales) >= 3 and not noise
    names = [n for n in GROWS_WITH if any(n in results[s] for s in scales)]
    head = ["stage", *[f"{s}×" for s in scales]]
    head += [f"{b}×/{a}× (lin. {b / a:g})" for a, b in zip(scales, scales[1:])]
    head += ["slope ratio (lin. 1)"] * with_slope + [f"CUB {unit} (linear)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        vals = [results[s].get(name, (None, None))[index] for s in scales]
        if all(v is None for v in vals):
            continue
        x = [sizes[s].count(GROWS_WITH[name]) for s in scales]
        cells = [name, *[_fmt(v, digits) for v in vals]]
        cells += [f"{b / a:.2f}" if a and b else "" for a, b in zip(vals, vals[1:])]
        slopes = [(vb - va) / (xb - xa) if None not in (va, vb) else None
                  for va, vb, xa, xb in zip(vals, vals[1:], x, x[1:])]
        if with_slope:
            s0, s1 = slopes[-2], slopes[-1]
            cells.append(f"{s1 / s0:.2f}" if s0 and s1 is not None and s0 > 0 else "")
        last, slope = vals[-1], slopes[-1]
        if last is None or slope is None:
            cells.append("")
        elif len(vals) > 1 and vals[-1] - vals[-2] <= noise:
            cells.append(f"{_fmt(last, 0)} (flat)" if noise else "? (fell: a noisy machine)")
        else:
            cells.append(_fmt(last + slope * (CUB_SIZES.count(GROWS_WITH[name]) - x[-1]), 0))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, torch {metadata.version('torch')}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scales", default="1,4,16", help="multiples of --base_images to run, ascending")
    p.add_argument("--base_images", type=int, default=40, help="images at 1x (the demo has 960; 40 keeps the "
                   "default run near 15 minutes on 2 quiet cores: FID's Inception takes 0.2-0.5 s per image there)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"stages to time, of {','.join(STAGES)} (a missing "
                   "input is made up: an untrained encoder for D, random embeddings for F; evaluate runs generate)")
    p.add_argument("--images_per_class", type=int, default=40, help="images per class (the demo: 40; CUB: 59)")
    p.add_argument("--captions", type=int, default=10, help="spoken captions per image (10, as CUB)")
    p.add_argument("--pool", type=int, default=256, help="distinct clips and pictures the datasets link to")
    p.add_argument("--min_seconds", type=float, default=2.0, help="shortest clip")
    p.add_argument("--max_seconds", type=float, default=6.0, help="longest clip")
    p.add_argument("--image_size", type=int, default=128, help="side of the generated pictures")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="device of every stage")
    p.add_argument("--probe_cub", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the retrieval metrics alone at CUB's test size (2,933 images x 10 captions)")
    p.add_argument("--keep", default=None, help="keep the generated data and runs in this folder (must not exist)")
    p.add_argument("--probe_retrieval", type=int, default=None, metavar="N",
                   help="only run the retrieval metrics of N random test images x 10 captions (the probe's child)")
    p.add_argument("--prepare", default=None, metavar="ROOT",
                   help="only make one scale's data in ROOT, with --prepare_images images (the data maker's child)")
    p.add_argument("--prepare_images", type=int, default=0, help="images of the --prepare child's dataset")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress lines also reach a log file as they happen
    if args.probe_retrieval is not None:
        probe_retrieval(args.probe_retrieval, args.captions)
        return
    if args.prepare is not None:
        prepare(args)
        return
    scales = [int(s) for s in args.scales.split(",")]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if sorted(set(scales)) != scales or scales[0] < 1:
        raise SystemExit(f"--scales must be ascending positive integers, got {args.scales}")
    if not stages or set(stages) - set(STAGES):
        raise SystemExit(f"--stages must name some of {', '.join(STAGES)}, got {args.stages}")
    if args.keep and Path(args.keep).exists():
        raise SystemExit(f"--keep {args.keep} exists; name a new folder")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cost_vs_size_"))
    work.mkdir(parents=True, exist_ok=True)
    load = [os.getloadavg()[0]]
    print(f"machine: {machine()}; load average {load[0]:.2f} at the start")
    shrunk = args.base_images != DEMO["images"]
    print(f"1x = {args.base_images} images x {args.captions} captions"
          + (f" (the demo has {DEMO['images']}: the base is shrunk to 1/{DEMO['images'] / args.base_images:g} of it "
             "to fit the run's time; growth is measured from there)" if shrunk else " (the demo's size)"))
    t_all = time.perf_counter()
    results: dict[int, dict[str, tuple[float, float | None]]] = {}
    sizes: dict[int, Sizes] = {}
    probes: dict[int, tuple[float, float, float]] = {}
    made: dict[int, float] = {}  # seconds to make each scale's data
    settings = ""
    try:
        for s in scales:
            sizes[s], made[s] = prepare_scale(work / f"x{s}", args.base_images * s, stages, args)
        # Stage by stage, each over every scale: the scales of a row are timed minutes apart, not a whole run
        # apart, so a change in the machine's load distorts their ratios less.
        for stage in [st for st in STAGES if st in stages or (st == "generate" and "evaluate" in stages)]:
            print(f"\n{stage}:", flush=True)
            for s in scales:
                rows = run_one(stage, work / f"x{s}", args.device)
                for name, (sec, mib) in rows.items():
                    print(f"  {s:3d}x {name:18s} {sec:8.1f}s" + (f"  {mib:7.0f} MiB peak" if mib is not None else ""),
                          flush=True)
                results.setdefault(s, {}).update(rows)
                load.append(os.getloadavg()[0])
        settings = logged_settings(work / f"x{scales[-1]}")
        if "evaluate" in stages:
            for s in scales:
                probes[s] = run_probe(sizes[s].test, work / f"x{s}" / "probe.log")
            if args.probe_cub:
                probes[0] = run_probe(CUB["test"], work / "probe_cub.log")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load.append(os.getloadavg()[0])
    print(f"\n## Cost vs size, {time.strftime('%Y-%m-%d')}, {(time.perf_counter() - t_all) / 60:.1f} min in all; "
          f"load average {min(load):.2f}-{max(load):.2f} (a loaded machine inflates every figure)")
    print("\n" + ", ".join(f"{s}× = {z.images:,} images ({z.test:,} test, {z.images * z.captions:,} captions)"
                           for s, z in sizes.items()) + f"; CUB = {CUB['images']:,} images ({CUB['test']:,} test, "
          f"{CUB['images'] * CUB['captions']:,} captions). Data made in "
          + ", ".join(f"{v:.1f}s" for v in made.values()) + f". Speed settings the stages logged: {settings}.")
    print_tables(results, sizes, probes)
    print(f"\nThis script's own peak, the floor of every peak above: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB.")


def print_tables(results: dict[int, dict[str, tuple[float, float | None]]], sizes: dict[int, Sizes],
                 probes: dict[int, tuple[float, float, float]]) -> None:
    """The time and memory tables, and the retrieval probes' (scale 0 = CUB's size)."""
    print("\nWall seconds (rows indented: parts of the row above, timed inside the process):\n")
    print("\n".join(growth_table(results, sizes, 0, "s")))
    print(f"\nPeak resident memory, MiB (a rise of at most {MEMORY_NOISE_MIB} MiB is read as flat):\n")
    print("\n".join(growth_table(results, sizes, 1, "MiB", digits=0, noise=MEMORY_NOISE_MIB)))
    if probes:
        print("\nRetrieval metrics alone (every voice group and voice, as evaluate.py), random 1360-d embeddings:\n")
        print("| test images × 10 captions | pairs | metrics s | process s | peak MiB |\n|---|---|---|---|---|")
        for s, (sec, wall, mib) in sorted(probes.items(), key=lambda kv: kv[0] or 10**9):
            n = sizes[s].test if s else CUB["test"]
            print(f"| {n:,} ({f'{s}×' if s else 'CUB'}) | {n * n * 10:,} | {sec:.2f} | {wall:.1f} | {mib:.0f} |")


if __name__ == "__main__":
    main()
