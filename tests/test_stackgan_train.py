"""StackGAN-v2 training and generation end to end on a tiny generated set (CPU)."""

import json
import os
import subprocess

import numpy as np
import torch

from s2i.runs import read_jsonl
from StackGAN import main as gan_main
from tests.conftest import PYTHON, REPO, assert_same_gan_snapshot, gan_args


def test_training_fools_the_discriminator_writes_grids_and_snapshots(tiny_gan_data, tmp_path):
    out = tmp_path / "run"
    summary = gan_main.main(gan_args(tiny_gan_data, out))
    assert summary["steps"] == 12  # 3 epochs x 4 full batches of 4 (18 images, the last partial batch dropped)
    losses = read_jsonl(out / "losses.jsonl")
    assert [r["step"] for r in losses] == list(range(1, 13))
    assert {"D_loss0", "D_loss1", "G_loss0", "G_loss1", "kl_loss", "cal_loss"} <= set(losses[0])
    for step in (5, 10, 12):
        for i in (0, 1):
            assert (out / "Image" / f"count_{step:09d}_fake_samples{i}.png").is_file()
        assert (out / "Model" / f"netG_{step}.pth").is_file()
    assert (out / "Image" / "real_samples.png").is_file() and (out / "Model" / "netD1.pth").is_file()

    # The discriminators learn to tell real from fake: their loss falls over the first steps.
    d_total = [r["D_total"] for r in losses]
    assert np.mean(d_total[-3:]) < np.mean(d_total[:3])


def test_generator_learns_to_fool_a_fixed_discriminator(tiny_gan_data, tmp_path):
    """With the discriminators frozen (learning rate 0), the generator's steps lower their ability to tell
    its images from real ones: its adversarial loss −log D(fake) falls on every branch. 20 steps: after 12
    the fall was within the step-to-step noise on some CPUs (D's BatchNorm still follows each batch)."""
    gan_main.main(gan_args(tiny_gan_data, tmp_path / "run", "--TRAIN.DISCRIMINATOR_LR", "0.0",
                           "--TRAIN.GENERATOR_LR", "0.001", "--TRAIN.MAX_EPOCH", "5"))
    losses = read_jsonl(tmp_path / "run" / "losses.jsonl")
    for i in (0, 1):
        adv = [r[f"G_loss{i}"] for r in losses]
        assert np.mean(adv[-3:]) < np.mean(adv[:3]), (i, adv)


def test_resume_continues_at_the_next_step_with_identical_state(tiny_gan_data, tmp_path):
    full = tmp_path / "full"
    gan_main.main(gan_args(tiny_gan_data, full))
    part = tmp_path / "part"
    gan_main.main(gan_args(tiny_gan_data, part, "--max_steps", "6"))  # stops mid-epoch (4 steps/epoch)
    first = torch.load(part / "Model" / "latest.pth", weights_only=True)
    assert first["step"] == 6
    gan_main.main(gan_args(tiny_gan_data, part, "--resume", str(part / "Model" / "latest.pth")))
    a = torch.load(full / "Model" / "latest.pth", weights_only=True)
    b = torch.load(part / "Model" / "latest.pth", weights_only=True)
    assert a["step"] == b["step"] == 12
    assert_same_gan_snapshot(a, b)
    steps = [r["step"] for r in read_jsonl(part / "losses.jsonl")]
    assert steps == list(range(1, 13))


def test_generation_writes_both_layouts_reproducibly(tiny_gan_data, tmp_path):
    out = tmp_path / "run"
    gan_main.main(gan_args(tiny_gan_data, out, "--max_steps", "5"))
    for net in ("latest.pth", "netG_5.pth"):  # ours, and the original's module.-prefixed EMA weights
        args = gan_args(tiny_gan_data, out, "--no-TRAIN.FLAG", "--eval_net_g", str(out / "Model" / net))
        summary = gan_main.main(args)
        assert summary["images"] == 18 * 2 * 2  # images x captions x resolutions
    it = out / "Model" / "iteration5"
    one = it / "single_samples" / "valid" / "0_3_128_sentence1_0.png"
    flat = sorted((it / "flat_64").iterdir())
    assert one.is_file() and len(flat) == 36 and flat[0].name == "0_0_sentence0_0.png"
    before = one.read_bytes()
    gan_main.main(gan_args(tiny_gan_data, out, "--no-TRAIN.FLAG", "--eval_net_g",
                           str(out / "Model" / "latest.pth")))
    assert one.read_bytes() == before


