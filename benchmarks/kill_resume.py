"""Kill-and-resume at random moments (issue 7): each resumable stage is SIGKILLed again and again, restarted,
then run to the end, and its output compared with a run that was never killed.

    python benchmarks/kill_resume.py                        # 12 kills per stage, seed 0 (~10 min on 2 cores)
    python benchmarks/kill_resume.py --kills 20 --stages encoder,gan --seed 1

Stages, each in a temporary folder with settings small enough for a cycle to take seconds:

* ``encoder``: Audio_to_Image/train_audio_encoder.py on the generated toy set (s2i.data.synthetic), 30 epochs of
  3 batches of 8, 320-frame spectrograms; a checkpoint per epoch.
* ``gan``: StackGAN/main.py on the tests' tiny set (3 classes of 80 px squares, 24-d embeddings), 2 branches,
  400 steps of 4 images, a snapshot every 5.
* ``tts``: Audio_to_Image/text_to_speech.py (espeak-ng, one worker) on a 96-image shapes set: 960 wavs.
* ``features``: prepare_image_features.py (EfficientNet-Lite0, 224-px views so that the work outlasts a few
  kills) on a 48-image shapes set, chunks of 2 images.

A cycle starts the stage in a process group of its own (with ``--resume`` when a trainer has a checkpoint),
sleeps a time drawn from a seeded RNG, and SIGKILLs the group. Then it looks at the disk: every ``.pth``
must load with ``torch.load(weights_only=True)``, every wav on disk must be complete, every partial-feature
chunk must load; temporary files left behind are counted (the next run removes or ignores them). After the
kills the stage runs to the end (for TTS and features this rerun must do only what is missing) and is
compared with an uninterrupted run of the same settings: trainer weights and optimizer states bit for bit,
wavs and feature pickles byte for byte, and every epoch or step logged exactly once.

A trainer killed before its first checkpoint has nothing to resume: its folder is deleted and it starts
afresh (the run folder refuses a second run over the first's config.yaml). "Resumes" counts the runs
started with ``--resume``: "clean" ones logged that they loaded the checkpoint, the others were killed
before they got that far; none may fail.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from s2i.data.synthetic import make_tiny_gan_dataset

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@dataclass
class Cycle:
    kill_at: float
    killed: bool = True  # False: the run ended by itself first
    rc: int | None = None
    mode: str = "fresh"  # fresh, resume or rerun
    loaded_checkpoint: bool = False
    on_disk: str = ""
    found: int = 0
    loaded: int = 0
    temp: int = 0


@dataclass
class Outcome:
    name: str
    cycles: list[Cycle] = field(default_factory=list)
    final_rc: int | None = None
    final_note: str = ""
    identical: bool = False
    detail: str = ""


def _run(cmd: list[str], log: Path, timeout: float | None = None, kill_at: float | None = None
         ) -> tuple[int | None, bool]:
    """Runs ``cmd`` in its own process group; with ``kill_at``, SIGKILLs the group after that many
    seconds. Returns (exit status, whether it was killed)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=kill_at if kill_at is not None else timeout), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None, True


def _loads(path: Path) -> bool:
    try:
        torch.load(path, weights_only=True)
        return True
    except Exception:  # any unreadable file counts as not loading
        return False


def _temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*") if p.is_file() and p.name.endswith((".tmp", ".part")))


