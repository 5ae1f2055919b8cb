"""One speech-encoder training epoch with the log-mel feature cache off (the original's per-sample
decoding with librosa) and on, side by side on the same generated data, in one run.

    python benchmarks/speech_encoder_epoch.py                 # the paper's model and 2048-frame input
    python benchmarks/speech_encoder_epoch.py --target_length 512 --num_workers 2

Prints the seconds of each variant and the ratios: the whole epoch (data + model step) and the input
pipeline alone (the same DataLoader iterated without the model).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.datasets import SpeechImageDataset, load_teacher_features
from Audio_to_Image.feature_cache import FeatureCache
from Audio_to_Image.losses import LossWeights
from Audio_to_Image.speech_encoder import CNNRNN
from Audio_to_Image.trainer import TrainSetup, train_one_epoch
from s2i.data.manifests import load_manifest
from s2i.data.synthetic import SyntheticSpec, make_dataset


def _loader(ds, args) -> DataLoader:
    return DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                      generator=torch.Generator().manual_seed(0))


def _time_pipeline(ds, args) -> float:
    t0 = time.perf_counter()
    for _ in _loader(ds, args):
        pass
    return time.perf_counter() - t0


def _time_epoch(ds, args) -> float:
    torch.manual_seed(0)
    model = CNNRNN(n_filters=ds.frontend.n_mels, embedding_dim=1024, nhidden=1024, nsent=1024, bidirectional=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    weights = LossWeights(True, 1.0, 0.1, True, 5.0, True, 1000.0, 2.0)
    t0 = time.perf_counter()
    train_one_epoch(TrainSetup(model, _loader(ds, args), opt, weights, torch.device("cpu"), num_epochs=1,
                               print_every=0, log=print, show_progress=False), epoch=0)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=8, help="generated classes")
    p.add_argument("--images_per_class", type=int, default=16, help="training images per class")
    p.add_argument("--captions", type=int, default=10, help="spoken captions per image (10 as CUB)")
    p.add_argument("--sample_rate", type=int, default=16000, help="sample rate of the generated wavs")
    p.add_argument("--batch_size", type=int, default=64, help="the paper's batch size")
    p.add_argument("--target_length", type=int, default=2048, help="spectrogram frames (the paper: 2048)")
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader workers for both variants")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats of each variant (best is kept)")
    p.add_argument("--skip_model", action="store_true", help="time the input pipeline only")
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory() as tmp:
        spec = SyntheticSpec(num_classes=args.classes, train_images_per_class=args.images_per_class,
                             test_images_per_class=1, captions_per_image=args.captions,
                             sample_rate=args.sample_rate)
        make_dataset(tmp, spec)
        manifest = load_manifest(Path(tmp) / "train.json", "birds")
        feats = load_teacher_features(manifest)
        fe = dataclasses.replace(FrontEndConfig(), target_length=args.target_length)
        cache = FeatureCache(Path(tmp) / "feature_cache", fe)
        t0 = time.perf_counter()
        cache.prefill(manifest.all_audio_paths(), progress=False)
        prefill = time.perf_counter() - t0
        variants = {"off": SpeechImageDataset(manifest, feats, fe, None),
                    "on": SpeechImageDataset(manifest, feats, fe, cache)}

        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print(f"data: {len(manifest)} images x {args.captions} captions ({args.sample_rate} Hz), batch "
              f"{args.batch_size}, {args.target_length} frames, {args.num_workers} workers; cache prefill of "
              f"{len(manifest) * args.captions} clips took {prefill:.2f}s (once per front-end config)")
        # Warm up (first-call allocations, thread pools), then alternate the variants so that drift in
        # the machine's speed hits both alike; the best of the repeats is kept.
        _time_pipeline(variants["on"], args)
        if not args.skip_model:
            _time_epoch(variants["on"], args)
        rows: dict[str, dict[str, float]] = {name: {} for name in variants}
        for _ in range(args.repeats):
            for name, ds in variants.items():
                timings = {"pipeline": _time_pipeline(ds, args)}
                if not args.skip_model:
                    timings["epoch"] = _time_epoch(ds, args)
                for k, v in timings.items():
                    rows[name][k] = min(v, rows[name].get(k, float("inf")))
        for what in ("pipeline", "epoch"):
            if what not in rows["off"]:
                continue
            off, on = rows["off"][what], rows["on"][what]
            label = "input pipeline alone" if what == "pipeline" else "training epoch      "
            print(f"{label}: cache off {off:8.3f}s   cache on {on:8.3f}s   speed-up x{off / on:.2f}")


if __name__ == "__main__":
    main()
