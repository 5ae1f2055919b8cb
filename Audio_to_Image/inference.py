"""Speech → sentence embedding for inference: one recording (or the microphone) at a time.

The pieces are the ones training and extraction use, so inference cannot drift from them: the log-mel
front-end of ``Audio_to_Image/audio.py`` with the encoder checkpoint's settings, and the encoder with
the exact length cut of ``Audio_to_Image/embedding.py`` (the embedding here is the one stage D would
have written for the same file). ``speech_to_image.py`` hands the embedding to a StackGAN generator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from Audio_to_Image.audio import AudioError, FrontEndConfig, load_audio, logmel_reference, pad_or_crop
from Audio_to_Image.embedding import (
    check_frontend_fits,
    embed_batch,
    encoder_frontend,
    frames_needed_table,
    load_encoder,
    padded_frames,
)
from Audio_to_Image.speech_encoder import CNNRNN, TIME_REDUCTION
from s2i.config import ConfigError
from s2i.files import atomic_write

DEFAULT_SILENCE_DBFS = -60.0
"""RMS level (dB relative to full scale) below which an input counts as silent (0.1% of full scale)."""


def rms_dbfs(y: np.ndarray) -> float:
    """Level of ``y`` (float, full scale = 1) after removing its mean: ``20 log10 RMS``; −inf for silence."""
    y = np.asarray(y, dtype=np.float64)
    rms = math.sqrt(float(np.mean((y - y.mean()) ** 2))) if y.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else float("-inf")


@dataclass
class SpeechEmbedder:
    """A speech encoder and the front-end it was trained with.

    Args:
        encoder: :class:`CNNRNN` in eval mode on ``device``.
        frontend: the log-mel settings the encoder was trained with.
        device: where the encoder runs.
        silence_dbfs: inputs quieter than this (RMS, dBFS) are refused.
        precision: a resolved precision (``s2i.precision.resolve_precision``) for the encoder's pass; the
            embedding is float32 whatever it is.
    """

    encoder: CNNRNN
    frontend: FrontEndConfig
    device: torch.device
    silence_dbfs: float = DEFAULT_SILENCE_DBFS
    precision: str = "fp32"

    def __post_init__(self) -> None:
        check_frontend_fits(self.encoder, self.frontend)
        self._full_steps = self.encoder.steps_for(self.frontend.target_length)
        self._need = frames_needed_table(self.encoder, self.frontend.target_length)

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
        """``(1, n_mels, T)`` log-mel → ``(1, D)`` float32 sentence embedding (docs/original.md#s5, as stage D
        computes it in the same precision)."""
        return embed_batch(self.encoder, spec.to(self.device), torch.tensor([n_frames]), self._full_steps,
                           self.precision)



def load_speech_embedder(path: str | Path, device: torch.device, *, frontend: FrontEndConfig | None = None,
                         frontend_explicit: set[str] | None = None, bidirectional: bool | None = None,
                         rnn_layers: int | None = None, silence_dbfs: float = DEFAULT_SILENCE_DBFS,
                         flag: str = "--encoder", precision: str = "fp32") -> tuple[SpeechEmbedder, dict[str, Any]]:
    """Rebuilds the encoder from its checkpoint alone.

    Args:
        path: our speech-encoder checkpoint (``model_args`` + ``frontend``) or the authors'
            ``{'meta', 'state_dict'}`` file (architecture read off the weights; ``bidirectional`` and
            ``rnn_layers`` are checked against it; the original's front-end defaults, docs/original.md#s4).
        frontend, frontend_explicit: ``--frontend.*`` values and which of them were given; those
            replace the checkpoint's (or the defaults).
        precision: a resolved precision for the encoder's passes.
    Returns:
        (the embedder, a description: format and where the front-end settings came from).
    Raises:
        CheckpointError: a file that is missing, unreadable or neither format, naming the file.
    """
    encoder, ckpt = load_encoder(path, device, bidirectional, rnn_layers, flag=flag)
    fe, source = encoder_frontend(ckpt, path, frontend or FrontEndConfig(), frontend_explicit or set())
    info = {"format": "ours" if "model_args" in ckpt else "original", "frontend_source": source}
    return SpeechEmbedder(encoder, fe, device, silence_dbfs, precision), info


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
    """16-bit PCM wav through :func:`s2i.files.atomic_write` (never a half-written recording)."""
    import soundfile

    with atomic_write(path) as fh:
        soundfile.write(fh, np.clip(y, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")
