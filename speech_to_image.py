"""Speech to image: spoken descriptions (or the microphone) → images, with no text in between.

    python speech_to_image.py --encoder ./output/Audio_to_Image/log/birds_speech_encoder/latest.pth \\
        --generator ./output/StackGAN/birds_speech_encoder/Model/latest.pth --wav a.wav b.flac --out ./output/s2i
    python speech_to_image.py --encoder ENC.pth --generator G.pth --mic 5 --out ./output/s2i --samples 4

Writes ``<out>/<input stem>_<k>.png`` (k = 0..samples-1) at the generator's largest resolution, and for
``--mic`` the recording as ``<out>/mic_<timestamp>.wav``. Audio may have any sample rate and any number
of channels (resampled and averaged to mono by the shared front-end). Both checkpoints carry what is
needed to rebuild their models; the authors' ``epoch_N.pth`` and ``netG_<N>.pth`` load too, their
architecture read off the weights (``--bidirectional``, ``--rnn_layers``, ``--branch_num`` and
``--text_dim`` check it) and the encoder's front-end set to the SPEC §4 defaults (``--frontend.NAME``
changes it). The same ``--seed`` gives the same images (on the same device). Existing images are kept
unless ``--overwrite``. Library: ``s2i/inference.py``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.extract_audio_feature import explicit_keys
from Audio_to_Image.speech_encoder import TIME_REDUCTION
from s2i.cli import run_cli
from s2i.config import ConfigError, option, parse_config, require
from s2i.distributed import resolve_device
from s2i.grids import save_png, to_uint8
from s2i.inference import DEFAULT_SILENCE_DBFS, load_speech_to_image, record_microphone


@dataclass
class InferenceConfig:
    encoder: str = option("", "speech-encoder checkpoint: ours (latest.pth, best.pth) or the authors' epoch_N.pth")
    generator: str = option("", "generator: our StackGAN snapshot (Model/latest.pth) or the authors' netG_<N>.pth")
    wav: list[str] = option([], "audio files (wav, flac, ...; any rate, mono or stereo)")
    mic: float | None = option(None, "also record this many seconds from the default microphone")
    out: str = option("./output/speech_to_image", "folder for the images (and the --mic recording)")
    samples: int = option(1, "images per input, <stem>_0.png ... <stem>_<samples-1>.png")
    seed: int = option(0, "random seed; the same seed gives the same images")
    device: str = option("auto", "auto = cuda when available, else cpu", choices=("auto", "cpu", "cuda"))
    overwrite: bool = option(False, "replace existing <out>/<stem>_<k>.png")
    silence_dbfs: float = option(DEFAULT_SILENCE_DBFS, "refuse inputs whose RMS level is below this (dBFS)")
    # The original's architecture flags; the checkpoints' own settings are used when these are not given.
    bidirectional: bool | None = option(None, "check that the encoder's LSTM is (or is not) bidirectional")
    rnn_layers: int | None = option(None, "check the encoder's number of LSTM layers")
    branch_num: int | None = option(None, "check the generator's number of branches (3 = 256 px)")
    text_dim: int | None = option(None, "check the generator's embedding size (TEXT.DIMENSION)")
    frontend: FrontEndConfig = dataclasses.field(default_factory=FrontEndConfig)

    def __post_init__(self) -> None:
        require([
            (self.samples >= 1, f"--samples must be at least 1, got {self.samples}"),
            (self.seed >= 0, f"--seed must be 0 or more, got {self.seed}"),
        ])

    def check_complete(self) -> None:
        """What the defaults cannot give (checked after parsing, since the defaults alone are incomplete)."""
        require([
            (bool(self.encoder), "--encoder is required (a speech-encoder checkpoint)"),
            (bool(self.generator), "--generator is required (a StackGAN generator checkpoint)"),
            (bool(self.wav) or self.mic is not None, "give audio files with --wav, or --mic SECONDS"),
        ])


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _targets(inputs: list[Path], out: Path, samples: int, overwrite: bool) -> list[list[Path]]:
    """``out/<stem>_<k>.png`` per input; refuses stems that collide and, without --overwrite, existing files."""
    seen: dict[str, Path] = {}
    for p in inputs:
        if p.stem in seen:
            raise ConfigError(f"inputs {seen[p.stem]} and {p} have the same name stem '{p.stem}' and would write "
                              f"the same images in {out}; rename one")
        seen[p.stem] = p
    targets = [[out / f"{p.stem}_{k}.png" for k in range(samples)] for p in inputs]
    existing = [t for row in targets for t in row if t.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ConfigError(f"{existing[0]} already exists{more}; pass --overwrite to replace, or choose another --out")
    return targets


def main(argv: list[str] | None = None) -> dict[str, Any]:
    t_start = time.perf_counter()
    cfg, ns = parse_config(InferenceConfig, argv, __doc__.splitlines()[0])
    cfg.check_complete()
    try:
        device = resolve_device(cfg.device)
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from None
    out = Path(cfg.out)
    inputs = [Path(p) for p in cfg.wav]
    _targets(inputs, out, cfg.samples, cfg.overwrite)  # fail before loading models or recording
    pipe, info = load_speech_to_image(
        cfg.encoder, cfg.generator, device, frontend=cfg.frontend, frontend_explicit=explicit_keys(ns),
        bidirectional=cfg.bidirectional, rnn_layers=cfg.rnn_layers, branch_num=cfg.branch_num,
        text_dim=cfg.text_dim, silence_dbfs=cfg.silence_dbfs)
    t_loaded = time.perf_counter()
    recording = None
    if cfg.mic is not None:
        recording = record_microphone(cfg.mic, out)
        print(f"wrote {recording} ({cfg.mic:g} s recording)")
        inputs.append(recording)
    targets = _targets(inputs, out, cfg.samples, cfg.overwrite)

    written = []
    t_run = time.perf_counter()
    tm = pipe.timing
    # Every input's audio is checked before the first image is written: one bad file stops the run clean.
    with tm.measure("frontend", device):
        features = [pipe.features(path) for path in inputs]
    fe = pipe.frontend
    for path, (_, n_frames) in zip(inputs, features):
        seconds = fe.hop_length / fe.sample_rate  # per frame
        if n_frames < TIME_REDUCTION:
            _warn(f"{path} is shorter than one encoder step ({TIME_REDUCTION * seconds:.2f} s); its embedding "
                  "comes from that one short step")
        elif n_frames >= fe.target_length:
            _warn(f"{path}: only its first {fe.target_length * seconds:.2f} s are used (frontend.target_length)")
    for path, (spec, n_frames), names in zip(inputs, features, targets):
        with tm.measure("encoder", device):
            emb = pipe.embed(spec, n_frames)
        with tm.measure("generator", device):
            images = to_uint8(pipe.images(emb, cfg.seed, cfg.samples))
        for arr, name in zip(images, names):
            save_png(Image.fromarray(arr), name)
            written.append(str(name))
            print(f"wrote {name} ({pipe.resolution}x{pipe.resolution}) from {path}")
    t_end = time.perf_counter()
    timing = {"load_s": t_loaded - t_start, "frontend_s": tm.frontend, "encoder_s": tm.encoder,
              "generator_s": tm.generator, "per_input_s": (t_end - t_run) / max(1, len(inputs)),
              "total_s": t_end - t_start}
    print(f"timing: {len(inputs)} input(s), {len(written)} image(s) on {device}: loading {timing['load_s']:.2f} s, "
          f"front-end {tm.frontend:.3f} s, encoder {tm.encoder:.3f} s, generator {tm.generator:.3f} s, "
          f"{timing['per_input_s']:.3f} s per input from file to PNG, total {timing['total_s']:.2f} s")
    return {**info, "inputs": [str(p) for p in inputs], "images": written, "seed": cfg.seed, "samples": cfg.samples,
            "recording": str(recording) if recording else None, "device": str(device), "timing": timing}


if __name__ == "__main__":
    run_cli(main)
