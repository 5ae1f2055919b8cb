"""Speech synthesis for stage A (docs/original.md#s2): backends, per-file voice draws, wav checks and atomic writes.

Two backends turn one caption into 16 kHz mono int16 samples plus a record of how it was spoken:

* :class:`EspeakBackend`: the Debian ``espeak-ng`` program, offline. Each file's voice, speaking rate
  and pitch are drawn from a :class:`VoiceSpec` with a generator seeded by (seed, split, item, caption),
  so a file is spoken the same way whatever the worker count and whichever files already exist.
* :class:`BaiduBackend`: the original's cloud service (``aip.AipSpeech``), with the voice ``per`` the
  user asks for actually sent (docs/original.md#bug-18) and bounded exponential back-off instead of endless retries.

:class:`RecordJournal` keeps the per-file records (``"tts"`` lists aligned with each item's audio) and
writes them into the manifest JSON atomically, so a killed run loses none of them.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr

from s2i.files import atomic_write, write_json_atomic

SAMPLE_RATE = 16000
SPLIT_IDS = {"train": 0, "test": 1, "text": 2}

# Accents and voice variants of espeak-ng 1.51 (see `espeak-ng --voices=en` and `--voices=variant`);
# roughly half of them female variants. Pitch and rate are drawn separately on top of these. British
# English variants are named 'en+…': espeak-ng drops the variant of 'en-gb+…' silently.
DEFAULT_VOICES = (
    "en-us", "en-us+f3", "en-us+m3", "en-us+f2",
    "en-gb", "en+f4", "en+m4",
    "en-gb-scotland", "en-gb-scotland+f5",
    "en-gb-x-rp", "en-gb-x-rp+m7",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd+f1",
    "en-029", "en-us-nyc+m2", "en+klatt",
)


class TTSError(RuntimeError):
    """A user-facing synthesis problem (missing program, bad voice, unwritable folder, ...)."""


class SynthesisError(TTSError):
    """One caption could not be synthesised; the run goes on and lists it at the end."""


class FatalServiceError(TTSError):
    """The service cannot serve any caption (unreachable, bad credentials); the run stops."""


# --------------------------------------------------------------------------------------------------
# Wav files


def wav_is_complete(path: Path, sample_rate: int = SAMPLE_RATE) -> bool:
    """True for a finished wav: decodable, mono, ``sample_rate`` Hz, more than 0 samples, not truncated.

    libsndfile silently reads a truncated wav as a shorter one, so for RIFF files the ``data`` chunk's
    declared size is also checked against the file size.
    """
    try:
        info = soundfile.info(str(path))
    except Exception:  # libsndfile reports a bad file through several exception types
        return False
    if info.samplerate != sample_rate or info.channels != 1 or info.frames <= 0:
        return False
    return info.format != "WAV" or _riff_data_complete(path)


def _riff_data_complete(path: Path) -> bool:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            chunk_size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                return pos + 8 + chunk_size <= size
            pos += 8 + chunk_size + (chunk_size & 1)
    return False


def decode_wav_bytes(data: bytes, sample_rate: int = SAMPLE_RATE, source: str = "audio") -> np.ndarray:
    """A wav held in memory → mono int16 at ``sample_rate`` (downmixed and resampled when needed).

    Raises:
        SynthesisError: not a RIFF/WAVE file, undecodable, or without samples.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SynthesisError(f"{source} returned {len(data)} bytes that are not a WAV file (start: {data[:16]!r})")
    try:
        y, sr = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:
        raise SynthesisError(f"{source} returned a WAV file that cannot be decoded ({exc})") from None
    if y.shape[0] == 0:
        raise SynthesisError(f"{source} returned a WAV file without samples")
    y = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
    if sr != sample_rate:
        y = soxr.resample(y, sr, sample_rate, quality="HQ")
    return to_int16(y)


