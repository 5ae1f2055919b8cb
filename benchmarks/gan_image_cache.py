"""Generator-stage input pipeline with and without ``cache_images``, side by side in one run.

    python benchmarks/gan_image_cache.py                 # 256 images of 256 px, batch 32, 1 branch (the demo's)
    python benchmarks/gan_image_cache.py --branches 2    # 128-px training images (StackGAN/cfg/shapes_cpu.yml)

Both variants read the same generated PNGs (a filled shape on grey, as the shapes dataset) through
``StackGAN.datasets.GanDataset`` and a ``DataLoader`` with 0 workers, as ``StackGAN/main.py`` does with the
demo preset. "off" decodes, converts and resizes a real and a wrong image per sample, every epoch (the
original's path); "on" keeps each decoded image after its first use. The first epoch fills the cache, so
the figures are the mean of the later epochs, with the first epoch printed apart. The samples are checked
to be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from s2i.data.safe_pickle import save_pickle
from StackGAN.datasets import GanDataset


def make_images(root: Path, n: int, size: int) -> tuple[Path, Path]:
    """n PNGs of ``size`` px in 8 classes, a manifest and (n, 10, 16) random embeddings."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        img = Image.new("RGB", (size, size), (int(rng.integers(100, 160)),) * 3)
        r = int(size * rng.uniform(0.15, 0.3))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        img.save(root / "images" / f"{i}.png")
        items.append({"image": f"{i}.png", "class": f"{i % 8 + 1:03d}.c", "text": ["x"] * 10,
                      "audio": [f"{i}_{k}.wav" for k in range(10)]})
    manifest = root / "train.json"
    manifest.write_text(json.dumps({"image_feature_path": "unused.pickle", "audio_base_path": "audio",
                                    "image_base_path": str(root / "images"), "data": items}))
    emb = root / "emb.pickle"
    save_pickle(rng.normal(size=(n, 10, 16)).astype(np.float32), emb)
    return manifest, emb


def epoch_seconds(ds: GanDataset, batch: int, epochs: int) -> tuple[list[float], list]:
    times, first = [], None
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=0, drop_last=True)
        t0 = time.perf_counter()
        batches = list(loader)
        times.append(time.perf_counter() - t0)
        if epoch == epochs - 1:
            first = batches[0]
    return times, first


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256, help="training images")
    p.add_argument("--size", type=int, default=256, help="side of the PNGs (the shapes dataset: 256)")
    p.add_argument("--batch", type=int, default=32, help="images per batch (the demo preset: 32)")
    p.add_argument("--branches", type=int, default=1, help="TREE.BRANCH_NUM (1: 64 px, 2: 128 px)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per variant (the first fills the cache)")
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch "
          f"{torch.__version__}; {args.images} PNGs of {args.size} px, batch {args.batch}, {args.branches} branch(es)")
    with tempfile.TemporaryDirectory() as tmp:
        manifest, emb = make_images(Path(tmp), args.images, args.size)
        results = {}
        for name, cache in (("off", False), ("on", True)):
            ds = GanDataset.from_files(manifest, emb, "birds", train=True, branch_num=args.branches,
                                       cache_images=cache)
            results[name] = epoch_seconds(ds, args.batch, args.epochs)
        same = all(torch.equal(a, b) for a, b in zip(results["off"][1]["imgs"], results["on"][1]["imgs"]))
    for name in ("off", "on"):
        t = results[name][0]
        print(f"cache {name:>3}: first epoch {t[0]:.3f} s, later epochs {np.mean(t[1:]):.3f} s "
              f"({np.mean(t[1:]) / (args.images // args.batch) * 1000:.1f} ms per batch)")
    ratio = np.mean(results["off"][0][1:]) / np.mean(results["on"][0][1:])
    print(f"later epochs, off / on: x{ratio:.2f}; identical samples: {same}")


if __name__ == "__main__":
    main()