def _same_tensors(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return True  # plain settings (lr, betas, ...) are compared through the tensors they produce


def _jsonl(path: Path) -> list[dict]:
    from s2i.runs import read_jsonl

    return read_jsonl(path) if path.is_file() else []


class Trainer:
    """What the encoder and the GAN stages share: run folders, --resume, .pth checks."""

    name = ""
    checkpoint = "latest.pth"
    resumed_line = re.compile(r"INFO resumed ")

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.run_dir = tmp / "killed"
        self.ref_dir = tmp / "reference"
        self.log = tmp / f"{self.name}.log"

    def command(self, out: Path, resume: bool) -> list[str]:
        raise NotImplementedError

    def position(self, ckpt: dict) -> str:
        raise NotImplementedError

    def reference(self) -> int | None:
        return _run(self.command(self.ref_dir, resume=False), self.tmp / "reference.log", timeout=1800)[0]

    def start_mode(self) -> str:
        if (self.run_dir / self.checkpoint).exists():
            return "resume"
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)  # killed before its first checkpoint: nothing to continue
        return "fresh"

    def cycle(self, kill_at: float | None) -> Cycle:
        mode = self.start_mode()
        log_before = (self.run_dir / "log.txt").read_text() if (self.run_dir / "log.txt").exists() else ""
        rc, killed = _run(self.command(self.run_dir, mode == "resume"), self.log, timeout=1800, kill_at=kill_at)
        log_after = (self.run_dir / "log.txt").read_text() if (self.run_dir / "log.txt").exists() else ""
        c = Cycle(kill_at or 0.0, killed, rc, mode,
                  loaded_checkpoint=bool(self.resumed_line.search(log_after[len(log_before):])))
        pths = sorted(self.run_dir.rglob("*.pth"))
        c.found, c.loaded = len(pths), sum(_loads(p) for p in pths)
        c.temp = len(_temp_files(self.run_dir))
        latest = self.run_dir / self.checkpoint
        c.on_disk = self.position(torch.load(latest, weights_only=True)) if latest.exists() else "no checkpoint"
        return c


class Encoder(Trainer):
    name = "encoder"
    epochs = 30

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        from s2i.data.synthetic import SyntheticSpec, make_dataset

        # Two copies of the same generated set, so that each run also builds its own log-mel cache.
        for name in ("toy_killed", "toy_reference"):
            make_dataset(tmp / name, SyntheticSpec())

    def command(self, out: Path, resume: bool) -> list[str]:
        data = self.tmp / ("toy_killed" if out == self.run_dir else "toy_reference")
        cmd = [PYTHON, "Audio_to_Image/train_audio_encoder.py", "--data_root", str(data), "--output_dir", str(out),
               "--jel_flag", "--l1_flag", "--distill_flag", "--loss_diff", "1", "--loss_same", "0.1",
               "--lambda_l1", "5", "--lambda_distill", "1000", "--bidirectional", "--batch_size", "8",
               "--num_workers", "0", "--frontend.target_length", "320", "--epoch", str(self.epochs),
               "--eval_every", "5", "--print_every", "1000", "--no-progress", "--no-tensorboard"]
        return cmd + (["--resume", str(out / "latest.pth")] if resume else [])

    def position(self, ckpt: dict) -> str:
        return f"epoch {ckpt['epoch']}"

    def compare(self) -> tuple[bool, str]:
        a, b = (torch.load(d / "latest.pth", weights_only=True) for d in (self.ref_dir, self.run_dir))
        same = a["epoch"] == b["epoch"] == self.epochs - 1 and all(
            _same_tensors(a[k], b[k]) for k in ("state_dict", "optimizer", "scheduler"))
        train = [[r for r in _jsonl(d / "metrics.jsonl") if r["split"] == "train"] for d in (self.ref_dir, self.run_dir)]
        epochs_once = [r["epoch"] for r in train[1]] == list(range(self.epochs))
        same_losses = [r["loss"] for r in train[0]] == [r["loss"] for r in train[1]]
        return same and epochs_once and same_losses, (
            f"weights/optimizer/scheduler {'equal' if same else 'DIFFER'}; each epoch logged once: "
            f"{'yes' if epochs_once else 'NO'}; logged losses {'equal' if same_losses else 'DIFFER'}")