def to_int16(y: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1) → int16, rounding and clipping (resampling can overshoot full scale)."""
    return np.clip(np.round(np.asarray(y, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_wav_atomic(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE,
                     before_replace: Callable[[], None] | None = None) -> None:
    """Writes 16-bit PCM mono through :func:`s2i.files.atomic_write`: a killed run leaves either the old
    file or the new one, never half of one (and a temporary file that the next run removes).
    ``before_replace`` runs between the write and the rename (used to journal the file's record first).
    The wav is not fsynced: a file lost to a power cut is spoken again.
    """
    with atomic_write(path, durable=False) as fh:
        soundfile.write(fh, samples, sample_rate, subtype="PCM_16", format="WAV")
        if before_replace is not None:
            before_replace()


def check_writable(folder: Path, what: str, hint: str = "") -> None:
    """Creates ``folder`` and a probe file in it; a :class:`TTSError` naming ``what`` if that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".tts-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TTSError(f"cannot write {what} in {folder}: {exc.strerror or exc}{hint}") from None


# --------------------------------------------------------------------------------------------------
# espeak-ng


@dataclass(frozen=True)
class VoiceSpec:
    """The pool of espeak voices and the ranges that rate (words/min, ``-s``) and pitch (``-p``) come from."""

    voices: tuple[str, ...] = DEFAULT_VOICES
    rate_min: int = 140
    rate_max: int = 200
    pitch_min: int = 35
    pitch_max: int = 65

    def __post_init__(self) -> None:
        if not self.voices:
            raise TTSError("the voice pool is empty")
        if not 80 <= self.rate_min <= self.rate_max <= 450:
            raise TTSError(f"the rate range must satisfy 80 <= rate_min <= rate_max <= 450 (espeak-ng's limits), "
                           f"got {self.rate_min}..{self.rate_max}")
        if not 0 <= self.pitch_min <= self.pitch_max <= 99:
            raise TTSError(f"the pitch range must satisfy 0 <= pitch_min <= pitch_max <= 99, "
                           f"got {self.pitch_min}..{self.pitch_max}")

    def draw(self, seed: int, split: str, item: int, caption: int) -> dict[str, Any]:
        """Voice, rate and pitch of one file, a function of (seed, split, item, caption) alone.

        Uniform over the pool (in its given order) and over the integer ranges, both ends included.
        """
        rng = np.random.default_rng([seed, SPLIT_IDS[split], item, caption])
        voice = self.voices[int(rng.integers(len(self.voices)))]
        rate = int(rng.integers(self.rate_min, self.rate_max + 1))
        pitch = int(rng.integers(self.pitch_min, self.pitch_max + 1))
        return {"backend": "espeak", "voice": voice, "rate": rate, "pitch": pitch}


def parse_voice_list(text: str) -> tuple[str, ...]:
    """``"en-us, en-gb+f3"`` → ``("en-us", "en-gb+f3")``; duplicates are kept only once, in order."""
    return tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))


