"""Speech-encoder training end to end on the generated toy set: learning, checkpoints, resume, torchrun."""

import json
import os
import subprocess

import pytest
import torch

from Audio_to_Image import train_audio_encoder, training_loop
from Audio_to_Image.speech_encoder import CNNRNN, load_speech_encoder
from s2i.runs import RunFolderError, read_jsonl
from tests.conftest import PYTHON, REPO, train_args


def test_training_learns_the_classes(toy_dataset, tmp_path):
    """A few epochs take the class-centre accuracy (docs/original.md#s9) from chance (25%) to well above it."""
    out = tmp_path / "run"
    summary = train_audio_encoder.main(train_args(toy_dataset, out, "--epoch", "8", "--eval_every", "2"))
    records = [r for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "test"]
    assert [r["epoch"] for r in records] == [0, 2, 4, 6, 7]
    assert summary["final_metrics"]["accu"] >= 75.0, records
    assert summary["best_accu"] == max(r["accu"] for r in records)
    for key in ("ap12", "s2i_R1", "s2i_R5", "s2i_R10", "s2i_mAP", "i2s_R1", "i2s_mAP", "val_loss"):
        assert key in records[-1]
    # The run folder explains itself.
    assert (out / "config.yaml").is_file() and (out / "log.txt").read_text().count("test accu") == 5
    for name in ("latest.pth", "best.pth", "epoch_0.pth", "epoch_6.pth", "epoch_7.pth"):
        assert (out / name).is_file(), name
    ckpt = torch.load(out / "latest.pth", weights_only=True)
    assert ckpt["epoch"] == ckpt["meta"]["epoch"] == 7
    assert {"state_dict", "optimizer", "scheduler", "model_args", "config", "frontend"} <= set(ckpt)
    # The checkpoint alone rebuilds the model.
    model, _ = load_speech_encoder(out / "best.pth")
    assert isinstance(model, CNNRNN) and not model.training


def test_an_existing_run_is_not_overwritten(toy_dataset, tmp_path):
    out = tmp_path / "run"
    train_audio_encoder.main(train_args(toy_dataset, out, "--epoch", "1"))
    before = (out / "latest.pth").read_bytes()
    with pytest.raises(RunFolderError, match="already holds a run"):
        train_audio_encoder.main(train_args(toy_dataset, out, "--epoch", "1"))
    assert (out / "latest.pth").read_bytes() == before


