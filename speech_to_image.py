"""Speech to image: spoken descriptions (or the microphone) → images, with no text in between.

    python speech_to_image.py --encoder ./output/Audio_to_Image/log/birds_speech_encoder/latest.pth \\
        --generator ./output/StackGAN/birds_speech_encoder/Model/latest.pth --wav a.wav b.flac --out ./output/s2i
    python speech_to_image.py --encoder ENC.pth --generator G.pth --mic 5 --out ./output/s2i --samples 4

Writes ``<out>/<input stem>_<k>.png`` (k = 0..samples-1) at the generator's largest resolution, and for
``--mic`` the recording as ``<out>/mic_<timestamp>.wav``. Audio may have any sample rate and any number
of channels (resampled and averaged to mono by the shared front-end). Both checkpoints carry what is
needed to rebuild their models; the authors' ``epoch_N.pth`` and ``netG_<N>.pth`` load too, their
architecture read off the weights (``--bidirectional``, ``--rnn_layers``, ``--branch_num`` and
``--text_dim`` check it) and the encoder's front-end set to the docs/original.md#s4 defaults (``--frontend.NAME``
changes it). The same ``--seed`` gives the same images (on the same device, in the same ``--precision``:
fp32 by default; bf16 runs both networks under autocast where the device has it natively, and ``auto``
picks it there). Existing images are kept
unless ``--overwrite``. Library: ``Audio_to_Image/inference.py`` (speech → embedding) and
``StackGAN/sampling.py`` (embedding → images); this script joins them and checks that they fit.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from PIL import Image

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.embedding import explicit_keys
from Audio_to_Image.inference import (
    DEFAULT_SILENCE_DBFS,
    SpeechEmbedder,
    load_speech_embedder,
    record_microphone,
)
from Audio_to_Image.speech_encoder import TIME_REDUCTION
from s2i.checkpoints import CheckpointError
from s2i.cli import run_cli
from s2i.config import ConfigError, option, parse_config, require
from s2i.distributed import resolve_device
from s2i.grids import save_png, to_uint8
from s2i.precision import PRECISIONS, resolve_precision
from StackGAN.model import G_NET
from StackGAN.sampling import load_generator_for_eval, sample_images

T = TypeVar("T")


@dataclass
class Timing:
    """Seconds spent per stage, summed over the inputs of a run (filled by :meth:`measure` blocks)."""

    frontend: float = 0.0  # decode, resample, downmix, silence check, log-mel
    encoder: float = 0.0
    generator: float = 0.0

    @contextmanager
    def measure(self, stage: str, device: torch.device) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            setattr(self, stage, getattr(self, stage) + time.perf_counter() - t0)


@dataclass
class SpeechToImage:
    """A speech embedder and a conditional generator that takes its embeddings; the generator runs in the
    embedder's precision."""

    speech: SpeechEmbedder
    generator: G_NET
    timing: Timing = field(default_factory=Timing)

    def __post_init__(self) -> None:
        if not self.generator.b_condition:
            raise ConfigError("the generator is unconditional (GAN.B_CONDITION False): it ignores the speech")
        if self.generator.text_dim != self.speech.encoder.nhidden:
            raise ConfigError(f"the encoder gives {self.speech.encoder.nhidden}-d speech embeddings but the "
                              f"generator expects {self.generator.text_dim}-d ones (its TEXT.DIMENSION)")
        self.encoder, self.frontend, self.device = self.speech.encoder, self.speech.frontend, self.speech.device
        self.features, self.embed = self.speech.features, self.speech.embed

    @property
    def resolution(self) -> int:
        """Side of the largest image, 64 · 2^(branches − 1)."""
        return 64 * 2 ** (self.generator.branch_num - 1)

    def images(self, emb: torch.Tensor, seed: int, samples: int = 1) -> torch.Tensor:
        """``(1, D)`` embedding → ``(samples, 3, R, R)`` float32 images in [−1, 1] (``StackGAN.sampling.sample_images``)."""
        return sample_images(self.generator, emb, seed, samples, self.speech.precision)