class EspeakBackend:
    """Synthesises with the ``espeak-ng`` program; 22,050 Hz output is resampled to ``sample_rate``."""

    def __init__(self, spec: VoiceSpec, seed: int, binary: str = "espeak-ng", sample_rate: int = SAMPLE_RATE):
        found = shutil.which(binary)
        if found is None:
            raise TTSError(f"the espeak-ng program ({binary!r}) is not installed or not on PATH; "
                           "install it with `apt-get install espeak-ng`")
        if seed < 0:
            raise TTSError(f"--seed must be >= 0, got {seed}")
        self.binary = found
        self.spec = spec
        self.seed = seed
        self.sample_rate = sample_rate
        self.validate_voices(spec.voices)

    def variants(self) -> set[str]:
        """File names of the installed voice variants (what may follow ``+`` in a voice name)."""
        out = self._run(["--voices=variant"]).stdout.decode("utf-8", "replace")
        return {m.group(1).strip() for m in re.finditer(r"!v/(.+?)(?:\s{2,}|\s*\(|$)", out, re.MULTILINE)}

    def validate_voices(self, voices: Sequence[str]) -> None:
        """Every voice must exist and sound as named: espeak-ng ignores an unknown ``+variant`` silently, so
        variants are looked up in ``--voices=variant``; the base voice speaks a short phrase once, and with a
        variant it must sound different (some names, e.g. ``en-gb``, drop every variant silently)."""
        variants = self.variants()
        base_sound: dict[str, bytes] = {}  # each base voice is spoken once, however many variants use it
        for voice in voices:
            base, _, variant = voice.partition("+")
            if variant and variant not in variants:
                raise TTSError(f"espeak-ng has no voice variant {variant!r} (in voice {voice!r}); "
                               f"see `espeak-ng --voices=variant`, e.g. f3, m3, klatt")
            if base not in base_sound:
                proc = self._run(["-v", base, "--stdout"], "a red circle", check=False)
                if proc.returncode != 0:
                    msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
                    raise TTSError(f"espeak-ng cannot use the voice {voice!r} "
                                   f"({msg[-1] if msg else 'unknown voice'}); "
                                   f"see `espeak-ng --voices=en` for English voices")
                base_sound[base] = proc.stdout
            # Some voice names drop a known variant without a word (espeak-ng 1.51: 'en-gb+f3' speaks as
            # 'en-gb'; 'en+f3' works), so the variant must change the sound.
            if variant and self._run(["-v", voice, "--stdout"], "a red circle").stdout == base_sound[base]:
                raise TTSError(f"espeak-ng ignores the variant {variant!r} of voice {base!r}: {voice!r} sounds exactly "
                               f"like {base!r}; name the voice by its file instead (e.g. 'en+{variant}' for British "
                               f"English, see the File column of `espeak-ng --voices=en`)")

    def _run(self, args: list[str], text: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run([self.binary, *args], input=None if text is None else text.encode("utf-8"),
                                  capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SynthesisError(f"espeak-ng failed to run: {exc}") from None
        if check and proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise SynthesisError(f"espeak-ng exited with status {proc.returncode}: {err}")
        return proc

    def speak_with(self, text: str, record: dict[str, Any]) -> np.ndarray:
        """``text`` spoken by ``record``'s voice/rate/pitch → ``(n,)`` int16 at ``sample_rate``."""
        # The text goes through stdin, so a caption starting with '-' is never read as a flag.
        args = ["-v", record["voice"], "-s", str(record["rate"]), "-p", str(record["pitch"]), "-b", "1", "--stdout"]
        return decode_wav_bytes(self._run(args, text).stdout, self.sample_rate, "espeak-ng")

    def planned(self, split: str, item: int, caption: int) -> dict[str, Any]:
        """The record :meth:`speak` would write for this file (voice, rate, pitch), without speaking."""
        return self.spec.draw(self.seed, split, item, caption)

    def speak(self, text: str, split: str, item: int, caption: int) -> tuple[np.ndarray, dict[str, Any]]:
        record = self.planned(split, item, caption)
        return self.speak_with(text, record), record


# --------------------------------------------------------------------------------------------------
# Baidu AIP


# Baidu's documented error codes after which the same request cannot succeed: no permission (6), daily or
# total quota used up (17, 19), invalid or expired token (110, 111), bad parameters (501), token rejected
# (502). Others (2 service unavailable, 18 QPS limit, 503 back-end error, ...) are retried.
BAIDU_FATAL_CODES = {6, 17, 19, 110, 111, 501, 502}
BAIDU_SERVICE = "the Baidu TTS service (tsn.baidu.com)"


def backoff_wait(seconds: float) -> None:
    """The pause before a Baidu retry; a module function so tests can replace it."""
    time.sleep(seconds)


class BaiduBackend:
    """The original's Baidu AIP speech synthesis, ``synthesis(text, "zh", 1, {"aue": 6, "per": ...})``.

    Args:
        person: Baidu voice id ``per`` (0 standard female, 1 standard male, 3 and 4 emotional voices).
        speed, pitch, volume: ``spd``/``pit``/``vol`` levels (Baidu's defaults are 5).
        max_retries: retries after the first attempt; attempt r waits ``retry_wait * 2**(r-1)`` s first.
        timeout_ms: connection and socket time-outs (the original's 10,000 ms).
        sleep: the waiting function (default :func:`backoff_wait`).
    """

    def __init__(self, app_id: str, api_key: str, secret_key: str, person: int = 0, speed: int = 5, pitch: int = 5,
                 volume: int = 5, max_retries: int = 5, retry_wait: float = 1.0, timeout_ms: int = 10000,
                 sample_rate: int = SAMPLE_RATE, sleep: Callable[[float], None] | None = None):
        try:
            from aip import AipSpeech
        except ImportError:
            raise TTSError("--backend baidu needs the baidu-aip package: pip install baidu-aip") from None
        if max_retries < 0 or retry_wait < 0:
            raise TTSError("--max_retries and --retry_wait must be >= 0")
        self._client_class = AipSpeech
        self.credentials = (str(app_id), str(api_key), str(secret_key))
        self.options = {"aue": 6, "per": person, "spd": speed, "pit": pitch, "vol": volume}
        self.record = {"backend": "baidu", "voice": f"baidu-per{person}", "per": person, "spd": speed,
                       "pit": pitch, "vol": volume}
        self.max_retries = max_retries
        self.retry_wait = retry_wait
        self.timeout_ms = timeout_ms
        self.sample_rate = sample_rate
        self.sleep = sleep
        self._local = threading.local()  # one client (one HTTP session and token) per worker thread

    def client(self):
        if getattr(self._local, "client", None) is None:
            client = self._client_class(*self.credentials)
            client.setConnectionTimeoutInMillis(self.timeout_ms)
            client.setSocketTimeoutInMillis(self.timeout_ms)
            self._local.client = client
        return self._local.client

    def planned(self, split: str = "text", item: int = 0, caption: int = 0) -> dict:
        """The record :meth:`speak` writes (the same for every file)."""
        return dict(self.record)

    def speak(self, text: str, split: str = "text", item: int = 0, caption: int = 0) -> tuple[np.ndarray, dict]:
        return self.synthesize(text), self.planned(split, item, caption)

    def synthesize(self, text: str) -> np.ndarray:
        """One caption → int16 samples; retries with exponential back-off, then raises.

        Raises:
            FatalServiceError: the service was unreachable on every attempt, or refused the credentials
                or quota (nothing else can succeed either).
            SynthesisError: this caption failed on every attempt.
        """
        attempts = self.max_retries + 1
        last, unreachable = "", False
        for attempt in range(attempts):
            if attempt:
                (self.sleep or backoff_wait)(self.retry_wait * 2 ** (attempt - 1))
            client = self.client()
            try:
                result = client.synthesis(text, "zh", 1, dict(self.options))
            except OSError as exc:  # every requests exception (refused, DNS, time-out) is an OSError
                last, unreachable = f"{type(exc).__name__}: {exc}", True
                continue
            except KeyError as exc:
                if exc.args == ("access_token",):  # aip's symptom of a refused token request
                    auth = getattr(client, "_authObj", {}) or {}
                    why = auth.get("error_description") or auth.get("error") or "no access token returned"
                    raise FatalServiceError(f"{BAIDU_SERVICE} refused the credentials (--APP_ID/--API_KEY/"
                                            f"--SECRET_KEY): {why}") from None
                last, unreachable = f"KeyError: {exc}", False
                continue
            except Exception as exc:  # the SDK lets through whatever requests/json raise
                last, unreachable = f"{type(exc).__name__}: {exc}", False
                continue
            if isinstance(result, dict):
                code = result.get("err_no", result.get("error_code"))
                msg = result.get("err_msg", result.get("error_msg", ""))
                last = f"error {code}: {msg}"
                if code in BAIDU_FATAL_CODES:
                    raise FatalServiceError(f"{BAIDU_SERVICE} refused caption {text!r} with {last}; "
                                            "this would fail for every caption, so the run stops")
                unreachable = code == "SDK108"  # the SDK's code for a connection or read time-out
                continue
            try:
                return decode_wav_bytes(bytes(result), self.sample_rate, "Baidu TTS")
            except SynthesisError as exc:
                last, unreachable = str(exc), False
        if unreachable:
            raise FatalServiceError(f"{BAIDU_SERVICE} could not be reached ({attempts} attempts) for caption "
                                    f"{text!r}; last error: {last}")
        raise SynthesisError(f"Baidu TTS failed {attempts} times for caption {text!r}; last error: {last}")


# --------------------------------------------------------------------------------------------------
# Manifest records


class RecordJournal:
    """The ``"tts"`` records of one manifest: appended to a journal as files are written, merged into
    the manifest JSON by :meth:`flush` (atomic rewrite, every other key and its order preserved).

    A record is journaled *before* its wav is renamed into place, so every finished file has its record
    on disk even if the run is killed at any point; a journaled record whose file never appeared is
    harmless, because a missing file is synthesised again and its new record, journaled later, wins.

    Args:
        manifest_path: the ``train.json``/``test.json`` to update.
        audio: each item's audio paths as the manifest loader parsed them (records align with these).
    """

    def __init__(self, manifest_path: Path, audio: Sequence[Sequence[str]]):
        self.manifest_path = Path(manifest_path)
        self.path = self.manifest_path.with_name(self.manifest_path.name + ".tts-journal.jsonl")
        text = self.manifest_path.read_text(encoding="utf-8")
        self.raw = json.loads(text)
        self.indent = 2 if "\n" in text.strip() else None  # keep a compact file compact
        self.audio = [tuple(a) for a in audio]
        self._lock = threading.Lock()
        self._handle = None
        self.dirty = False

    def record_of(self, item: int, caption: int) -> dict | None:
        tts = self.raw["data"][item].get("tts")
        if isinstance(tts, list) and len(tts) == len(self.audio[item]):
            return tts[caption]
        return None

    def append(self, item: int, caption: int, record: dict) -> None:
        line = json.dumps({"item": item, "caption": caption, "audio": self.audio[item][caption], "tts": record})
        with self._lock:
            if self._handle is None:
                self._handle = open(self.path, "a", encoding="utf-8")
            self._handle.write(line + "\n")
            self._handle.flush()

    def _set(self, item: int, caption: int, record: dict) -> None:
        entry = self.raw["data"][item]
        n = len(self.audio[item])
        old = entry.get("tts")
        tts = list(old[:n]) + [None] * (n - len(old[:n])) if isinstance(old, list) else [None] * n
        tts[caption] = record
        if tts != old:
            entry["tts"] = tts
            self.dirty = True

    def _merge(self) -> int:
        if not self.path.exists():
            return 0
        merged = 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                item, caption = int(rec["item"]), int(rec["caption"])
                ok = 0 <= item < len(self.audio) and 0 <= caption < len(self.audio[item])
            except (ValueError, KeyError, TypeError):
                continue  # the partial last line of a killed run
            if ok and self.audio[item][caption] == rec.get("audio") and isinstance(rec.get("tts"), dict):
                self._set(item, caption, rec["tts"])
                merged += 1
        return merged

    def flush(self, final: bool = False) -> int:
        """Merges the journal into the manifest, rewrites it if anything changed, and empties the journal.

        Returns the number of journal lines merged.
        """
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            merged = self._merge()
            if self.dirty:
                write_json_atomic(self.manifest_path, self.raw, indent=self.indent)
                self.dirty = False
            self.path.unlink(missing_ok=True)
            return merged

