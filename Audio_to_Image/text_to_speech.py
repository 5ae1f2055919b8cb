"""Stage A: speak every caption of the manifests into a 16 kHz mono 16-bit wav (docs/original.md#s2).

    python Audio_to_Image/text_to_speech.py --dataset birds                    # espeak-ng, offline
    python Audio_to_Image/text_to_speech.py --dataset birds --backend baidu \\
        --APP_ID ... --API_KEY ... --SECRET_KEY ... --person 0                 # the original's service
    python Audio_to_Image/text_to_speech.py --text "a small red bird" --save_path bird.wav

Caption k of item i goes to ``Manifest.audio_path(i, k)`` (``audio_base_path / audio[k]``), where the
speech encoder reads it; with ``--output_dir`` to the original's layout instead. Every run is resumable:
complete wavs are skipped, truncated ones redone, each file written atomically. A complete wav whose
recorded voice differs from the one this run plans (after a change of --voices, --seed or the rate/pitch
ranges) is kept and counted, unless --respeak_changed asks to speak it again. The voice, rate and pitch of
each file are recorded in the manifest as ``"tts"`` (a list aligned with the item's audio).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from Audio_to_Image.tts import (
    DEFAULT_VOICES,
    SAMPLE_RATE,
    BaiduBackend,
    EspeakBackend,
    FatalServiceError,
    RecordJournal,
    TTSError,
    VoiceSpec,
    check_writable,
    parse_voice_list,
    wav_is_complete,
    write_wav_atomic,
)
from s2i.cli import run_cli
from s2i.config import option, parse_config, require
from s2i.data.manifests import DATA_ROOTS, DATASETS, Manifest, ManifestError, load_manifest
from s2i.runs import remove_stale_temp_files

SPLITS = ("train", "test")
MAX_LISTED_FAILURES = 50


@dataclass
class TTSConfig:
    # --- the original's flags (docs/original.md#s13) ---
    APP_ID: str | None = option(None, "Baidu AIP app id (--backend baidu)")
    API_KEY: str | None = option(None, "Baidu AIP API key (--backend baidu)")
    SECRET_KEY: str | None = option(None, "Baidu AIP secret key (--backend baidu)")
    output_dir: str | None = option(None, "write to the original's layout instead of the manifest's audio_base_path: "
                                    "<output_dir>/audio/<person>/<audio[k]> for birds and shapes, "
                                    "<output_dir>/<audio[k]> for flowers and places")
    person: int = option(0, "Baidu voice 'per' (0 female, 1 male, 3 and 4 emotional); with --output_dir also "
                         "the birds sub-folder, as in the original")
    dataset: str = option("birds", "which manifest schema and data root (the original defaulted to places)",
                          choices=DATASETS)
    one_by_one: bool = option(False, "accepted so old commands parse; every run goes one caption at a time and "
                              "skips finished files")
    text: str | None = option(None, "speak this one string to --save_path instead of the manifests")
    save_path: str | None = option(None, "output wav of --text")
    # --- new in this reproduction ---
    backend: str = option("espeak", "espeak = the espeak-ng program, offline; baidu = the original's cloud "
                          "service", choices=("espeak", "baidu"))
    data_root: str | None = option(None, "dataset folder (default ./data/<dataset>)")
    train_json: str | None = option(None, "training manifest (default <data_root>/train.json)")
    test_json: str | None = option(None, "test manifest (default <data_root>/test.json)")
    splits: str = option("train,test", "comma-separated manifests to speak")
    voices: str = option(",".join(DEFAULT_VOICES), "comma-separated espeak-ng voices each file's voice is drawn "
                         "from, language[+variant] (see espeak-ng --voices=en and --voices=variant)")
    exclude_voices: str = option("", "comma-separated voices taken out of --voices, e.g. to hold speakers out "
                                 "of training")
    respeak_changed: bool = option(False, "speak again the complete wavs whose recorded voice, rate or pitch "
                                   "differs from this run's plan (default: keep them and say how many)")
    rate_min: int = option(140, "lowest espeak speaking rate, words per minute")
    rate_max: int = option(200, "highest espeak speaking rate, words per minute")
    pitch_min: int = option(35, "lowest espeak pitch (0-99)")
    pitch_max: int = option(65, "highest espeak pitch (0-99)")
    seed: int = option(0, "seed of the voice/rate/pitch draws; file (split, item, caption) always gets the "
                       "same draw for the same seed and pool")
    workers: int = option(0, "parallel synthesis threads (0 = one per CPU)")
    espeak_binary: str = option("espeak-ng", "the espeak-ng program")
    baidu_speed: int = option(5, "Baidu 'spd' level (0-15)")
    baidu_pitch: int = option(5, "Baidu 'pit' level (0-15)")
    baidu_volume: int = option(5, "Baidu 'vol' level (0-15)")
    max_retries: int = option(5, "Baidu retries per caption after the first attempt")
    retry_wait: float = option(1.0, "Baidu back-off base in seconds: retry r waits retry_wait * 2^(r-1)")
    timeout_ms: int = option(10000, "Baidu connection and socket time-outs in milliseconds")
    record: bool = option(True, "write each file's voice, rate and pitch into the manifest ('tts')")
    manifest_every: float = option(60.0, "seconds between rewrites of the manifest during a run")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        unknown = [s for s in self.split_list if s not in SPLITS]
        checks = [
            (not unknown and self.split_list, f"--splits must name train and/or test, got {self.splits!r}"),
            (self.workers >= 0, "--workers must be >= 0"),
            (self.seed >= 0, "--seed must be >= 0"),
            (self.max_retries >= 0 and self.retry_wait >= 0, "--max_retries and --retry_wait must be >= 0"),
            (self.timeout_ms > 0, "--timeout_ms must be positive"),
            (self.manifest_every > 0, "--manifest_every must be positive"),
            ((self.text is None) == (self.save_path is None), "--text and --save_path go together"),
        ]
        require(checks)

    @property
    def split_list(self) -> list[str]:
        return [s.strip() for s in self.splits.split(",") if s.strip()]

    def manifest_path(self, split: str) -> Path:
        explicit = self.train_json if split == "train" else self.test_json
        return Path(explicit or Path(self.data_root or DATA_ROOTS[self.dataset]) / f"{split}.json")

    def voice_spec(self) -> VoiceSpec:
        pool = parse_voice_list(self.voices)
        held_out = parse_voice_list(self.exclude_voices)
        missing = [v for v in held_out if v not in pool]
        if missing:
            raise TTSError(f"--exclude_voices names {', '.join(missing)}, which --voices does not contain")
        pool = tuple(v for v in pool if v not in held_out)
        if not pool:
            raise TTSError("no voices left: --exclude_voices removes every voice of --voices")
        return VoiceSpec(pool, self.rate_min, self.rate_max, self.pitch_min, self.pitch_max)


@dataclass(frozen=True)
class Job:
    item: int
    caption: int
    text: str
    path: Path


def make_backend(cfg: TTSConfig) -> EspeakBackend | BaiduBackend:
    if cfg.backend == "espeak":
        return EspeakBackend(cfg.voice_spec(), cfg.seed, cfg.espeak_binary, SAMPLE_RATE)
    missing = [k for k in ("APP_ID", "API_KEY", "SECRET_KEY") if not getattr(cfg, k)]
    if missing:
        raise TTSError(f"--backend baidu needs {', '.join('--' + k for k in missing)}")
    return BaiduBackend(cfg.APP_ID, cfg.API_KEY, cfg.SECRET_KEY, cfg.person, cfg.baidu_speed, cfg.baidu_pitch,
                        cfg.baidu_volume, cfg.max_retries, cfg.retry_wait, cfg.timeout_ms, SAMPLE_RATE)


def output_root(cfg: TTSConfig, manifest: Manifest) -> Path:
    """Where the audio paths of ``manifest`` are joined: its audio_base_path, or the original's layout."""
    if cfg.output_dir is None:
        return manifest.audio_base_path
    if cfg.dataset in ("birds", "shapes"):
        return Path(cfg.output_dir) / "audio" / str(cfg.person)
    return Path(cfg.output_dir)