def load_speech_to_image(encoder_path: str | Path, generator_path: str | Path, device: torch.device, *,
                         frontend: FrontEndConfig | None = None, frontend_explicit: set[str] | None = None,
                         bidirectional: bool | None = None, rnn_layers: int | None = None,
                         branch_num: int | None = None, text_dim: int | None = None,
                         silence_dbfs: float = DEFAULT_SILENCE_DBFS, precision: str = "fp32"
                         ) -> tuple[SpeechToImage, dict]:
    """Rebuilds both models from their checkpoints alone (ours or the authors'), checks that they fit each
    other and the original's flags, and returns (the pipeline, a description of what was loaded).
    ``precision`` (a resolved one) is the arithmetic of both networks' passes.
    Errors name the file and the flag: CheckpointError for an unusable file, ConfigError for a mismatch."""
    speech, info = _load_part("encoder", lambda: load_speech_embedder(
        encoder_path, device, frontend=frontend, frontend_explicit=frontend_explicit, bidirectional=bidirectional,
        rnn_layers=rnn_layers, silence_dbfs=silence_dbfs, precision=precision))
    if not Path(generator_path).is_file():
        raise CheckpointError(f"checkpoint {generator_path} does not exist (--generator)")
    # Both formats carry G's whole architecture (the authors' in its weights' shapes), so the original's
    # flags are checks here, with a message that names the flag rather than a list of unfitting keys.
    generator, step = _load_part("generator", lambda: load_generator_for_eval(generator_path, device))
    for name, given in (("branch_num", branch_num), ("text_dim", text_dim)):
        if given is not None and generator.args[name] != given:
            raise ConfigError(f"--{name} {given} was given but the generator {generator_path} has "
                              f"{name} {generator.args[name]}")
    try:
        pipe = SpeechToImage(speech, generator)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (encoder {encoder_path}, generator {generator_path})"
                          + ("; use a generator trained on this encoder's embeddings"
                             if generator.b_condition else "")) from None
    return pipe, {"encoder": str(encoder_path), "encoder_format": info["format"], "generator": str(generator_path),
                  "generator_step": step, "frontend_source": info["frontend_source"],
                  "embedding_dim": speech.encoder.nhidden, "resolution": pipe.resolution, "precision": precision}


def _load_part(role: str, load: Callable[[], T]) -> T:
    """Runs a loader and prefixes its CheckpointError with which of the two checkpoints failed."""
    try:
        return load()
    except CheckpointError as exc:
        expected = ("our speech-encoder checkpoint (model_args + state_dict) or the authors' "
                    "{'meta', 'state_dict'} epoch_N.pth" if role == "encoder" else
                    "our StackGAN snapshot (format s2i.stackgan.v1) or the authors' netG_<N>.pth")
        raise CheckpointError(f"--{role}: {exc} (expected {expected})") from None


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
    precision: str = option("fp32", "arithmetic of the encoder and the generator: fp32, bf16 (CUDA, or a CPU with "
                            "native bf16), fp16 (CUDA), auto = bf16 where native, else fp32", choices=PRECISIONS)
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
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    out = Path(cfg.out)
    inputs = [Path(p) for p in cfg.wav]
    _targets(inputs, out, cfg.samples, cfg.overwrite)  # fail before loading models or recording
    pipe, info = load_speech_to_image(
        cfg.encoder, cfg.generator, device, frontend=cfg.frontend, frontend_explicit=explicit_keys(ns),
        bidirectional=cfg.bidirectional, rnn_layers=cfg.rnn_layers, branch_num=cfg.branch_num,
        text_dim=cfg.text_dim, silence_dbfs=cfg.silence_dbfs, precision=precision)
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
    print(f"timing: {len(inputs)} input(s), {len(written)} image(s) on {device} ({precision}): loading {timing['load_s']:.2f} s, "
          f"front-end {tm.frontend:.3f} s, encoder {tm.encoder:.3f} s, generator {tm.generator:.3f} s, "
          f"{timing['per_input_s']:.3f} s per input from file to PNG, total {timing['total_s']:.2f} s")
    return {**info, "inputs": [str(p) for p in inputs], "images": written, "seed": cfg.seed, "samples": cfg.samples,
            "recording": str(recording) if recording else None, "device": str(device), "timing": timing}


if __name__ == "__main__":
    run_cli(main)