class Gan(Trainer):
    name = "gan"
    checkpoint = "Model/latest.pth"
    steps = 400

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.data = tmp / "tiny_gan"
        make_tiny_gan_dataset(self.data)

    def command(self, out: Path, resume: bool) -> list[str]:
        cmd = [PYTHON, "StackGAN/main.py", "--data_dir", str(self.data), "--dataset", "birds", "--audio_switch", "t",
               "--output_dir", str(out), "--WORKERS", "0", "--TREE.BRANCH_NUM", "2", "--TRAIN.BATCH_SIZE", "4",
               "--TRAIN.VIS_COUNT", "4", "--TRAIN.MAX_EPOCH", str(self.steps // 4), "--TRAIN.SNAPSHOT_INTERVAL", "5",
               "--TRAIN.LOG_INTERVAL", "1", "--TRAIN.COEFF.UNCOND_LOSS", "1.0", "--TRAIN.COEFF.CAL_LOSS", "50.0",
               "--GAN.DF_DIM", "8", "--GAN.GF_DIM", "8", "--GAN.EMBEDDING_DIM", "16", "--GAN.Z_DIM", "10",
               "--GAN.R_NUM", "1", "--TEXT.DIMENSION", "24", "--no-progress", "--no-tensorboard"]
        return cmd + (["--resume", str(out / "Model" / "latest.pth")] if resume else [])

    def position(self, ckpt: dict) -> str:
        return f"step {ckpt['step']}"

    def compare(self) -> tuple[bool, str]:
        a, b = (torch.load(d / "Model" / "latest.pth", weights_only=True) for d in (self.ref_dir, self.run_dir))
        same = a["step"] == b["step"] == self.steps and all(
            _same_tensors(a[k], b[k]) for k in ("G", "G_ema", "D", "optG", "optD"))
        losses = [_jsonl(d / "losses.jsonl") for d in (self.ref_dir, self.run_dir)]
        steps_once = [r["step"] for r in losses[1]] == list(range(1, self.steps + 1))
        same_losses = [r["G_total"] for r in losses[0]] == [r["G_total"] for r in losses[1]]
        snaps = sorted(p.name for p in (self.run_dir / "Model").glob("netG_*.pth"))
        snaps_ref = sorted(p.name for p in (self.ref_dir / "Model").glob("netG_*.pth"))
        return same and steps_once and same_losses and snaps == snaps_ref, (
            f"G/G_ema/D/optimizers {'equal' if same else 'DIFFER'}; each step logged once: "
            f"{'yes' if steps_once else 'NO'}; logged losses {'equal' if same_losses else 'DIFFER'}; "
            f"netG_<step>.pth files {'all there' if snaps == snaps_ref else 'MISSING ' + str(set(snaps_ref) - set(snaps))}")


def _shapes(out: Path, num_images: int) -> None:
    subprocess.run([PYTHON, "prepare_shapes_dataset.py", "--num_images", str(num_images), "--image_size", "64",
                    "--out", str(out)], cwd=REPO, check=True, capture_output=True)


class DataStage:
    """TTS and features: no --resume; a rerun finds what is finished and does the rest."""

    name = ""

    def __init__(self, tmp: Path, num_images: int) -> None:
        self.tmp = tmp
        self.run_dir = tmp / "killed"
        self.ref_dir = tmp / "reference"
        self.log = tmp / f"{self.name}.log"
        for d in (self.run_dir, self.ref_dir):
            _shapes(d, num_images)

    def command(self, root: Path) -> list[str]:
        raise NotImplementedError

    def reference(self) -> int | None:
        return _run(self.command(self.ref_dir), self.tmp / "reference.log", timeout=1800)[0]

    def cycle(self, kill_at: float | None) -> Cycle:
        rc, killed = _run(self.command(self.run_dir), self.log, timeout=1800, kill_at=kill_at)
        c = Cycle(kill_at or 0.0, killed, rc, "rerun")
        c.on_disk, c.found, c.loaded = self.inspect()
        c.temp = len(_temp_files(self.run_dir))
        return c


class Tts(DataStage):
    name = "tts"

    def command(self, root: Path) -> list[str]:
        return [PYTHON, "Audio_to_Image/text_to_speech.py", "--dataset", "shapes", "--data_root", str(root),
                "--workers", "1", "--no-progress"]

    def wavs(self, root: Path) -> list[Path]:
        from s2i.data.manifests import load_manifest

        out = []
        for split in ("train", "test"):
            m = load_manifest(root / f"{split}.json", "shapes")
            out += [m.audio_path(i, k) for i, item in enumerate(m.items) for k in range(len(item.audio))]
        return out

    def inspect(self) -> tuple[str, int, int]:
        from Audio_to_Image.tts import wav_is_complete

        planned = self.wavs(self.run_dir)
        present = [p for p in planned if p.exists()]
        complete = sum(wav_is_complete(p) for p in present)
        return f"{complete}/{len(planned)} wavs", len(present), complete

    def final_check(self, before: Cycle, log_text: str) -> tuple[str, bool]:
        m = re.findall(r"text_to_speech \(espeak\): (\d+) spoken, (\d+) skipped, (\d+) failed", log_text)
        spoken, skipped, failed = (int(x) for x in m[-1])
        total = len(self.wavs(self.run_dir))
        ok = skipped == before.loaded and spoken == total - before.loaded and failed == 0
        return f"final rerun: {spoken} spoken, {skipped} skipped ({'only the missing ones' if ok else 'NOT only the missing ones'})", ok

    def compare(self) -> tuple[bool, str]:
        a, b = self.wavs(self.ref_dir), self.wavs(self.run_dir)
        same_wavs = len(a) == len(b) and all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
        recs = [[item.get("tts") for item in json.loads((d / f"{s}.json").read_text())["data"]]
                for d in (self.ref_dir, self.run_dir) for s in ("train", "test")]
        same_recs = recs[:2] == recs[2:] and all(r is not None for split in recs for r in split)
        return same_wavs and same_recs, (f"{len(b)} wavs {'byte-identical' if same_wavs else 'DIFFER'}; "
                                         f"voice records in the manifests {'equal' if same_recs else 'DIFFER'}")


class Features(DataStage):
    name = "features"
    chunk = 2

    def command(self, root: Path) -> list[str]:
        return [PYTHON, "prepare_image_features.py", "--dataset", "shapes", "--data_root", str(root),
                "--image_size", "224", "--chunk_size", str(self.chunk), "--no-progress"]

    def pickles(self, root: Path) -> list[Path]:
        return [root / s / "image_features_efficientnet_lite0.pickle" for s in ("train", "test")]

    def inspect(self) -> tuple[str, int, int]:
        from s2i.data.safe_pickle import load_pickle
        from s2i.features.image_features import partial_dir, sidecar_path

        found = loaded = done = total = 0
        for pk in self.pickles(self.run_dir):
            n = len(json.loads((pk.parent.parent / f"{pk.parent.name}.json").read_text())["data"])
            total += n
            if pk.exists() and sidecar_path(pk).exists():
                found += 1
                try:
                    rows = load_pickle(pk)
                    loaded += 1
                    done += len(rows)
                except Exception:  # a pickle that does not load is reported as such
                    pass
                continue
            for chunk in sorted(partial_dir(pk).glob("chunk_*.npy")):
                found += 1
                try:
                    done += len(np.load(chunk, allow_pickle=False))
                    loaded += 1
                except Exception:  # a chunk that does not load is reported as such
                    pass
        return f"{done}/{total} images", found, loaded

    def final_check(self, before: Cycle, log_text: str) -> tuple[str, bool]:
        done_before = int(before.on_disk.split("/")[0])
        resumed = sum(int(x) for x in re.findall(r"resuming, (\d+) of \d+ images already done", log_text))
        skipped = sum(int(x) for x in re.findall(r"up to date \((\d+) images", log_text))
        ok = resumed + skipped == done_before
        return (f"final rerun: {skipped} images in finished pickles skipped, {resumed} taken from partial chunks, "
                f"the rest computed ({'only the missing ones' if ok else 'NOT only the missing ones'})"), ok

    def compare(self) -> tuple[bool, str]:
        same = all(a.read_bytes() == b.read_bytes() for a, b in zip(self.pickles(self.ref_dir), self.pickles(self.run_dir)))
        return same, f"feature pickles {'byte-identical' if same else 'DIFFER'}"


# Kill windows: from before the first checkpoint (start-up takes 1.5-3 s) to a few seconds in, so that
# kills land while starting, training and saving, and 12 of them leave work for the final run.
STAGES = {"encoder": (Encoder, (0.5, 6.0)), "gan": (Gan, (0.5, 5.0)), "tts": (Tts, (0.3, 1.2)),
          "features": (Features, (0.5, 2.6))}


def run_stage(name: str, tmp: Path, kills: int, rng: random.Random, window: tuple[float, float]) -> Outcome:
    cls = STAGES[name][0]
    stage = cls(tmp) if name in ("encoder", "gan") else cls(tmp, 96 if name == "tts" else 48)
    out = Outcome(name)
    t0 = time.time()
    rc = stage.reference()
    print(f"[{name}] uninterrupted run: exit {rc} ({time.time() - t0:.0f}s); kills drawn from "
          f"U({window[0]}, {window[1]}) s after start", flush=True)
    for i in range(kills):
        c = stage.cycle(rng.uniform(*window))
        out.cycles.append(c)
        what = "killed" if c.killed else f"ended by itself (exit {c.rc}) before"
        resumed = ""
        if c.mode == "resume":
            resumed = "; resumed: checkpoint loaded" if c.loaded_checkpoint else "; resumed: killed before loading"
        print(f"[{name}] {i + 1:2d} {c.mode:6s} {what} at {c.kill_at:4.2f}s: on disk {c.on_disk}; "
              f"{c.found} files found, {c.loaded} load; {c.temp} temp files{resumed}", flush=True)
    before = out.cycles[-1]
    log_len = stage.log.stat().st_size if stage.log.exists() else 0
    final = stage.cycle(None)
    out.final_rc = final.rc
    tail = stage.log.read_text()[log_len:]
    if final.mode == "resume":
        out.cycles.append(final)
    if isinstance(stage, DataStage):
        out.final_note, ok = stage.final_check(before, tail)
    else:
        out.final_note, ok = f"final run ({final.mode}) ended at {final.on_disk}", True
    out.identical, out.detail = stage.compare()
    out.identical = out.identical and ok and final.rc == 0 and final.temp == 0
    print(f"[{name}] {out.final_note}, exit {final.rc}, {final.temp} temp files left; {out.detail}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=12, help="SIGKILLs per stage")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages: " + ", ".join(STAGES))
    p.add_argument("--keep", action="store_true", help="keep the temporary folders (their path is printed)")
    p.add_argument("--window_scale", type=float, default=1.0,
                   help="multiply every stage's kill window (on a slow machine a resumed trainer needs more than "
                        "the default window to start up and load its checkpoint, so more kills land before it)")
    args = p.parse_args(argv)
    if args.window_scale <= 0:
        p.error("--window_scale must be positive")
    names = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        p.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    root = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    print(f"kill-and-resume, seed {args.seed}, {args.kills} kills per stage, kill windows x{args.window_scale:g}, "
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}; work in {root}", flush=True)
    rng = random.Random(args.seed)
    outcomes = []
    try:
        for name in names:
            (root / name).mkdir()
            low, high = STAGES[name][1]
            window = (low * args.window_scale, high * args.window_scale)
            outcomes.append(run_stage(name, root / name, args.kills, rng, window))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print("\n| stage | kills | files on disk after the kills (summed): found / load | resumes: clean / killed "
          "before loading / failed | final = uninterrupted |")
    print("|---|---|---|---|---|")
    ok_all = True
    for o in outcomes:
        kills = sum(c.killed for c in o.cycles)
        found = sum(c.found for c in o.cycles if c.killed)
        loaded = sum(c.loaded for c in o.cycles if c.killed)
        res = [c for c in o.cycles if c.mode == "resume"]
        clean = sum(c.loaded_checkpoint for c in res)
        early = sum(c.killed and not c.loaded_checkpoint for c in res)
        failed = sum(not c.killed and c.rc != 0 for c in o.cycles)
        resumes = f"{clean} / {early} / {failed}" if res else f"{len(o.cycles)} reruns, {failed} failed"
        ok_all &= o.identical and failed == 0 and loaded == found
        print(f"| {o.name} | {kills} | {found} / {loaded} | {resumes} | {'yes' if o.identical else 'NO'} |")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