def test_resume_continues_epoch_and_learning_rate(toy_dataset, tmp_path):
    """Stop after 2 epochs, resume from latest.pth: epochs, LR and the weights match an unbroken run."""
    sched = ["--lr_scheduler_step_size", "1", "--lr_scheduler_gamma", "0.5", "--eval_every", "1"]
    full = tmp_path / "full"
    train_audio_encoder.main(train_args(toy_dataset, full, "--epoch", "4", *sched))
    part = tmp_path / "part"
    train_audio_encoder.main(train_args(toy_dataset, part, "--epoch", "2", *sched))
    assert torch.load(part / "latest.pth", weights_only=True)["epoch"] == 1
    train_audio_encoder.main(train_args(toy_dataset, part, "--epoch", "4", "--resume", str(part / "latest.pth"),
                                        *sched))
    train_full = [r for r in read_jsonl(full / "metrics.jsonl") if r["split"] == "train"]
    train_part = [r for r in read_jsonl(part / "metrics.jsonl") if r["split"] == "train"]
    assert [r["epoch"] for r in train_part] == [0, 1, 2, 3]
    assert [r["lr"] for r in train_part] == [1e-3, 5e-4, 2.5e-4, 1.25e-4]
    assert [r["lr"] for r in train_part] == [r["lr"] for r in train_full]
    a = torch.load(full / "latest.pth", weights_only=True)
    b = torch.load(part / "latest.pth", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


def test_resume_from_an_original_format_checkpoint(toy_dataset, tmp_path):
    """The authors' epoch_N.pth has weights only: training continues at N+1 with the LR fast-forwarded."""
    torch.manual_seed(0)
    src = CNNRNN(bidirectional=True)
    path = tmp_path / "epoch_3.pth"
    torch.save({"meta": {"epoch": 3}, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    out = tmp_path / "run"
    train_audio_encoder.main(train_args(toy_dataset, out, "--epoch", "5", "--resume", str(path),
                                        "--lr_scheduler_step_size", "2", "--lr_scheduler_gamma", "0.1"))
    train = [r for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train"]
    assert [r["epoch"] for r in train] == [4]
    assert train[0]["lr"] == pytest.approx(1e-5)  # epochs 0-1: 1e-3, 2-3: 1e-4, 4-5: 1e-5


def test_teacher_dimension_mismatch_is_a_clear_error(toy_dataset, tmp_path):
    with pytest.raises(ValueError, match="1024-d .* pass --embedding_dim 1024"):
        train_audio_encoder.main(train_args(toy_dataset, tmp_path / "r", "--embedding_dim", "512"))


def test_unknown_flag_and_bad_yaml_are_one_line_errors(toy_dataset, tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_audio_encoder.main(train_args(toy_dataset, tmp_path / "r", "--no_such_flag", "1"))
    cfg = tmp_path / "c.yml"
    cfg.write_text("batch_size: 8\nlearnig_rate: 0.1\n")
    with pytest.raises(SystemExit):
        train_audio_encoder.main(["--config", str(cfg)])
    assert "unknown key 'learnig_rate'" in capsys.readouterr().err


def test_torchrun_two_processes_end_with_identical_weights(toy_dataset, tmp_path, free_port):
    """2-process gloo training through run_audio_encoder.sh: both ranks hold bit-identical weights."""
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHON": PYTHON, "MASTER_PORT": str(free_port), "LOG_DIR": str(tmp_path / "logs"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(REPO / "run_audio_encoder.sh"), "2",
         *train_args(toy_dataset, out, "--epoch", "2", "--eval_every", "1", "--batch_size", "4")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    fps = summary["replica_fingerprints"]
    assert len(fps) == 2 and fps[0] == fps[1]
    assert (out / "latest.pth").is_file() and (tmp_path / "logs" / "log.txt").is_file()


def test_non_finite_loss_stops_with_the_term_and_keeps_the_last_checkpoint(toy_dataset, tmp_path, monkeypatch):
    from Audio_to_Image import trainer

    out = tmp_path / "run"
    train_audio_encoder.main(train_args(toy_dataset, out, "--epoch", "1"))
    good = (out / "latest.pth").read_bytes()
    real = trainer.encoder_loss

    def nan_l1(a, v, y, w, prototypes=None):
        total, terms = real(a, v, y, w, prototypes)
        terms["l1"] = torch.tensor(float("nan"))
        return total + terms["l1"], terms

    monkeypatch.setattr(trainer, "encoder_loss", nan_l1)
    with pytest.raises(trainer.NonFiniteLossError, match=r"epoch 1, iteration 0: term\(s\) l1"):
        train_audio_encoder.main(train_args(toy_dataset, out, "--epoch", "2", "--resume", str(out / "latest.pth")))
    assert (out / "latest.pth").read_bytes() == good


def test_tensorboard_gets_the_train_and_test_scalars(toy_dataset, tmp_path, monkeypatch):
    logged = []

    class Recorder:
        def add_scalar(self, tag, value, step):
            logged.append((tag, step))

        def close(self):
            logged.append(("closed", -1))

    monkeypatch.setattr(training_loop, "tensorboard_writer", lambda path, enabled: Recorder() if enabled else None)
    train_audio_encoder.main(train_args(toy_dataset, tmp_path / "run", "--epoch", "2", "--eval_every", "1"))
    tags = {t for t, _ in logged}
    assert {"train/loss", "train/jel", "test/accu", "test/ap12", "test/s2i_R1", "closed"} <= tags
    assert sorted({s for t, s in logged if t == "test/accu"}) == [0, 1]


def test_command_line_errors_are_one_line_without_traceback(toy_dataset, tmp_path):
    script = REPO / "Audio_to_Image" / "train_audio_encoder.py"
    bad = tmp_path / "bad.json"
    bad.write_text('{"audio_base_path": ".", "data": [{"image": "a.jpg", "class": "001.A", "audio": "x.wav"}]}')
    proc = subprocess.run([PYTHON, str(script), "--train_json", str(bad), "--test_json", str(bad),
                           "--output_dir", str(tmp_path / "r"), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad} item 0: 'audio' must be a list")


def test_help_lists_the_speed_options(capsys):
    with pytest.raises(SystemExit) as exc:
        train_audio_encoder.main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--bucket_by_length, --no-bucket_by_length" in out and "BatchNorm" in out
    assert "--precision STR arithmetic of the encoder's forward/backward: fp32 (the original), bf16" in out
    assert "auto (bf16 where native, else fp32)" in out
