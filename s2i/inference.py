"""Speech → image, the paper's end use: a spoken description → speech embedding → StackGAN-v2 image(s).

No text in between. The pieces are the ones training and extraction use, so inference cannot drift
from them: the log-mel front-end of ``Audio_to_Image/audio.py`` with the encoder checkpoint's settings,
the encoder and its exact length cut of ``Audio_to_Image/extract_audio_feature.py`` (the embedding a
generator sees here is the one stage D would have written for the same file), and the averaged
generator of a StackGAN snapshot (``StackGAN/main.py::load_generator_for_eval``).

Reproducibility: sample ``k`` of every input is drawn with the torch seed ``sample_seed(seed, k)``
(its noise z and its conditioning-augmentation draw, which the original samples in eval mode too,
SPEC §11.7). The images therefore depend on the seed, the sample index, the audio and the device,
not on how many inputs or samples one run has; sample ``k`` of two inputs shares its noise, so their
pictures differ by what was said. The global RNG is left as it was.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from Audio_to_Image.audio import AudioError, FrontEndConfig, load_audio, logmel_reference, pad_or_crop
from Audio_to_Image.extract_audio_feature import (
    check_frontend_fits,
    embed_batch,
    encoder_frontend,
    frames_needed_table,
    load_encoder,
    padded_frames,
)
from Audio_to_Image.speech_encoder import CNNRNN, TIME_REDUCTION
from s2i.checkpoints import CheckpointError
from s2i.config import ConfigError
from StackGAN.main import load_generator_for_eval
from StackGAN.model import G_NET
from StackGAN.trainer import generate

DEFAULT_SILENCE_DBFS = -60.0
"""RMS level (dB relative to full scale) below which an input counts as silent (0.1% of full scale)."""


def rms_dbfs(y: np.ndarray) -> float:
    """Level of ``y`` (float, full scale = 1) after removing its mean: ``20 log10 RMS``; −inf for silence."""
    y = np.asarray(y, dtype=np.float64)
    rms = math.sqrt(float(np.mean((y - y.mean()) ** 2))) if y.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else float("-inf")


def sample_seed(seed: int, k: int) -> int:
    """The torch seed of sample ``k`` under ``--seed seed`` (numpy's SeedSequence: well mixed, no
    collisions such as seed + k would give between (0, 1) and (1, 0))."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1, dtype=np.uint64)[0] % (2**63))


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
    """A speech encoder, its front-end and a generator that takes its embeddings.

    Args:
        encoder: :class:`CNNRNN` in eval mode on ``device``.
        generator: :class:`G_NET` in eval mode on ``device`` (conditional, ``text_dim`` = the encoder's
            sentence-embedding size).
        frontend: the log-mel settings the encoder was trained with.
        device: where both models run.
        silence_dbfs: inputs quieter than this (RMS, dBFS) are refused.
    """

    encoder: CNNRNN
    generator: G_NET
    frontend: FrontEndConfig
    device: torch.device
    silence_dbfs: float = DEFAULT_SILENCE_DBFS
    timing: Timing = field(default_factory=Timing)

    def __post_init__(self) -> None:
        check_frontend_fits(self.encoder, self.frontend)
        if not self.generator.b_condition:
            raise ConfigError("the generator is unconditional (GAN.B_CONDITION False): it ignores the speech")
        if self.generator.text_dim != self.encoder.nhidden:
            raise ConfigError(f"the encoder gives {self.encoder.nhidden}-d speech embeddings but the generator "
                              f"expects {self.generator.text_dim}-d ones (its TEXT.DIMENSION)")
        self._full_steps = self.encoder.steps_for(self.frontend.target_length)
        self._need = frames_needed_table(self.encoder, self.frontend.target_length)

    @property
    def resolution(self) -> int:
        """Side of the largest image, 64 · 2^(branches − 1)."""
        return 64 * 2 ** (self.generator.branch_num - 1)

    def features(self, path: str | Path) -> tuple[torch.Tensor, int]:
        """Decode ``path`` (any rate, mono or multichannel) and compute its log-mel, cut to the frames the
        encoder reads.

        Returns:
            ``(1, n_mels, T)`` float32 on the CPU (T <= target_length, a whole number of encoder steps
            where possible) and the valid frame count before the //64 reduction.
        Raises:
            AudioError: missing, undecodable, empty or silent audio.
        """
        y = load_audio(path, self.frontend.sample_rate)
        level = rms_dbfs(y)
        if level < self.silence_dbfs:
            what = "all its samples are equal" if level == float("-inf") else f"RMS level {level:.1f} dBFS"
            raise AudioError(path, f"is silent ({what}; inputs below {self.silence_dbfs:g} dBFS are refused, "
                             "see --silence_dbfs)")
        spec, n_frames = pad_or_crop(logmel_reference(y, self.frontend), self.frontend)
        steps = min(max(n_frames // TIME_REDUCTION, 1), self._full_steps)
        t = padded_frames(self._need[steps], self.frontend.target_length)
        return torch.from_numpy(np.ascontiguousarray(spec[None, :, :t])), n_frames

    def embed(self, spec: torch.Tensor, n_frames: int) -> torch.Tensor:
        """``(1, n_mels, T)`` log-mel → ``(1, D)`` sentence embedding (SPEC §5, as stage D computes it)."""
        return embed_batch(self.encoder, spec.to(self.device), torch.tensor([n_frames]), self._full_steps)

    @torch.no_grad()
    def images(self, emb: torch.Tensor, seed: int, samples: int = 1) -> torch.Tensor:
        """``(1, D)`` embedding → ``(samples, 3, R, R)`` images in [−1, 1] at the largest resolution.

        Sample ``k`` uses the torch seed :func:`sample_seed` ``(seed, k)`` for its noise and its
        conditioning-augmentation draw, inside a forked RNG (the caller's RNG state is untouched).
        """
        out = []
        devices = [self.device] if self.device.type == "cuda" else []
        for k in range(samples):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(sample_seed(seed, k))
                noise = torch.randn(1, self.generator.z_dim, device=self.device)
                out.append(generate(self.generator, noise, emb)[-1])
        return torch.cat(out)


def load_speech_to_image(
    encoder_path: str | Path,
    generator_path: str | Path,
    device: torch.device,
    *,
    frontend: FrontEndConfig | None = None,
    frontend_explicit: set[str] | None = None,
    bidirectional: bool | None = None,
    rnn_layers: int | None = None,
    branch_num: int | None = None,
    text_dim: int | None = None,
    silence_dbfs: float = DEFAULT_SILENCE_DBFS,
) -> tuple[SpeechToImage, dict]:
    """Rebuilds both models from their checkpoints alone.

    Args:
        encoder_path: our speech-encoder checkpoint (``model_args`` + ``frontend``) or the authors'
            ``{'meta', 'state_dict'}`` file (architecture read off the weights; ``bidirectional`` and
            ``rnn_layers`` are checked against it; SPEC §4 front-end defaults).
        generator_path: our StackGAN snapshot (``s2i.stackgan.v1``, its averaged G) or the authors'
            ``netG_<N>.pth`` (architecture read off the weights); ``branch_num``/``text_dim`` are checked.
        frontend, frontend_explicit: ``--frontend.*`` values and which of them were given; those
            replace the checkpoint's (or the defaults).
    Returns:
        (the pipeline, a description: paths, formats, front-end source, sizes).
    Raises:
        CheckpointError: a file that is missing, unreadable or neither format, naming the file.
        ConfigError: models that do not fit each other, naming both files and sizes.
    """
    encoder, ckpt = _load_part("encoder", lambda: load_encoder(encoder_path, device, bidirectional, rnn_layers,
                                                               flag="--encoder"))
    fe, source = encoder_frontend(ckpt, encoder_path, frontend or FrontEndConfig(), frontend_explicit or set())
    if not Path(generator_path).is_file():
        raise CheckpointError(f"checkpoint {generator_path} does not exist (--generator)")
    # Both formats carry G's whole architecture (the authors' in its weights' shapes), so the original's
    # flags are checks here, with a message that names the flag rather than a list of unfitting keys.
    generator, step = _load_part("generator", lambda: load_generator_for_eval(generator_path, device))
    for name, given in (("branch_num", branch_num), ("text_dim", text_dim)):
        if given is not None and generator.args[name] != given:
            raise ConfigError(f"--{name} {given} was given but the generator {generator_path} has "
                              f"{name} {generator.args[name]}")
    if generator.b_condition and generator.text_dim != encoder.nhidden:
        raise ConfigError(f"the encoder {encoder_path} gives {encoder.nhidden}-d speech embeddings but the "
                          f"generator {generator_path} expects {generator.text_dim}-d ones (its TEXT.DIMENSION); "
                          "use a generator trained on this encoder's embeddings")
    try:
        pipe = SpeechToImage(encoder, generator, fe, device, silence_dbfs)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (encoder {encoder_path}, generator {generator_path})") from None
    info = {
        "encoder": str(encoder_path), "encoder_format": "ours" if "model_args" in ckpt else "original",
        "generator": str(generator_path), "generator_step": step, "frontend_source": source,
        "embedding_dim": encoder.nhidden, "resolution": pipe.resolution,
    }
    return pipe, info


def _load_part(role: str, load):
    """Runs a loader and prefixes its CheckpointError with which of the two checkpoints failed."""
    try:
        return load()
    except CheckpointError as exc:
        expected = ("our speech-encoder checkpoint (model_args + state_dict) or the authors' "
                    "{'meta', 'state_dict'} epoch_N.pth" if role == "encoder" else
                    "our StackGAN snapshot (format s2i.stackgan.v1) or the authors' netG_<N>.pth")
        raise CheckpointError(f"--{role}: {exc} (expected {expected})") from None


class MicrophoneError(OSError):
    """No usable sound input (no PortAudio library, no input device, or the recording failed)."""


def record_microphone(seconds: float, out_dir: str | Path) -> Path:
    """Records ``seconds`` of mono audio from the default input device into ``out_dir/mic_<timestamp>.wav``.

    The recording is made at the device's default rate and written as 16-bit PCM; the caller then
    treats it like any input file, so running ``--wav`` on it later gives the same images.

    Raises:
        MicrophoneError: one line saying why no recording could be made.
    """
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"--mic needs a positive number of seconds, got {seconds}")
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice loads the PortAudio library at import time
        raise MicrophoneError(f"--mic: the PortAudio library is not available ({exc}); install libportaudio2, "
                              "or pass recorded files with --wav") from None
    try:
        device = sd.query_devices(kind="input")
    except (sd.PortAudioError, ValueError) as exc:
        raise MicrophoneError(f"--mic: no sound input device found on this machine (PortAudio: {exc}); "
                              "pass recorded files with --wav instead") from None
    rate = int(device["default_samplerate"])
    print(f"recording {seconds:g} s from '{device['name']}' at {rate} Hz ...", flush=True)
    try:
        data = sd.rec(max(1, round(seconds * rate)), samplerate=rate, channels=1, dtype="float32")
        sd.wait()
    except (sd.PortAudioError, ValueError) as exc:
        raise MicrophoneError(f"--mic: recording from '{device['name']}' failed: {exc}") from None
    out_dir = Path(out_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = out_dir / f"mic_{stamp}.wav", 1
    while path.exists():  # two recordings within one second
        n += 1
        path = out_dir / f"mic_{stamp}-{n}.wav"
    _write_wav(path, np.asarray(data, dtype=np.float32).reshape(-1), rate)
    return path


def _write_wav(path: Path, y: np.ndarray, rate: int) -> None:
    """16-bit PCM wav, written to a temporary file and renamed (never a half-written recording)."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    soundfile.write(tmp, np.clip(y, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)
