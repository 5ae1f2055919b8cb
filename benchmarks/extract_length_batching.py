"""Stage D throughput: length batching on vs off (every batch at the full target length, the original's way).

Generates spoken-caption-like clips (default 256 clips of 2-6 s, like the TTS captions of CUB), fills a
log-mel cache so that only the encoder is timed, and embeds them with the paper's encoder
(bidirectional CNNRNN) at 2048 frames, both ways, alternating, best of ``--repeats``. Prints the times,
the ratio, and the largest difference between the two results.

    python benchmarks/extract_length_batching.py [--clips 256] [--device cpu] [--batch_size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.embedding import embed_clips
from Audio_to_Image.feature_cache import FeatureCache
from Audio_to_Image.speech_encoder import CNNRNN
from s2i.data.synthetic import _class_word, speak_word
from s2i.distributed import resolve_device


def _encoder(frontend: FrontEndConfig) -> CNNRNN:
    """The paper's encoder, untrained, with BatchNorm statistics of real-looking inputs.

    PyTorch's initial statistics (mean 0, variance 1) let the activations shrink layer by layer, so
    every embedding would be near zero and the difference printed below would say nothing.
    """
    torch.manual_seed(0)
    model = CNNRNN(bidirectional=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    x = torch.zeros(16, frontend.n_mels, frontend.target_length)
    for i, n in enumerate(torch.randint(200, 600, (16,)).tolist()):
        x[i, :, :n] = -80 * torch.rand(frontend.n_mels, n)
    with torch.no_grad():
        model.train()(x, torch.full((16,), 3))
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=256, help="number of generated clips")
    ap.add_argument("--min_seconds", type=float, default=2.0, help="shortest clip")
    ap.add_argument("--max_seconds", type=float, default=6.0, help="longest clip")
    ap.add_argument("--batch_size", type=int, default=64, help="clips per forward pass")
    ap.add_argument("--target_length", type=int, default=2048, help="frames of the full input")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the encoder runs")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per variant (best is reported)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    frontend = FrontEndConfig(target_length=args.target_length)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        word = _class_word(rng)
        for i in range(args.clips):
            p = Path(tmp) / f"clip_{i:04d}.wav"
            sf.write(p, speak_word(word, rng.uniform(args.min_seconds, args.max_seconds), 16000, rng), 16000)
            paths.append(p)
        cache = FeatureCache(Path(tmp) / "cache", frontend)
        cache.prefill(paths, progress=False)
        model = _encoder(frontend).to(device)
        times: dict[bool, list[float]] = {True: [], False: []}
        out: dict[bool, np.ndarray] = {}
        embed_clips(model, paths[: args.batch_size], frontend, cache, device, args.batch_size, progress=False)
        for _ in range(args.repeats):
            for on in (False, True):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                out[on], lens = embed_clips(model, paths, frontend, cache, device, args.batch_size,
                                            length_batching=on, progress=False)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[on].append(time.perf_counter() - t0)
    off, on = min(times[False]), min(times[True])
    print(f"{args.clips} clips of {args.min_seconds}-{args.max_seconds} s (mean {lens.mean():.0f} of "
          f"{args.target_length} frames), batch {args.batch_size}, device {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"full length (original): {off:.3f} s ({1000 * off / args.clips:.2f} ms/clip)")
    print(f"length batching:        {on:.3f} s ({1000 * on / args.clips:.2f} ms/clip)")
    print(f"speed-up x{off / on:.2f}; largest |difference| {np.abs(out[True] - out[False]).max():.2e} "
          f"(mean |embedding| {np.abs(out[False]).mean():.2e})")


if __name__ == "__main__":
    main()
