"""s2i/checkpoints.py (atomic writes, safe loads, state-dict layouts) and s2i/runs.py (run folders)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from s2i import checkpoints
from s2i.checkpoints import (
    CheckpointError,
    atomic_link,
    atomic_save,
    extract_state_dict,
    load_checkpoint,
    load_weights,
    strip_prefix,
)
from s2i.runs import RunFolder, RunFolderError, read_jsonl


class Arbitrary:
    """Not a tensor, container or primitive: ``weights_only`` loading must refuse it."""

    def __init__(self) -> None:
        self.value = 3


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --- atomic writes --------------------------------------------------------------------------------


def test_atomic_save_round_trip_and_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "epoch_3.pth"
    obj = {"meta": {"epoch": 3}, "state_dict": {"w": torch.arange(4.0)}}
    atomic_save(obj, path)
    assert sorted(os.listdir(path.parent)) == ["epoch_3.pth"]
    back = load_checkpoint(path)
    assert back["meta"] == {"epoch": 3}
    assert torch.equal(back["state_dict"]["w"], torch.arange(4.0))


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "latest.pth"
    atomic_save({"step": torch.tensor(1)}, path)
    before = path.read_bytes()

    def half_save(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # a killed run

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"].item() == 1
    assert sorted(os.listdir(tmp_path)) == ["latest.pth"]


def test_interrupted_first_save_leaves_nothing(tmp_path, monkeypatch):
    def failing_save(obj, fh, *args, **kwargs):
        fh.write(b"junk")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({}, tmp_path / "a.pth")
    assert os.listdir(tmp_path) == []


def test_atomic_link(tmp_path):
    src = tmp_path / "epoch_10.pth"
    atomic_save({"meta": {"epoch": 10}}, src)
    dst = tmp_path / "latest.pth"
    dst.write_bytes(b"old")
    atomic_link(src, dst)
    assert dst.read_bytes() == src.read_bytes()
    assert not dst.is_symlink()
    assert load_checkpoint(dst)["meta"]["epoch"] == 10
    # Re-pointing to a later epoch replaces it, and the earlier file is untouched.
    src2 = tmp_path / "epoch_20.pth"
    atomic_save({"meta": {"epoch": 20}}, src2)
    atomic_link(src2, dst)
    assert load_checkpoint(dst)["meta"]["epoch"] == 20
    assert load_checkpoint(src)["meta"]["epoch"] == 10
    assert _leftovers(tmp_path) == []


def test_atomic_link_falls_back_to_a_copy(tmp_path, monkeypatch):
    src = tmp_path / "a.pth"
    src.write_bytes(b"weights")

    def no_links(*args):
        raise OSError("links not supported")

    monkeypatch.setattr(checkpoints.os, "link", no_links)
    atomic_link(src, tmp_path / "best.pth")
    assert (tmp_path / "best.pth").read_bytes() == b"weights"
    assert _leftovers(tmp_path) == []


# --- safe loading ---------------------------------------------------------------------------------


def test_load_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": Arbitrary()}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value)


def test_load_truncated_file(tmp_path):
    good = tmp_path / "good.pth"
    atomic_save({"state_dict": {"w": torch.zeros(100, 100)}}, good)
    bad = tmp_path / "cut.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(bad)
    assert f"cannot read checkpoint {bad}" in str(exc.value)


def test_load_missing_and_non_dict(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pth")
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(2), path)
    with pytest.raises(CheckpointError, match="expected a dict, found Tensor"):
        load_checkpoint(path)


def test_load_allows_plain_containers_and_numbers(tmp_path):
    path = tmp_path / "ok.pth"
    obj = {"model": {"w": torch.ones(2)}, "config": {"lr": 1e-3, "name": "x", "flags": [True, None]},
           "epoch": 4}
    atomic_save(obj, path)
    back = load_checkpoint(path)
    assert back["config"] == {"lr": 1e-3, "name": "x", "flags": [True, None]} and back["epoch"] == 4


# --- state-dict layouts ---------------------------------------------------------------------------


def test_strip_prefix():
    t = torch.zeros(1)
    assert list(strip_prefix({"module.a": t, "module.b.c": t})) == ["a", "b.c"]
    # Only when every key has it: a mixed dict is left alone.
    assert list(strip_prefix({"module.a": t, "b": t})) == ["module.a", "b"]
    assert strip_prefix({}) == {}
    assert list(strip_prefix({"enc.a": t}, "enc.")) == ["a"]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"meta": {"epoch": 3}, "state_dict": sd},  # the authors' epoch_N.pth (docs/original.md#s7-4)
        lambda sd: {"model": sd, "optimizer": {}, "iter_num": 5},  # ours
        lambda sd: sd,  # a raw state dict
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},  # saved from DDP
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
)
def test_extract_state_dict_layouts(wrap):
    sd = _tiny().state_dict()
    out = extract_state_dict(wrap(dict(sd)))
    assert list(out) == list(sd)
    assert all(torch.equal(out[k], sd[k]) for k in sd)


def test_extract_state_dict_without_weights():
    with pytest.raises(CheckpointError, match=r"ck\.pth: no model weights found \(keys: \['epoch', 'meta'\]\)"):
        extract_state_dict({"meta": {}, "epoch": 3}, "ck.pth")
    with pytest.raises(CheckpointError, match="no model weights"):
        extract_state_dict({})


def test_load_weights_round_trip():
    src, dst = _tiny(), torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    torch.nn.init.zeros_(dst[0].weight)
    load_weights(dst, extract_state_dict({"state_dict": src.state_dict()}), "x.pth")
    assert torch.equal(dst[0].weight, src[0].weight)


def test_load_weights_lists_what_does_not_fit():
    model = _tiny()
    sd = dict(model.state_dict())
    del sd["0.bias"]
    sd["2.weight"] = torch.zeros(1)
    sd["0.weight"] = torch.zeros(5, 3)
    with pytest.raises(CheckpointError) as exc:
        load_weights(model, sd, "epoch_9.pth")
    msg = str(exc.value)
    assert "checkpoint epoch_9.pth does not fit Sequential" in msg
    assert "missing 1 keys (e.g. ['0.bias'])" in msg
    assert "unexpected 1 keys (e.g. ['2.weight'])" in msg
    assert "1 shape mismatches (e.g. ['0.weight: checkpoint (5, 3) vs model (2, 3)'])" in msg
    # Nothing was loaded.
    assert torch.equal(model[0].weight, _tiny()[0].weight)


# --- run folders ----------------------------------------------------------------------------------


def test_run_folder_refuses_an_existing_run_without_resume(tmp_path):
    run = RunFolder(tmp_path / "run", resume=False)
    run.write_yaml("config.yaml", {"epoch": 3})
    run.close()
    with pytest.raises(RunFolderError, match="--resume") as exc:
        RunFolder(tmp_path / "run", resume=False)
    assert str(tmp_path / "run") in str(exc.value) and "config.yaml" in str(exc.value)
    again = RunFolder(tmp_path / "run", resume=True)
    again.logger.info("resumed")
    again.close()
    assert "resumed" in (tmp_path / "run" / "log.txt").read_text()


def test_run_folder_with_latest_checkpoint_is_taken(tmp_path):
    (tmp_path / "run").mkdir()
    atomic_save({}, tmp_path / "run" / "latest.pth")
    with pytest.raises(RunFolderError, match=r"latest\.pth"):
        RunFolder(tmp_path / "run", resume=False)


def test_empty_existing_folder_is_fine(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("x")
    RunFolder(tmp_path / "run", resume=False).close()


def test_non_writer_ranks_write_nothing(tmp_path, capsys):
    path = tmp_path / "run"
    run = RunFolder(path, resume=False, writer=False)
    run.write_yaml("config.yaml", {"a": 1})
    run.write_json("options.json", {"a": 1})
    run.append_jsonl("stats.jsonl", {"loss": 1.0})
    run.logger.info("rank 1 info")
    run.logger.warning("rank 1 warning")
    run.close()
    assert not path.exists()
    out = capsys.readouterr().out
    assert "rank 1 info" not in out and "rank 1 warning" in out


def test_non_writer_does_not_check_for_an_existing_run(tmp_path):
    main = RunFolder(tmp_path / "run", resume=False)
    main.write_yaml("config.yaml", {})
    main.close()
    RunFolder(tmp_path / "run", resume=False, writer=False).close()
    assert sorted(os.listdir(tmp_path / "run")) == ["config.yaml", "log.txt"]


def test_jsonl_round_trip(tmp_path):
    run = RunFolder(tmp_path / "run", resume=False)
    run.append_jsonl("stats.jsonl", {"epoch": 0, "loss": torch.tensor(0.5), "acc": np.float32(0.25)})
    run.append_jsonl("stats.jsonl", {"epoch": 1, "path": Path("a/b"), "lr": [1e-3, 5e-4]})
    run.close()
    records = read_jsonl(tmp_path / "run" / "stats.jsonl")
    assert len(records) == 2
    assert all(isinstance(r.pop("time"), float) for r in records)
    assert records == [{"epoch": 0, "loss": 0.5, "acc": 0.25}, {"epoch": 1, "path": "a/b", "lr": [1e-3, 5e-4]}]


def test_read_jsonl_skips_a_truncated_last_line(tmp_path):
    path = tmp_path / "stats.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epoch": 2, "lo')
    assert read_jsonl(path) == [{"epoch": 0}, {"epoch": 1}]


def test_write_json_and_yaml_are_atomic(tmp_path, monkeypatch):
    run = RunFolder(tmp_path / "run", resume=False)
    run.write_json("training_options.json", {"lr": 1e-3, "out": Path("x"), "shape": (1, 2)})
    run.write_yaml("config.yaml", {"frontend": {"n_mels": 40}, "steps": torch.tensor(7)})
    assert json.loads((tmp_path / "run" / "training_options.json").read_text()) == {
        "lr": 1e-3, "out": "x", "shape": [1, 2]}
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == {"frontend": {"n_mels": 40}, "steps": 7}
    assert _leftovers(tmp_path / "run") == []

    # A crash between writing the temporary file and renaming it leaves the old file intact.
    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        run.write_json("training_options.json", {"lr": 2.0})
    monkeypatch.undo()
    assert json.loads((tmp_path / "run" / "training_options.json").read_text())["lr"] == 1e-3
    run.close()
