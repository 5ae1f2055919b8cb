"""One speech-encoder training epoch at the paper's settings, four ways side by side on the same clips, in one run.

1. the original's pipeline: every sample decodes its wav and computes its log-mel with librosa, every
   epoch; float32; every batch 2048 frames;
2. + the log-mel cache (``--feature_cache on``);
3. + length buckets (``--bucket_by_length``): batches of similar-length clips, each cut to the frames its
   longest clip can influence;
4. + bf16 autocast (``--precision bf16``), only where the device computes bf16 natively.

    python benchmarks/speech_encoder_epoch.py                          # 256 clips of 2-6 s, 2048 frames
    python benchmarks/speech_encoder_epoch.py --clips 64 --repeats 1   # a quick look
    python benchmarks/speech_encoder_epoch.py --device cuda

The clips are generated speech-like words (``s2i.data.synthetic``) lasting 2-6 s, the length range of
CUB's spoken captions; the model is the paper's (bidirectional CNNRNN, 11.7 M parameters) with the paper's
losses and batch 64. Prints, per variant, the input pipeline alone (the loader iterated without the model),
the whole epoch (data + model steps), the mean frames per batch, and the epoch's speed-up against (1).
Each time is the best of ``--repeats`` alternating runs after a warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.datasets import CutToLongest, SpeechImageDataset, load_teacher_features
from Audio_to_Image.embedding import frames_needed_table
from Audio_to_Image.feature_cache import FeatureCache
from Audio_to_Image.losses import LossWeights
from Audio_to_Image.speech_encoder import CNNRNN
from Audio_to_Image.trainer import TrainSetup, train_one_epoch
from s2i.data.manifests import load_manifest
from s2i.data.synthetic import SyntheticSpec, make_dataset
from s2i.distributed import LengthBucketSampler, resolve_device
from s2i.precision import grad_scaler, native_bf16


@dataclass
class Variant:
    label: str
    dataset: SpeechImageDataset
    buckets: bool
    precision: str


def _model(n_mels: int, device: torch.device) -> CNNRNN:
    torch.manual_seed(0)
    return CNNRNN(n_filters=n_mels, embedding_dim=1024, nhidden=1024, nsent=1024, bidirectional=True).to(device)


def _loader(v: Variant, args, cut: CutToLongest, device: torch.device) -> DataLoader:
    common = {"num_workers": args.num_workers, "pin_memory": device.type == "cuda"}
    if not v.buckets:
        return DataLoader(v.dataset, batch_size=args.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(0), **common)
    # What a training epoch does: plan this epoch's lengths (the draws of the dataset), then bucket.
    sampler = LengthBucketSampler(len(v.dataset), args.batch_size, seed=0)
    sampler.set_epoch(0)
    sampler.set_lengths(v.dataset.planned_frames(0))
    return DataLoader(v.dataset, batch_sampler=sampler, collate_fn=cut, **common)


def _time_pipeline(v: Variant, args, cut: CutToLongest, device: torch.device) -> tuple[float, float]:
    """Seconds to iterate the loader alone, and the mean frames per batch."""
    t0 = time.perf_counter()
    frames = [batch["spec"].shape[-1] for batch in _loader(v, args, cut, device)]
    return time.perf_counter() - t0, sum(frames) / len(frames)


def _time_epoch(v: Variant, args, cut: CutToLongest, device: torch.device) -> float:
    model = _model(v.dataset.frontend.n_mels, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    weights = LossWeights(True, 1.0, 0.1, True, 5.0, True, 1000.0, 2.0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    loader = _loader(v, args, cut, device)
    train_one_epoch(TrainSetup(model, loader, opt, weights, device, num_epochs=1, print_every=0, log=print,
                               show_progress=False, precision=v.precision,
                               scaler=grad_scaler(v.precision, device)), epoch=0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=256, help="training samples per epoch (images, one caption "
                   "drawn per image and epoch)")
    p.add_argument("--classes", type=int, default=8, help="generated classes")
    p.add_argument("--captions", type=int, default=10, help="spoken captions per image (10 as CUB)")
    p.add_argument("--min_seconds", type=float, default=2.0, help="shortest clip")
    p.add_argument("--max_seconds", type=float, default=6.0, help="longest clip")
    p.add_argument("--sample_rate", type=int, default=16000, help="sample rate of the generated wavs")
    p.add_argument("--batch_size", type=int, default=64, help="the paper's batch size")
    p.add_argument("--target_length", type=int, default=2048, help="spectrogram frames (the paper: 2048)")
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader workers for every variant")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats of each variant (best is kept)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    torch.set_num_threads(os.cpu_count() or 1)

    with tempfile.TemporaryDirectory() as tmp:
        per_class = -(-args.clips // args.classes)
        spec = SyntheticSpec(num_classes=args.classes, train_images_per_class=per_class, test_images_per_class=1,
                             captions_per_image=args.captions, sample_rate=args.sample_rate,
                             min_seconds=args.min_seconds, max_seconds=args.max_seconds)
        make_dataset(tmp, spec)
        manifest = load_manifest(Path(tmp) / "train.json", "birds")
        feats = load_teacher_features(manifest)
        fe = dataclasses.replace(FrontEndConfig(), target_length=args.target_length)
        cache = FeatureCache(Path(tmp) / "feature_cache", fe)
        t0 = time.perf_counter()
        cache.prefill(manifest.all_audio_paths(), progress=False)
        prefill = time.perf_counter() - t0
        cached = SpeechImageDataset(manifest, feats, fe, cache)
        t0 = time.perf_counter()
        cached.caption_frames()
        headers = time.perf_counter() - t0
        cut = CutToLongest(frames_needed_table(_model(fe.n_mels, torch.device("cpu")), fe.target_length),
                           fe.target_length)
        variants = [
            Variant("(1) original: decode every epoch, fp32", SpeechImageDataset(manifest, feats, fe, None),
                    False, "fp32"),
            Variant("(2) + log-mel cache", cached, False, "fp32"),
            Variant("(3) + cache + length buckets", cached, True, "fp32"),
        ]
        bf16 = native_bf16(device)
        if bf16:
            variants.append(Variant("(4) + cache + buckets + bf16", cached, True, "bf16"))

        cpu = platform.processor() or platform.machine()
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
        print(f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} "
              f"threads; model on {device} ({where})")
        print(f"data: {len(manifest)} images x {args.captions} captions of {args.min_seconds:g}-{args.max_seconds:g} s "
              f"({args.sample_rate} Hz), batch {args.batch_size}, {args.target_length} frames, {args.num_workers} "
              f"workers; once per run: cache prefill of {len(manifest) * args.captions} clips {prefill:.2f}s, "
              f"their header frame counts {headers:.2f}s")
        # Warm up (first-call allocations, thread pools), then alternate the variants so that drift in
        # the machine's speed hits all alike; the best of the repeats is kept.
        for v in variants[1:]:
            _time_pipeline(v, args, cut, device)
            _time_epoch(v, args, cut, device)
        rows: dict[str, dict[str, float]] = {v.label: {} for v in variants}
        for _ in range(args.repeats):
            for v in variants:
                pipeline, frames = _time_pipeline(v, args, cut, device)
                timings = {"pipeline": pipeline, "epoch": _time_epoch(v, args, cut, device)}
                row = rows[v.label]
                for k, t in timings.items():
                    row[k] = min(t, row.get(k, float("inf")))
                row["frames"] = frames
        base = rows[variants[0].label]["epoch"]
        width = max(len(v.label) for v in variants)
        print(f"{'variant':<{width}}  {'pipeline s':>10}  {'epoch s':>8}  {'frames/batch':>12}  {'epoch vs (1)':>12}")
        for v in variants:
            r = rows[v.label]
            print(f"{v.label:<{width}}  {r['pipeline']:10.3f}  {r['epoch']:8.3f}  {r['frames']:12.0f}  "
                  f"{'x' + format(base / r['epoch'], '.2f'):>12}")
        if not bf16:
            print(f"(4) + bf16: skipped, {device} has no native bf16 (it would be emulated, slower than fp32)")


if __name__ == "__main__":
    main()