def test_torchrun_two_processes_end_with_identical_generators(tiny_gan_data, tmp_path, free_port):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHON": PYTHON, "MASTER_PORT": str(free_port), "LOG_DIR": str(tmp_path / "logs"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "run_generator.sh"), "2",
                           *gan_args(tiny_gan_data, out, "--TRAIN.BATCH_SIZE", "2", "--max_steps", "4")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert len(summary["replica_fingerprints"]) == 2 and summary["replicas_identical"]


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_snapshot(tiny_gan_data, tmp_path, monkeypatch):
    import pytest

    from StackGAN import trainer

    real = trainer.discriminator_loss
    calls = {"n": 0}

    def nan_after_step_6(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 12 else loss  # 2 discriminators per step

    monkeypatch.setattr(trainer, "discriminator_loss", nan_after_step_6)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"non-finite D_loss0 = nan at step 7"):
        gan_main.main(gan_args(tiny_gan_data, out))
    snap = torch.load(out / "Model" / "latest.pth", weights_only=True)
    assert snap["step"] == 5
    assert all(torch.isfinite(v).all() for v in snap["G"].values() if v.is_floating_point())


def test_auxiliary_class_loss_trains_records_and_resumes(tiny_gan_data, tmp_path):
    """--aux_class_weight (ours): every D gets a class head over the split's classes, the loss is logged,
    and a run stopped part-way resumes to the same weights as an uninterrupted one."""
    full, part = tmp_path / "full", tmp_path / "part"
    gan_main.main(gan_args(tiny_gan_data, full, "--aux_class_weight", "1.0", "--cache_images"))
    gan_main.main(gan_args(tiny_gan_data, part, "--aux_class_weight", "1.0", "--cache_images", "--max_steps", "6"))
    gan_main.main(gan_args(tiny_gan_data, part, "--aux_class_weight", "1.0", "--cache_images",
                           "--resume", str(part / "Model" / "latest.pth")))
    a = torch.load(full / "Model" / "latest.pth", weights_only=True)
    b = torch.load(part / "Model" / "latest.pth", weights_only=True)
    manifest = json.loads((tiny_gan_data / "train.json").read_text())
    classes = {item["class"] for item in manifest["data"]}
    assert [d["num_classes"] for d in a["D_args"]] == [len(classes)] * 2
    assert a["D"][0]["class_logits.weight"].shape[0] == len(classes)
    losses = read_jsonl(full / "losses.jsonl")
    assert all(r["aux_loss"] > 0 for r in losses)
    for k in a["G_ema"]:
        assert torch.equal(a["G_ema"][k], b["G_ema"][k]), k
    for da, db in zip(a["D"], b["D"]):
        for k in da:
            assert torch.equal(da[k], db[k]), k


def test_teacher_loss_trains_records_and_resumes(tiny_gan_data, tmp_path):
    """--teacher_weight (ours): the frozen EfficientNet-Lite0 sees the last branch (128 px here, resized to
    --teacher_size), its loss is logged, the config records it, and a run stopped part-way resumes to the
    same weights and losses as an uninterrupted one."""
    full, part = tmp_path / "full", tmp_path / "part"
    extra = ("--teacher_weight", "5", "--teacher_layers", "stage4:max", "--teacher_size", "48", "--cache_images")
    gan_main.main(gan_args(tiny_gan_data, full, *extra))
    gan_main.main(gan_args(tiny_gan_data, part, *extra, "--max_steps", "6"))
    gan_main.main(gan_args(tiny_gan_data, part, *extra, "--resume", str(part / "Model" / "latest.pth")))
    a = torch.load(full / "Model" / "latest.pth", weights_only=True)
    b = torch.load(part / "Model" / "latest.pth", weights_only=True)
    assert a["config"]["teacher_weight"] == 5.0 and a["config"]["teacher_layers"] == "stage4:max"
    losses = read_jsonl(full / "losses.jsonl")
    assert len(losses) == 12 and all(0 < r["teacher_loss"] <= 2 for r in losses)
    assert "EfficientNet-Lite0 stage4:max at 48 px" in (full / "log.txt").read_text()
    for k in a["G_ema"]:
        assert torch.equal(a["G_ema"][k], b["G_ema"][k]), k

    def untimed(records):
        return [{k: v for k, v in r.items() if k != "time"} for r in records]

    assert untimed(read_jsonl(part / "losses.jsonl")) == untimed(losses)  # the same losses, step for step
