"""espeak-ng synthesis throughput of stage A with 1 and 2 worker threads, side by side in one run.

    python benchmarks/tts_throughput.py                  # 200 generated captions
    python benchmarks/tts_throughput.py --captions 1000 --workers 1,2,4

Each variant speaks the same generated bird captions (same seed, so the same voices, rates and pitches)
through the stage's own code path (existence check, espeak-ng, resampling to 16 kHz, atomic write,
record journal, manifest rewrite) into a fresh folder. Prints utterances per second and the ratio to
the first variant; the best of the repeats is kept, alternating the variants so drift hits all alike.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from Audio_to_Image import text_to_speech as t2s

COLOURS = ["red", "yellow", "black", "white", "brown", "grey", "blue", "orange", "green", "olive"]
PARTS = ["crown", "belly", "breast", "wings", "tail", "bill", "nape", "throat", "back", "eyebrow"]
SHAPES = ["short", "long", "pointed", "curved", "thick", "small", "large", "striped", "spotted"]


def make_captions(n: int, seed: int = 0) -> list[str]:
    """``n`` CUB-like captions of 8-25 words."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        clauses = [f"a {rng.choice(SHAPES)} {rng.choice(COLOURS)} {rng.choice(PARTS)}"
                   for _ in range(int(rng.integers(2, 6)))]
        out.append("this bird has " + ", ".join(clauses[:-1]) + " and " + clauses[-1])
    return out


def write_manifest(folder: Path, captions: list[str], per_image: int = 10) -> Path:
    data = []
    for start in range(0, len(captions), per_image):
        i = start // per_image
        caps = captions[start:start + per_image]
        data.append({"image": f"001.Bench/img{i}.jpg", "class": "001.Bench", "text": caps,
                     "audio": [f"001.Bench/img{i}_{k}.wav" for k in range(len(caps))]})
    folder.mkdir(parents=True)
    path = folder / "train.json"
    path.write_text(json.dumps({"audio_base_path": str(folder / "audio"), "data": data}))
    return path


def time_run(tmp: Path, name: str, captions: list[str], workers: int, seed: int) -> float:
    folder = tmp / name
    shutil.rmtree(folder, ignore_errors=True)
    manifest = write_manifest(folder, captions)
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # the stage's own summary lines
        summary = t2s.main(["--train_json", str(manifest), "--splits", "train", "--workers", str(workers),
                            "--seed", str(seed), "--no-progress"])
    elapsed = time.perf_counter() - t0
    if summary["spoken"] != len(captions):
        raise SystemExit(f"error: {name} spoke {summary['spoken']} of {len(captions)} captions")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--captions", type=int, default=200, help="generated captions per variant")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts to compare")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats of each variant (best is kept)")
    p.add_argument("--seed", type=int, default=0, help="seed of the captions and of the voice draws")
    args = p.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    captions = make_captions(args.captions, args.seed)
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.split("Data")[0]

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {version.strip()}")
    print(f"data: {len(captions)} captions of {np.mean([len(c.split()) for c in captions]):.1f} words on "
          f"average; best of {args.repeats} repeats")
    with tempfile.TemporaryDirectory() as tmp:
        time_run(Path(tmp), "warm-up", captions[:20], counts[0], args.seed)
        best = {w: float("inf") for w in counts}
        for _ in range(args.repeats):
            for w in counts:
                best[w] = min(best[w], time_run(Path(tmp), f"workers{w}", captions, w, args.seed))
    base = len(captions) / best[counts[0]]
    for w in counts:
        rate = len(captions) / best[w]
        print(f"workers {w}: {best[w]:7.2f} s   {rate:7.1f} utterances/s   x{rate / base:.2f} vs {counts[0]} worker(s)")


if __name__ == "__main__":
    main()
