"""Faults during training: Ctrl-C saves and exits 130, SIGKILL loses nothing, and either way ``--resume``
ends bit-identical to a run that was never stopped. benchmarks/kill_resume.py repeats the kills at random
moments; here they land at fixed points found by polling the run's log and files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from Audio_to_Image import train_audio_encoder
from Audio_to_Image.trainer import complete_links, save_checkpoints
from s2i.interrupt import StopRequest
from s2i.runs import RunFolder, read_jsonl
from StackGAN import main as gan_main
from tests.conftest import PYTHON, REPO, gan_args, train_args

ENCODER = REPO / "Audio_to_Image" / "train_audio_encoder.py"
GAN = REPO / "StackGAN" / "main.py"
ENCODER_EPOCHS = ("--epoch", "4")  # 3 batches per epoch on the toy set; evaluations at epochs 0 and 3


def _start(script: Path, args: list[str], err: Path) -> subprocess.Popen:
    """A stage script in its own session, as a terminal runs it (Ctrl-C reaches the whole group), with the
    thread count of this process so that its floating-point results equal an in-process run's."""
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    with open(err, "w") as fh:
        return subprocess.Popen([PYTHON, str(script), *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=fh, start_new_session=True)


def _wait_until(proc: subprocess.Popen, ready: Callable[[], bool], what: str, err: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before {what}:\n{err.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _log_has(run: Path, pattern: str) -> Callable[[], bool]:
    log = run / "log.txt"
    return lambda: log.is_file() and re.search(pattern, log.read_text()) is not None


def _all_checkpoints_load(run: Path) -> list[str]:
    names = []
    for path in sorted(run.rglob("*.pth")):
        assert isinstance(torch.load(path, weights_only=True), dict), path
        names.append(str(path.relative_to(run)))
    return names


def _assert_same_tensors(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tensors(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where


def _same_encoder(a: Path, b: Path) -> None:
    ca, cb = (torch.load(p / "latest.pth", weights_only=True) for p in (a, b))
    assert ca["epoch"] == cb["epoch"]
    for key in ("state_dict", "optimizer", "scheduler"):
        _assert_same_tensors(ca[key], cb[key], key)
    train = [[r for r in read_jsonl(p / "metrics.jsonl") if r["split"] == "train"] for p in (a, b)]
    assert [r["epoch"] for r in train[0]] == [r["epoch"] for r in train[1]]
    assert [r["loss"] for r in train[0]] == [r["loss"] for r in train[1]]


def _same_gan(a: Path, b: Path) -> None:
    sa, sb = (torch.load(p / "Model" / "latest.pth", weights_only=True) for p in (a, b))
    assert sa["step"] == sb["step"]
    for key in ("G", "G_ema", "D", "optG", "optD"):
        _assert_same_tensors(sa[key], sb[key], key)
    losses = [read_jsonl(p / "losses.jsonl") for p in (a, b)]
    assert [r["step"] for r in losses[1]] == [r["step"] for r in losses[0]]  # each step logged once
    assert [r["G_total"] for r in losses[1]] == [r["G_total"] for r in losses[0]]


@pytest.fixture(scope="module")
def encoder_reference(toy_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "encoder_unbroken"
    train_audio_encoder.main(train_args(toy_dataset, out, *ENCODER_EPOCHS, "--print_every", "1"))
    return out


@pytest.fixture(scope="module")
def gan_reference(tiny_gan_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "gan_unbroken"
    gan_main.main(gan_args(tiny_gan_data, out))
    return out


# --- Ctrl-C ---------------------------------------------------------------------------------------


def test_ctrl_c_stops_the_encoder_mid_epoch_with_a_checkpoint_that_resumes_exactly(
        toy_dataset, encoder_reference, tmp_path):
    run, err = tmp_path / "run", tmp_path / "stderr.txt"
    # One loader worker: a terminal's Ctrl-C reaches it too, and it must not take the run down.
    args = train_args(toy_dataset, run, *ENCODER_EPOCHS, "--print_every", "1", "--num_workers", "1")
    proc = _start(ENCODER, args, err)
    _wait_until(proc, _log_has(run, r"epoch 0001/0004 iter \[00001/"), "epoch 1 started", err)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    stderr = err.read_text()
    assert "Traceback" not in stderr, stderr
    log = (run / "log.txt").read_text()
    assert re.search(r"interrupted part-way through epoch 1 \(after batch [123] of 3\): checkpoint saved to "
                     rf"{re.escape(str(run / 'latest.pth'))}.*--resume", log), log[-2000:]
    ckpt = torch.load(run / "latest.pth", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["mid_epoch"]["epoch"] == 1 and 1 <= ckpt["mid_epoch"]["batches"] <= 3
    assert _all_checkpoints_load(run) == ["best.pth", "epoch_0.pth", "latest.pth"]

    train_audio_encoder.main(train_args(toy_dataset, run, *ENCODER_EPOCHS, "--print_every", "1",
                                        "--resume", str(run / "latest.pth")))
    _same_encoder(encoder_reference, run)


def test_ctrl_c_stops_the_gan_with_a_snapshot_at_that_step(tiny_gan_data, gan_reference, tmp_path):
    run, err = tmp_path / "run", tmp_path / "stderr.txt"
    proc = _start(GAN, gan_args(tiny_gan_data, run), err)
    _wait_until(proc, _log_has(run, r"step 2/12 "), "step 2", err)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    stderr = err.read_text()
    assert "Traceback" not in stderr, stderr
    snap = torch.load(run / "Model" / "latest.pth", weights_only=True)
    assert 2 <= snap["step"] < 12
    assert f"interrupted at step {snap['step']}/12: snapshot saved to" in (run / "log.txt").read_text()
    assert (run / "Model" / f"netG_{snap['step']}.pth").is_file()
    _all_checkpoints_load(run)

    gan_main.main(gan_args(tiny_gan_data, run, "--resume", str(run / "Model" / "latest.pth")))
    _same_gan(gan_reference, run)


def test_ctrl_c_under_torchrun_stops_every_rank_at_the_same_step(toy_dataset, tmp_path, free_port):
    """torchrun forwards Ctrl-C to each worker; the all-reduced flag stops both at the same batch, rank 0
    saves, and nothing hangs. (torchrun itself then prints its own SignalException and exits 1.)"""
    run, err = tmp_path / "run", tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHON": PYTHON, "MASTER_PORT": str(free_port), "LOG_DIR": str(tmp_path / "logs"),
           "OMP_NUM_THREADS": "1"}
    with open(err, "w") as fh:
        proc = subprocess.Popen(["bash", str(REPO / "run_audio_encoder.sh"), "2",
                                 *train_args(toy_dataset, run, "--epoch", "50", "--batch_size", "4",
                                             "--print_every", "1")],
                                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    _wait_until(proc, _log_has(run, r"epoch 0001/0050 iter \[00001/"), "epoch 1 started", err)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    assert re.search(r"interrupted part-way through epoch 1 \(after batch \d of 3\)", (run / "log.txt").read_text())
    ckpt = torch.load(run / "latest.pth", weights_only=True)
    assert ckpt["mid_epoch"]["epoch"] == 1 and ckpt["config"]["batch_size"] == 4
    out = err.read_text()
    assert out.count("Traceback") == 1 and "SignalException" in out, out[-3000:]  # torchrun's own, no worker's


# --- SIGKILL --------------------------------------------------------------------------------------


def test_sigkill_of_the_encoder_loses_nothing(toy_dataset, encoder_reference, tmp_path):
    """Killed right after its first checkpoint appears (before or after its epoch/best links), then again
    in the middle of epoch 2: each time every .pth loads, and the last resume ends as the unbroken run."""
    run, err = tmp_path / "run", tmp_path / "stderr.txt"
    args = train_args(toy_dataset, run, *ENCODER_EPOCHS, "--print_every", "1")
    resume = ["--resume", str(run / "latest.pth")]
    proc = _start(ENCODER, args, err)
    _wait_until(proc, (run / "latest.pth").exists, "the first checkpoint", err)
    proc.kill()
    proc.wait()
    assert "latest.pth" in _all_checkpoints_load(run)
    (run / ".latest.pth.x1y2z3.999999999.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-save leaves

    proc = _start(ENCODER, args + resume, err)
    _wait_until(proc, _log_has(run, r"epoch 0002/0004 iter \[00002/"), "the middle of epoch 2", err)
    proc.kill()
    proc.wait()
    assert {"latest.pth", "epoch_0.pth", "best.pth"} <= set(_all_checkpoints_load(run))
    assert torch.load(run / "latest.pth", weights_only=True)["epoch"] == 1

    train_audio_encoder.main(args + resume)
    _same_encoder(encoder_reference, run)
    assert not list(run.rglob("*.tmp"))
    assert "removed 1 temporary file(s) left by a killed run: .latest.pth.x1y2z3.999999999.tmp" in \
        (run / "log.txt").read_text()


def test_sigkill_of_the_gan_loses_nothing(tiny_gan_data, gan_reference, tmp_path):
    """Killed as soon as its first snapshot (step 5) is on disk, then between snapshots (step 7): every
    .pth loads, the steps done again are logged once, and the end equals the unbroken run."""
    run, err = tmp_path / "run", tmp_path / "stderr.txt"
    args = gan_args(tiny_gan_data, run)
    resume = ["--resume", str(run / "Model" / "latest.pth")]
    proc = _start(GAN, args, err)
    _wait_until(proc, (run / "Model" / "latest.pth").exists, "the first snapshot", err)
    proc.kill()
    proc.wait()
    assert "Model/latest.pth" in _all_checkpoints_load(run)

    proc = _start(GAN, args + resume, err)
    _wait_until(proc, _log_has(run, r"step 7/12 "), "step 7", err)
    proc.kill()
    proc.wait()
    assert torch.load(run / "Model" / "latest.pth", weights_only=True)["step"] == 5
    assert {"Model/netG_5.pth", "Model/netD0.pth", "Model/netD1.pth"} <= set(_all_checkpoints_load(run))
    assert (run / "Image" / "count_000000005_fake_samples1.png").is_file()

    gan_main.main(args + resume)
    _same_gan(gan_reference, run)
    assert not list(run.rglob("*.tmp"))


def test_resume_is_exact_in_the_originals_averaging_mode_too(tiny_gan_data, tmp_path):
    """With the original's bug (the live G keeps the average after each snapshot) a snapshot holds the G
    that training continues with, so resuming from step 5 (a periodic snapshot) still ends as one run."""
    bug = ("--no-fixed_ema_bug", "--TRAIN.MAX_EPOCH", "2")
    gan_main.main(gan_args(tiny_gan_data, tmp_path / "full", *bug))
    part = tmp_path / "part"
    gan_main.main(gan_args(tiny_gan_data, part, *bug, "--max_steps", "5"))
    gan_main.main(gan_args(tiny_gan_data, part, *bug, "--resume", str(part / "Model" / "latest.pth")))
    _same_gan(tmp_path / "full", part)


# --- the pieces -----------------------------------------------------------------------------------


def test_stale_temp_files_go_and_live_ones_stay(tmp_path):
    (tmp_path / "Model").mkdir()
    dead = [tmp_path / ".latest.pth.abc.999999999.tmp", tmp_path / "Model" / ".netD0.pth.999999999.tmp",
            tmp_path / ".config.yaml.tmp"]
    live = [tmp_path / f".latest.pth.abc.{os.getpid()}.tmp", tmp_path / "notes.tmp"]
    for p in dead + live:
        p.write_bytes(b"x")
    RunFolder(tmp_path, resume=True).close()
    assert [p for p in dead + live if p.exists()] == live


def test_resume_drops_the_log_records_it_writes_again_and_a_cut_line(tmp_path):
    run = RunFolder(tmp_path, resume=True)
    for epoch in range(4):
        run.append_jsonl("metrics.jsonl", {"epoch": epoch})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 4, "lo')  # killed mid-line
    assert run.trim_jsonl("metrics.jsonl", lambda r: r["epoch"] <= 1) == 3
    run.append_jsonl("metrics.jsonl", {"epoch": 2})
    assert [r["epoch"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1, 2]
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 3
    run.close()


def test_links_a_killed_run_did_not_make_are_made_on_resume(tmp_path):
    save_checkpoints({"epoch": 4, "w": torch.zeros(2)}, tmp_path, eval_epoch=True, is_best=True)
    ckpt = torch.load(tmp_path / "latest.pth", weights_only=True)
    assert ckpt["links"] == ["epoch_4.pth", "best.pth"]
    (tmp_path / "best.pth").unlink()
    assert complete_links(ckpt, tmp_path) == ["best.pth"]
    assert os.path.samefile(tmp_path / "best.pth", tmp_path / "latest.pth")
    assert complete_links(ckpt, tmp_path) == []


def test_stop_request_raises_a_flag_and_a_late_second_signal_aborts():
    lines, before = [], signal.getsignal(signal.SIGINT)
    with StopRequest(lines.append, force_after=0.2) as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the same Ctrl-C forwarded by a launcher: ignored
        assert stop.requested() and stop.exit_code == 130 and len(lines) == 1
        time.sleep(0.3)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


def test_stop_request_logs_from_the_loop_not_from_the_signal_handler():
    """A handler that wrote the log line could interrupt a write to the same log file mid-way, and logging
    then fails with "reentrant call" (seen under load in the Ctrl-C test of the encoder)."""
    lines = []
    with StopRequest(lines.append) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT and lines == []
        assert stop.requested() and len(lines) == 1 and lines[0].startswith("SIGINT received")
        assert stop.requested() and len(lines) == 1


def test_ctrl_c_outside_a_training_loop_is_one_line(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text("import time\nfrom s2i.cli import run_cli\nprint('ready', flush=True)\n"
                      "run_cli(lambda: time.sleep(60))\n")
    # A shell's background job inherits SIGINT as ignored, and Python then never raises KeyboardInterrupt;
    # restore the default so the test means the same however the suite was launched.
    proc = subprocess.Popen([PYTHON, str(script)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline() == "ready\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in stderr and stderr.startswith("interrupted"), stderr