def plan_jobs(manifest: Manifest, root: Path) -> list[Job]:
    """One job per caption; a caption count that differs from the audio count or an empty caption is an
    error naming the item, raised before anything is synthesised."""
    jobs = []
    for i, item in enumerate(manifest.items):
        where = f"{manifest.path} item {i} ({item.image})"
        if len(item.captions) != len(item.audio):
            raise ManifestError(f"{where}: {len(item.captions)} captions but {len(item.audio)} audio paths")
        for k, (text, rel) in enumerate(zip(item.captions, item.audio)):
            if not text.strip():
                raise ManifestError(f"{where}: caption {k} is empty, so there is nothing to speak")
            jobs.append(Job(i, k, text, root / rel))
    return jobs


def _log(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def run_split(cfg: TTSConfig, backend, split: str, manifest: Manifest, jobs: list[Job], root: Path) -> dict:
    """Speaks the missing files of one manifest with a thread pool; returns the counts and failures."""
    check_writable(root, "audio files")
    remove_stale_temp_files(root)  # half-written wavs of a killed run
    journal = None
    if cfg.record:
        check_writable(manifest.path.parent, f"the voice records of {manifest.path.name}",
                       "; pass --no-record to speak without recording them")
        journal = RecordJournal(manifest.path, [it.audio for it in manifest.items])
        resumed = journal.flush()  # records journaled by a run that was killed
        if resumed:
            _log(f"{split}: merged {resumed} records left by an interrupted run into {manifest.path}")

    stop = threading.Event()  # set by a fatal service error, so queued jobs end without trying

    def work(job: Job) -> str:
        if stop.is_set():
            return "cancelled"
        if wav_is_complete(job.path, SAMPLE_RATE):
            # One without a record (spoken elsewhere, or --no-record) cannot be compared and is kept.
            old = journal.record_of(job.item, job.caption) if journal else None
            if old is None or old == backend.planned(split, job.item, job.caption):
                return "skipped"
            if not cfg.respeak_changed:
                return "changed"
        try:
            audio, record = backend.speak(job.text, split, job.item, job.caption)
        except FatalServiceError:
            stop.set()
            raise
        journal_it = (lambda: journal.append(job.item, job.caption, record)) if journal else None
        write_wav_atomic(job.path, audio, SAMPLE_RATE, before_replace=journal_it)
        return "spoken"

    counts = {"spoken": 0, "skipped": 0, "failed": 0}
    changed = 0  # skipped files whose recorded voice is not this run's
    failures: list[tuple[str, str]] = []
    skipped: list[Job] = []
    workers = cfg.workers or os.cpu_count() or 1
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tts")
    last_flush = time.monotonic()
    try:
        futures = {pool.submit(work, job): job for job in jobs}
        bar = tqdm(as_completed(futures), total=len(futures), desc=f"speaking {split}", unit="file",
                   disable=not cfg.progress, dynamic_ncols=True)
        for fut in bar:
            job = futures[fut]
            try:
                status = fut.result()
            except FatalServiceError as exc:
                raise FatalServiceError(f"{exc} (stopped {split} after {counts['spoken']} spoken and "
                                        f"{counts['skipped']} skipped; rerun to resume)") from None
            except (TTSError, OSError) as exc:
                counts["failed"] += 1
                failures.append((str(job.path), str(exc)))
                continue
            if status == "cancelled":
                continue
            if status == "changed":
                changed += 1
                status = "skipped"
            counts[status] += 1
            if status == "skipped":
                skipped.append(job)
            if journal and time.monotonic() - last_flush >= cfg.manifest_every:
                journal.flush()
                last_flush = time.monotonic()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if journal:
            journal.flush()
    unrecorded = sum(journal.record_of(j.item, j.caption) is None for j in skipped) if journal else 0
    return {**counts, "total": len(jobs), "failures": failures, "unrecorded": unrecorded, "changed": changed,
            "root": str(root)}


def speak_one(cfg: TTSConfig, backend) -> dict:
    """``--text T --save_path P``: one string to one wav (the espeak draw of split 'text', item 0)."""
    if not cfg.text.strip():
        raise TTSError("--text is empty, so there is nothing to speak")
    path = Path(cfg.save_path)
    check_writable(path.parent, "--save_path")
    audio, record = backend.speak(cfg.text, "text", 0, 0)
    write_wav_atomic(path, audio, SAMPLE_RATE)
    _log(f"wrote {path} ({audio.shape[0] / SAMPLE_RATE:.2f} s, {record})")
    return {"save_path": str(path), "tts": record, "spoken": 1, "skipped": 0, "failed": 0, "failures": []}


def main(argv: list[str] | None = None) -> dict:
    cfg, _ = parse_config(TTSConfig, argv, __doc__.splitlines()[0])
    if cfg.text is not None:
        return speak_one(cfg, make_backend(cfg))

    # Read and check every manifest before any synthesis starts.
    plans = []
    for split in cfg.split_list:
        manifest = load_manifest(cfg.manifest_path(split), cfg.dataset)
        root = output_root(cfg, manifest)
        if cfg.output_dir is not None and root.resolve() != manifest.audio_base_path.resolve():
            _log(f"warning: {split} audio goes to {root}, but {manifest.path} has audio_base_path "
                 f"{manifest.audio_base_path}, which is where the speech encoder reads; point audio_base_path "
                 f"there or leave out --output_dir (the manifest's tts records will describe the files written "
                 f"to {root})")
        plans.append((split, manifest, plan_jobs(manifest, root), root))
    backend = make_backend(cfg)

    summary: dict = {"splits": {}, "spoken": 0, "skipped": 0, "failed": 0, "failures": []}
    for split, manifest, jobs, root in plans:
        res = run_split(cfg, backend, split, manifest, jobs, root)
        summary["splits"][split] = res
        for key in ("spoken", "skipped", "failed", "failures"):
            summary[key] += res[key]
        note = f"; {res['unrecorded']} skipped files have no tts record" if res["unrecorded"] else ""
        if res["changed"]:
            note += (f"; {res['changed']} skipped files were spoken by another voice, rate or pitch than this run "
                     "plans (kept as they are; --respeak_changed speaks them again)")
        _log(f"{split}: {res['spoken']} spoken, {res['skipped']} skipped, {res['failed']} failed "
             f"of {res['total']} files in {root}{note}")
    for path, reason in summary["failures"][:MAX_LISTED_FAILURES]:
        _log(f"failed: {path}: {reason}")
    if len(summary["failures"]) > MAX_LISTED_FAILURES:
        _log(f"... and {len(summary['failures']) - MAX_LISTED_FAILURES} more failures")
    _log(f"text_to_speech ({cfg.backend}): {summary['spoken']} spoken, {summary['skipped']} skipped, "
         f"{summary['failed']} failed")
    return summary


def cli() -> None:
    summary = run_cli(main, extra=(TTSError,))
    if summary["failed"]:
        sys.exit(f"error: {summary['failed']} file(s) could not be spoken (listed above); rerun to retry them")


if __name__ == "__main__":
    cli()
