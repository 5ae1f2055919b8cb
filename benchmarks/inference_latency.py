"""Seconds from a wav file to a PNG (speech_to_image.py's path), split into audio front-end, speech encoder,
generator and PNG writing, for the paper's model and the shapes model, side by side in one run.

    python benchmarks/inference_latency.py                     # a 3 s, 16 kHz mono spoken-like clip
    python benchmarks/inference_latency.py --seconds 6 --rate 44100 --channels 2

* paper: the bidirectional CNNRNN (1024-d, 2048-frame input, docs/original.md#s5) and the 3-branch StackGAN-v2 G
  (GF_DIM 64, 256 px, docs/original.md#s11-3);
* shapes: Audio_to_Image/cfg/shapes.yml's encoder (1360-d, 512-frame input) and StackGAN/cfg/shapes_cpu.yml's
  G (2 branches, GF_DIM 32, 128 px).

Both models are randomly initialised (the timings do not depend on the weights), saved in our checkpoint
formats and loaded back through ``speech_to_image.load_speech_to_image`` like the script does. Each repeat
runs every variant once, alternating, after one warm-up run each; the table gives medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.speech_encoder import CNNRNN
from s2i.grids import save_png, to_uint8
from speech_to_image import SpeechToImage, load_speech_to_image
from StackGAN.model import G_NET
from StackGAN.trainer import SNAPSHOT_FORMAT

VARIANTS = {
    "paper": {"encoder": {"embedding_dim": 1024}, "target_length": 2048,
              "G": {"branch_num": 3, "gf_dim": 64, "text_dim": 1024}},
    "shapes": {"encoder": {"embedding_dim": 1360}, "target_length": 512,
               "G": {"branch_num": 2, "gf_dim": 32, "text_dim": 1360}},
}
STAGES = ("frontend", "encoder", "generator", "png")


def _spoken_like(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    """Harmonic glides in syllable-sized bursts with a little noise: (n,) or (n, channels) float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    y = sum(np.sin(h * phase) / h for h in range(1, 15)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    y = 0.3 * y / np.abs(y).max() + 0.01 * rng.standard_normal(n)
    return np.stack([y * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32) if channels > 1 \
        else y.astype(np.float32)


def _save_models(name: str, folder: Path) -> tuple[Path, Path, int, int]:
    """Random models in our formats: the encoder's {model_args, frontend, state_dict} and a G snapshot."""
    v = VARIANTS[name]
    torch.manual_seed(0)
    d = v["encoder"]["embedding_dim"]
    args = {"n_filters": 40, "embedding_dim": d, "nhidden": d, "nsent": d, "bidirectional": True, "rnn_layers": 1}
    enc = CNNRNN(**args)
    enc_path = folder / f"{name}_encoder.pth"
    torch.save({"meta": {"epoch": 0}, "model_args": args, "state_dict": enc.state_dict(),
                "frontend": FrontEndConfig(target_length=v["target_length"]).to_dict()}, enc_path)
    G = G_NET(**v["G"])
    g_path = folder / f"{name}_G.pth"
    torch.save({"format": SNAPSHOT_FORMAT, "step": 0, "G_args": dict(G.args), "G_ema": G.state_dict()}, g_path)
    n_enc = sum(p.numel() for p in enc.parameters())
    n_g = sum(p.numel() for p in G.parameters())
    return enc_path, g_path, n_enc, n_g


def _one(pipe: SpeechToImage, wav: Path, png: Path, seed: int) -> dict[str, float]:
    """One file → PNG, each stage timed."""
    out = {}
    t0 = time.perf_counter()
    spec, n_frames = pipe.features(wav)
    t1 = time.perf_counter()
    emb = pipe.embed(spec, n_frames)
    t2 = time.perf_counter()
    img = pipe.images(emb, seed)
    t3 = time.perf_counter()
    save_png(Image.fromarray(to_uint8(img)[0]), png)
    t4 = time.perf_counter()
    out.update(frontend=t1 - t0, encoder=t2 - t1, generator=t3 - t2, png=t4 - t3, total=t4 - t0)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="length of the spoken-like test clip")
    p.add_argument("--rate", type=int, default=16000, help="its sample rate (resampled to 16 kHz by the front-end)")
    p.add_argument("--channels", type=int, default=1, help="its channel count (averaged to mono)")
    p.add_argument("--repeats", type=int, default=11, help="timed runs per variant, after one warm-up run")
    p.add_argument("--variants", default="paper,shapes", help="comma-separated: paper, shapes")
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    device = torch.device("cpu")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.2f} at start; "
          f"input: {args.seconds:g} s, {args.rate} Hz, {args.channels} channel(s); models randomly initialised")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wav = folder / "clip.wav"
        sf.write(wav, _spoken_like(args.seconds, args.rate, args.channels), args.rate)
        pipes, loads = {}, {}
        for name in names:
            enc_path, g_path, n_enc, n_g = _save_models(name, folder)
            t0 = time.perf_counter()
            pipes[name], info = load_speech_to_image(enc_path, g_path, device)
            loads[name] = time.perf_counter() - t0
            print(f"{name}: encoder {n_enc:,} parameters ({info['embedding_dim']}-d, "
                  f"{pipes[name].frontend.target_length} frames), generator {n_g:,} parameters "
                  f"({info['resolution']} px); loading both checkpoints took {loads[name]:.2f} s")
            _one(pipes[name], wav, folder / f"{name}.png", seed=0)  # warm-up
        times: dict[str, list[dict[str, float]]] = {n: [] for n in names}
        for r in range(args.repeats):
            for name in names:
                times[name].append(_one(pipes[name], wav, folder / f"{name}.png", seed=r))
    med = {n: {k: statistics.median(t[k] for t in times[n]) for k in (*STAGES, "total")} for n in names}
    print()
    print(f"median seconds over {args.repeats} runs, file to PNG:")
    header = f"{'model':<8} {'image':>6} " + " ".join(f"{k:>10}" for k in (*STAGES, "total"))
    print(header)
    for n in names:
        res = pipes[n].resolution
        print(f"{n:<8} {f'{res} px':>6} " + " ".join(f"{med[n][k]:>10.4f}" for k in (*STAGES, "total")))
    if len(names) == 2:
        a, b = names
        print(f"{a}/{b:<5} {'':>6} " + " ".join(f"{'x' + format(med[a][k] / med[b][k], '.2f'):>10}"
                                               for k in (*STAGES, "total")))
    for n in names:
        share = ", ".join(f"{k} {100 * med[n][k] / med[n]['total']:.0f}%" for k in STAGES)
        best = min(t["total"] for t in times[n])
        print(f"{n}: {share} of the median; fastest run {best:.4f} s")
    if hasattr(os, "getloadavg"):
        print(f"load average {os.getloadavg()[0]:.2f} at the end (above {os.cpu_count()}: other processes "
              "shared the cores, and the medians include their interference)")


if __name__ == "__main__":
    main()
