"""The demo's orchestration: stages run in order with their wall time, a second run reuses what finished,
--force and --from run stages again (keeping earlier run folders), a failing stage stops with a clear
message, and summary.json gathers the checkpoints, report, times and metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import demo


def _fake_stages(tmp: Path, fail: str | None = None):
    """Three stages that append their name to a log; the last writes an evaluation folder's metrics."""
    log = tmp / "ran.txt"
    gan = tmp / "out" / "generator"

    def stage(name, code, outputs=()):
        if name == fail:
            code = "import sys; sys.exit(3)"
        return demo.Stage(name, f"the {name} stage",
                          [sys.executable, "-c", f"open({str(log)!r}, 'a').write({name!r} + '\\n'); {code}"],
                          [str(p) for p in outputs])

    metrics = {"speech_encoder": {"all": {"s2i_R1": 0.95}}, "attributes": {}, "fid": {"FID": 12.5}}
    return [
        stage("speech_encoder", f"import os; os.makedirs({str(tmp / 'out' / 'speech_encoder')!r}, exist_ok=True)"),
        stage("generator", f"import os; os.makedirs({str(gan / 'Model')!r}, exist_ok=True)", [gan / "Model"]),
        stage("evaluate", f"import os, json; d = {str(gan / 'Model' / 'iteration9')!r}; os.makedirs(d, exist_ok=True); "
                          f"json.dump({metrics!r}, open(os.path.join(d, 'metrics.json'), 'w'))"),
    ], log


@pytest.fixture
def fake(tmp_path, monkeypatch):
    stages, log = _fake_stages(tmp_path)
    monkeypatch.setattr(demo, "stages", lambda cfg: stages)
    return tmp_path, log


def _main(tmp, *args):
    return demo.main(["--out", str(tmp / "out"), *args])


def test_runs_every_stage_then_reuses_them(fake, capsys):
    tmp, log = fake
    summary = _main(tmp)
    assert log.read_text().split() == ["speech_encoder", "generator", "evaluate"]
    saved = json.loads((tmp / "out" / "summary.json").read_text())
    assert saved["metrics"]["fid"]["FID"] == 12.5 and set(saved["stage_seconds"]) == {"speech_encoder", "generator",
                                                                                     "evaluate"}
    assert saved["report"].endswith("generator/report.html") and summary["metrics"] == saved["metrics"]
    for key in ("speech_encoder_checkpoint", "generator_checkpoint", "report", "stage_seconds", "metrics"):
        assert key in saved
    _main(tmp)  # everything is reused
    assert log.read_text().split() == ["speech_encoder", "generator", "evaluate"]
    assert "reused" in capsys.readouterr().out


def test_each_stage_records_its_peak_memory(tmp_path):
    """The peak resident memory of a stage's process: one that touches 300 MiB reports at least that.

    The demo runs in a small process of its own here, as `make demo` does: Linux counts the memory of the
    process that started a stage into the stage's peak, and pytest's own is over a GiB.
    """
    stages, _ = _fake_stages(tmp_path)
    stages[1].argv[-1] += "; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    plan = tmp_path / "stages.json"
    plan.write_text(json.dumps([[s.name, s.what, s.argv, s.outputs] for s in stages]))
    script = ("import json, sys, demo\n"
              "stages = [demo.Stage(*s) for s in json.load(open(sys.argv[1]))]\n"
              "demo.stages = lambda cfg: stages\n"
              "print(json.dumps(demo.main(['--out', sys.argv[2]])['stage_peak_rss_mib']))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(demo.__file__).parent)}

    def run() -> dict:
        out = subprocess.run([sys.executable, "-c", script, str(plan), str(tmp_path / "out")], env=env,
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    peaks = run()
    assert set(peaks) == {"speech_encoder", "generator", "evaluate"}
    assert peaks["generator"] >= 300 > peaks["speech_encoder"] > 0
    record = json.loads((tmp_path / "out" / "stages" / "generator.json").read_text())
    assert record["peak_rss_mib"] == peaks["generator"]
    assert run() == peaks  # reused stages report their recorded peaks


def test_from_reruns_that_stage_and_later_and_keeps_old_run_folders(fake):
    tmp, log = fake
    _main(tmp)
    _main(tmp, "--from", "generator")
    assert log.read_text().split() == ["speech_encoder", "generator", "evaluate", "generator", "evaluate"]
    kept = [p.name for p in (tmp / "out").iterdir() if p.name.startswith("generator.old_")]
    assert len(kept) == 1  # the first generator run folder was renamed, not deleted
    _main(tmp, "--force")
    assert log.read_text().split()[-3:] == ["speech_encoder", "generator", "evaluate"]


def test_a_failing_stage_stops_with_its_name(tmp_path, monkeypatch):
    stages, log = _fake_stages(tmp_path, fail="generator")
    monkeypatch.setattr(demo, "stages", lambda cfg: stages)
    with pytest.raises(ValueError, match="stage generator failed .exit status 3"):
        _main(tmp_path)
    assert log.read_text().split() == ["speech_encoder", "generator"]
    assert not (tmp_path / "out" / "summary.json").exists()


def test_stage_names_are_checked_and_listed(capsys):
    with pytest.raises(ValueError, match="'nope' is not a stage"):
        demo.main(["--from", "nope"])
    demo.main(["--list"])
    out = capsys.readouterr().out
    assert "speech_encoder" in out and "evaluate" in out


def test_speech_stages_hold_the_held_out_voices_out_of_training_only():
    """The real stage commands: the training captions get --train_voices minus --held_out_voices (a voice pool
    text_to_speech accepts), the test captions the TTS default pool, held-out voices included."""
    from Audio_to_Image import text_to_speech as t2s
    from Audio_to_Image.tts import DEFAULT_VOICES
    from s2i.config import parse_config

    cfg = demo.DemoConfig(train_voices="en-us,en+klatt,en-gb", held_out_voices="en+klatt,en-029")
    by_name = {s.name: s for s in demo.stages(cfg)}
    train_cfg, _ = parse_config(t2s.TTSConfig, by_name["speech_train"].argv[2:], "tts")
    assert train_cfg.voice_spec().voices == ("en-us", "en-gb")
    test_cfg, _ = parse_config(t2s.TTSConfig, by_name["speech_test"].argv[2:], "tts")
    assert set(test_cfg.voice_spec().voices) == set(DEFAULT_VOICES) >= {"en+klatt", "en-029"}
    default = {s.name: s for s in demo.stages(demo.DemoConfig())}
    voices, _ = parse_config(t2s.TTSConfig, default["speech_train"].argv[2:], "tts")
    pool = voices.voice_spec().voices
    assert len(pool) == 34 and not set(pool) & set(demo.HELD_OUT_VOICES.split(","))
    with pytest.raises(demo.ConfigError, match="held_out_voices"):
        demo.stages(demo.DemoConfig(train_voices="en+klatt", held_out_voices="en+klatt"))
