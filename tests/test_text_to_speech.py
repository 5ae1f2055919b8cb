"""Stage A (text → speech): espeak-ng synthesis, manifest records, resumption, and the Baidu client's
request, retries and errors against fakes (tests never touch the network)."""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from Audio_to_Image import text_to_speech as t2s
from Audio_to_Image import tts
from s2i.data.manifests import ManifestError

HAS_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="the espeak-ng program is not installed "
                                  "(apt-get install espeak-ng)")

SHORT = "a small red bird with a black beak"
LONG = ("this bird has a bright yellow crown, a long pointed black bill, white wing bars on its dark brown "
        "wings, a speckled grey breast and a short forked tail that it flicks while it sings from the branch")
CAPTIONS = [[SHORT, "this bird is blue with white wings", "-a grey bird, starting with a dash"],
            ["a yellow bird with a short beak", "the bird has a red chest", "small and brown"]]
POOL = "en-us,en+f3,en-gb-scotland,en+m3"


def write_manifest(folder: Path, captions: list[list[str]], name: str = "train.json", **extra) -> Path:
    """A birds-schema manifest with absolute audio_base_path ``folder/audio``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = []
    for i, caps in enumerate(captions):
        cls = f"{i + 1:03d}.Class{i}"
        data.append({"image": f"{cls}/img{i}.jpg", "class": cls, "text": caps,
                     "audio": [f"{cls}/img{i}_{k}.wav" for k in range(len(caps))], "note": f"keep {i}"})
    raw = {"audio_base_path": str(folder / "audio"), "image_base_path": str(folder / "images"),
           "image_feature_path": str(folder / "train" / "f.pickle"), **extra, "data": data}
    path = folder / name
    path.write_text(json.dumps(raw))
    return path


def run(manifest: Path, *extra: str) -> dict:
    return t2s.main(["--train_json", str(manifest), "--splits", "train", "--no-progress", *extra])


def records(manifest: Path) -> list[list[dict]]:
    return [item["tts"] for item in json.loads(manifest.read_text())["data"]]


def wavs(manifest: Path) -> dict[str, bytes]:
    root = manifest.parent / "audio"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


# --------------------------------------------------------------------------------------------------
# espeak-ng


@needs_espeak
def test_espeak_writes_16k_mono_pcm16_and_records_every_file(tmp_path):
    manifest = write_manifest(tmp_path, CAPTIONS, extra_key={"a": 1})
    before = json.loads(manifest.read_text())
    summary = run(manifest, "--voices", POOL, "--rate_min", "150", "--rate_max", "190", "--pitch_min", "30",
                  "--pitch_max", "60", "--seed", "3", "--workers", "2")
    assert (summary["spoken"], summary["skipped"], summary["failed"]) == (6, 0, 0)

    for i, caps in enumerate(CAPTIONS):
        for k in range(len(caps)):
            info = sf.info(str(tmp_path / "audio" / before["data"][i]["audio"][k]))
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
            assert 0.5 < info.duration < 10.0

    after = json.loads(manifest.read_text())
    assert list(after) == list(before)  # top-level keys and their order kept
    for old, new in zip(before["data"], after["data"]):
        assert list(new) == [*old, "tts"]
        assert {k: v for k, v in new.items() if k != "tts"} == old
        assert len(new["tts"]) == len(new["audio"])
        for rec in new["tts"]:
            assert rec["backend"] == "espeak"
            assert rec["voice"] in POOL.split(",")
            assert 150 <= rec["rate"] <= 190 and 30 <= rec["pitch"] <= 60
    assert not (tmp_path / "train.json.tts-journal.jsonl").exists()


@needs_espeak
def test_longer_text_gives_longer_audio(tmp_path):
    manifest = write_manifest(tmp_path, [[SHORT, LONG]])
    run(manifest, "--voices", "en-us", "--rate_min", "175", "--rate_max", "175", "--pitch_min", "50",
        "--pitch_max", "50")
    short, long = (sf.info(str(tmp_path / "audio" / f"001.Class0/img0_{k}.wav")).duration for k in (0, 1))
    assert 0.5 < short < 10.0
    assert long > 3 * short


@needs_espeak
def test_same_seed_same_voices_and_bytes_other_seed_differs_workers_irrelevant(tmp_path):
    runs = {}
    for name, seed, workers in (("a", "7", "1"), ("b", "7", "2"), ("c", "8", "1")):
        manifest = write_manifest(tmp_path / name, CAPTIONS)
        run(manifest, "--seed", seed, "--workers", workers)
        runs[name] = (records(manifest), wavs(manifest))
    assert runs["a"][0] == runs["b"][0]
    assert runs["a"][1] == runs["b"][1]  # espeak-ng and the resampler are deterministic
    assert runs["a"][0] != runs["c"][0]
    assert runs["a"][1] != runs["c"][1]


def test_draws_depend_only_on_the_file_key():
    spec = tts.VoiceSpec(("en-us", "en-gb", "en+m3"), 100, 300, 0, 99)
    a = spec.draw(5, "train", 12, 3)
    assert a == spec.draw(5, "train", 12, 3)
    others = [spec.draw(5, "test", 12, 3), spec.draw(6, "train", 12, 3), spec.draw(5, "train", 13, 3),
              spec.draw(5, "train", 12, 4)]
    assert all(o != a for o in others)
    draws = [spec.draw(0, "train", i, 0) for i in range(300)]
    assert {d["voice"] for d in draws} == set(spec.voices)
    assert min(d["rate"] for d in draws) >= 100 and max(d["rate"] for d in draws) <= 300
    assert min(d["pitch"] for d in draws) >= 0 and max(d["pitch"] for d in draws) <= 99


@needs_espeak
def test_second_run_skips_everything_and_truncated_file_is_redone(tmp_path):
    manifest = write_manifest(tmp_path, CAPTIONS)
    run(manifest, "--seed", "1")
    first_manifest, first_wavs = manifest.read_bytes(), wavs(manifest)

    summary = run(manifest, "--seed", "1")
    assert (summary["spoken"], summary["skipped"], summary["failed"]) == (0, 6, 0)
    assert manifest.read_bytes() == first_manifest

    victim = tmp_path / "audio" / "002.Class1" / "img1_1.wav"
    victim.write_bytes(first_wavs["002.Class1/img1_1.wav"][: len(first_wavs["002.Class1/img1_1.wav"]) // 2])
    (tmp_path / "audio" / "001.Class0" / "img0_2.wav").write_bytes(b"RIFF junk")
    assert sf.info(str(victim)).frames > 0  # libsndfile reads the truncated file as a shorter one
    assert not tts.wav_is_complete(victim)
    summary = run(manifest, "--seed", "1")
    assert (summary["spoken"], summary["skipped"]) == (2, 4)
    assert wavs(manifest) == first_wavs
    assert manifest.read_bytes() == first_manifest


@needs_espeak
def test_skipped_files_keep_their_records_and_foreign_files_have_none(tmp_path):
    manifest = write_manifest(tmp_path, CAPTIONS)
    run(manifest, "--seed", "1")
    recs = records(manifest)
    # A different seed only affects files that are (re)made; the others are kept and counted.
    (tmp_path / "audio" / "001.Class0" / "img0_0.wav").unlink()
    summary = run(manifest, "--seed", "2")
    new = records(manifest)
    assert new[0][1:] == recs[0][1:] and new[1] == recs[1]
    assert new[0][0] == tts.VoiceSpec().draw(2, "train", 0, 0)
    changed = sum(r != tts.VoiceSpec().draw(2, "train", i, k) for i, rs in enumerate(recs) for k, r in enumerate(rs))
    assert summary["splits"]["train"]["changed"] == changed - 1 > 0  # img0_0 was spoken anew

    foreign = write_manifest(tmp_path / "foreign", [["a bird"]])
    path = tmp_path / "foreign" / "audio" / "001.Class0" / "img0_0.wav"
    path.parent.mkdir(parents=True)
    sf.write(str(path), np.zeros(1600, dtype=np.int16), 16000, subtype="PCM_16")
    summary = run(foreign)
    assert summary["splits"]["train"]["unrecorded"] == 1
    assert "tts" not in json.loads(foreign.read_text())["data"][0]  # nothing known, nothing written


@needs_espeak
def test_respeak_changed_speaks_files_of_another_voice_again(tmp_path):
    """A new voice pool with --respeak_changed: every file whose recorded voice is not the new plan's is spoken
    again (and recorded); files the new plan would speak the same way are skipped."""
    manifest = write_manifest(tmp_path, CAPTIONS)
    run(manifest, "--seed", "1", "--voices", "en-us,en-gb")
    before = wavs(manifest)
    summary = run(manifest, "--seed", "1", "--voices", "en-us,en+f3", "--respeak_changed")
    spec = tts.VoiceSpec(("en-us", "en+f3"))
    plan = [[spec.draw(1, "train", i, k) for k in range(len(caps))] for i, caps in enumerate(CAPTIONS)]
    assert records(manifest) == plan
    redone = sum(p["voice"] != "en-us" for caps in plan for p in caps)
    assert 0 < redone < 6 and summary["spoken"] == redone and summary["skipped"] == 6 - redone
    after = wavs(manifest)
    assert sum(after[k] != before[k] for k in before) == redone
    # Run again with the same plan: nothing left to do.
    assert run(manifest, "--seed", "1", "--voices", "en-us,en+f3")["skipped"] == 6


@needs_espeak
def test_interrupted_run_keeps_the_records_of_finished_files(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path, CAPTIONS)
    real = tts.EspeakBackend.speak
    calls = []

    def speak_then_die(self, *args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(tts.EspeakBackend, "speak", speak_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(manifest, "--workers", "1")
    recs = records_or_none(manifest)
    assert recs[0][:2] == [tts.VoiceSpec().draw(0, "train", 0, k) for k in range(2)]
    assert recs[0][2] is None and not (tmp_path / "audio" / "001.Class0" / "img0_2.wav").exists()
    # The worker may have finished a later file before the pool stopped; its record is kept too.
    done = 2
    for k, rec in enumerate(recs[1] or [None] * 3):
        path = tmp_path / "audio" / "002.Class1" / f"img1_{k}.wav"
        assert (rec is not None) == tts.wav_is_complete(path)
        assert rec is None or rec == tts.VoiceSpec().draw(0, "train", 1, k)
        done += rec is not None

    monkeypatch.setattr(tts.EspeakBackend, "speak", real)
    summary = run(manifest, "--workers", "1")
    assert (summary["spoken"], summary["skipped"]) == (6 - done, done)
    assert records(manifest) == [[tts.VoiceSpec().draw(0, "train", i, k) for k in range(3)] for i in range(2)]


def test_a_leftover_journal_is_merged_into_the_manifest(tmp_path):
    manifest = write_manifest(tmp_path, CAPTIONS)
    journal = tmp_path / "train.json.tts-journal.jsonl"
    rec = {"backend": "espeak", "voice": "en-us", "rate": 150, "pitch": 40}
    lines = [json.dumps({"item": 1, "caption": 2, "audio": "002.Class1/img1_2.wav", "tts": rec}),
             json.dumps({"item": 1, "caption": 0, "audio": "somewhere/else.wav", "tts": rec}),  # stale
             '{"item": 0, "capt']  # the half-written last line of a killed run
    journal.write_text("\n".join(lines))
    entries = tts.RecordJournal(manifest, [d["audio"] for d in json.loads(manifest.read_text())["data"]])
    assert entries.flush() == 1
    assert records_or_none(manifest) == [None, [None, None, rec]]
    assert not journal.exists()


def records_or_none(manifest: Path):
    return [item.get("tts") for item in json.loads(manifest.read_text())["data"]]


@needs_espeak
def test_text_and_save_path_mode(tmp_path):
    out = tmp_path / "one" / "hello.wav"
    res = t2s.main(["--text", "hello, this is a test", "--save_path", str(out), "--voices", "en-gb-x-rp"])
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert 0.5 < info.duration < 10.0
    assert res["tts"]["voice"] == "en-gb-x-rp"


@needs_espeak
def test_output_dir_uses_the_original_layout_and_warns(tmp_path, capsys):
    manifest = write_manifest(tmp_path, [["a bird", "a blue bird"]])
    out = tmp_path / "CUB_200_2011_audio"
    summary = run(manifest, "--output_dir", str(out), "--person", "3", "--one_by_one")
    assert summary["spoken"] == 2
    assert (out / "audio" / "3" / "001.Class0" / "img0_1.wav").is_file()
    assert not (tmp_path / "audio").exists()
    assert "audio_base_path" in capsys.readouterr().err


@needs_espeak
def test_exclude_voices_holds_voices_out(tmp_path):
    manifest = write_manifest(tmp_path, CAPTIONS)
    run(manifest, "--voices", "en-us,en-gb,en-029", "--exclude_voices", "en-gb")
    assert {r["voice"] for item in records(manifest) for r in item} <= {"en-us", "en-029"}


# --------------------------------------------------------------------------------------------------
# One-line errors


def cli_error(monkeypatch, *argv: str) -> str:
    monkeypatch.setattr(sys, "argv", ["text_to_speech.py", "--no-progress", *argv])
    with pytest.raises(SystemExit) as exc:
        t2s.cli()
    assert isinstance(exc.value.code, str), "expected a one-line message, not a bare exit status"
    assert "\n" not in exc.value.code
    return exc.value.code


def test_missing_manifest_is_one_line(monkeypatch, tmp_path):
    msg = cli_error(monkeypatch, "--train_json", str(tmp_path / "nope.json"), "--splits", "train")
    assert "nope.json" in msg and "does not exist" in msg


def test_missing_espeak_says_how_to_install(monkeypatch, tmp_path):
    manifest = write_manifest(tmp_path, CAPTIONS)
    msg = cli_error(monkeypatch, "--train_json", str(manifest), "--splits", "train",
                    "--espeak_binary", str(tmp_path / "no-espeak-here"))
    assert "apt-get install espeak-ng" in msg


@needs_espeak
@pytest.mark.parametrize("voice, named", [("en-us+nosuchvariant", "nosuchvariant"), ("xx-nosuchvoice", "xx-nosuchvoice"),
                                          ("en-gb+f3", "ignores the variant 'f3'")])
def test_unknown_voice_is_named(monkeypatch, tmp_path, voice, named):
    manifest = write_manifest(tmp_path, CAPTIONS)
    msg = cli_error(monkeypatch, "--train_json", str(manifest), "--splits", "train", "--voices", f"en-us,{voice}")
    assert named in msg


def test_empty_caption_names_the_item(tmp_path):
    manifest = write_manifest(tmp_path, [["fine"], ["a bird", "   "]])
    with pytest.raises(ManifestError, match=r"item 1 \(002.Class1/img1.jpg\): caption 1 is empty"):
        run(manifest, "--espeak_binary", "no-such-espeak")  # checked before the backend is even built


@needs_espeak
def test_unwritable_output_is_one_line(monkeypatch, tmp_path):
    manifest = write_manifest(tmp_path, CAPTIONS)
    raw = json.loads(manifest.read_text())
    (tmp_path / "a_file").write_text("")
    raw["audio_base_path"] = str(tmp_path / "a_file" / "audio")  # a folder cannot be made inside a file
    manifest.write_text(json.dumps(raw))
    msg = cli_error(monkeypatch, "--train_json", str(manifest), "--splits", "train")
    assert "cannot write audio files" in msg and "a_file" in msg


# --------------------------------------------------------------------------------------------------
# Baidu


def wav_bytes(seconds: float = 0.5, sr: int = 16000, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * 220 * t)
    buf = io.BytesIO()
    sf.write(buf, np.stack([y] * channels, axis=1), sr, subtype="PCM_16", format="WAV")
    return buf.getvalue()


class FakeSpeech:
    """Stands in for aip.AipSpeech; ``script`` is what successive synthesis calls return or raise."""

    instances: list[FakeSpeech] = []
    script: list = []
    calls: list = []

    def __init__(self, app_id, api_key, secret_key):
        self.credentials = (app_id, api_key, secret_key)
        self.timeouts = {}
        self._authObj = {"error": "invalid_client", "error_description": "unknown client id"}
        FakeSpeech.instances.append(self)

    def setConnectionTimeoutInMillis(self, ms):
        self.timeouts["connect"] = ms

    def setSocketTimeoutInMillis(self, ms):
        self.timeouts["socket"] = ms

    def synthesis(self, text, lang="zh", ctp=1, options=None):
        FakeSpeech.calls.append((text, lang, ctp, dict(options or {})))
        step = FakeSpeech.script.pop(0) if FakeSpeech.script else wav_bytes()
        if isinstance(step, BaseException):
            raise step
        return step


@pytest.fixture
def fake_aip(monkeypatch):
    import aip

    FakeSpeech.instances, FakeSpeech.script, FakeSpeech.calls = [], [], []
    monkeypatch.setattr(aip, "AipSpeech", FakeSpeech)
    sleeps: list[float] = []
    monkeypatch.setattr(tts, "backoff_wait", sleeps.append)
    return sleeps


BAIDU = ["--backend", "baidu", "--APP_ID", "app", "--API_KEY", "key", "--SECRET_KEY", "secret"]


def test_baidu_request_sends_the_voice_and_writes_16k_wav(tmp_path, fake_aip):
    manifest = write_manifest(tmp_path, [["a small bird", "a red bird"]])
    FakeSpeech.script = [wav_bytes(sr=16000), wav_bytes(sr=24000, channels=2)]  # the second is resampled
    summary = run(manifest, *BAIDU, "--person", "3", "--workers", "1")
    assert summary["spoken"] == 2 and fake_aip == []
    assert FakeSpeech.instances[0].credentials == ("app", "key", "secret")
    assert FakeSpeech.instances[0].timeouts == {"connect": 10000, "socket": 10000}
    text, lang, ctp, options = FakeSpeech.calls[0]
    assert (text, lang, ctp) == ("a small bird", "zh", 1)
    assert options["aue"] == 6 and options["per"] == 3
    for k in range(2):
        info = sf.info(str(tmp_path / "audio" / f"001.Class0/img0_{k}.wav"))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.duration - 0.5) < 0.01
    assert records(manifest)[0][0] == {"backend": "baidu", "voice": "baidu-per3", "per": 3, "spd": 5, "pit": 5,
                                       "vol": 5}


def test_baidu_retries_with_exponential_back_off(fake_aip):
    backend = tts.BaiduBackend("app", "key", "secret", max_retries=5, retry_wait=0.5)
    FakeSpeech.script = [{"err_no": 503, "err_msg": "backend busy"}, ConnectionError("reset"), b"not a wav at all",
                         wav_bytes()]
    audio = backend.synthesize("a bird")
    assert audio.dtype == np.int16 and audio.shape == (8000,)
    assert len(FakeSpeech.calls) == 4
    assert fake_aip == [0.5, 1.0, 2.0]


def test_baidu_gives_up_after_max_retries(fake_aip):
    backend = tts.BaiduBackend("app", "key", "secret", max_retries=3, retry_wait=1.0)
    FakeSpeech.script = [{"err_no": 500, "err_msg": "unsupported input"}] * 10
    with pytest.raises(tts.SynthesisError, match=r"failed 4 times for caption 'a bird'.*error 500"):
        backend.synthesize("a bird")
    assert len(FakeSpeech.calls) == 4 and fake_aip == [1.0, 2.0, 4.0]


def test_baidu_caption_failures_are_listed_and_exit_non_zero(tmp_path, fake_aip, monkeypatch, capsys):
    manifest = write_manifest(tmp_path, [["good one", "bad one"]])
    FakeSpeech.script = [wav_bytes()] + [{"err_no": 500, "err_msg": "unsupported input"}] * 3
    monkeypatch.setattr(sys, "argv", ["t2s", "--train_json", str(manifest), "--splits", "train", "--no-progress",
                                      "--workers", "1", "--max_retries", "2", *BAIDU])
    with pytest.raises(SystemExit, match="1 file"):
        t2s.cli()
    err = capsys.readouterr().err
    assert "1 spoken, 0 skipped, 1 failed" in err and "img0_1.wav" in err and "error 500" in err
    assert records(manifest)[0][1] is None


def test_baidu_refusal_stops_at_once(fake_aip):
    backend = tts.BaiduBackend("app", "key", "secret")
    FakeSpeech.script = [{"err_no": 502, "err_msg": "token invalid"}]
    with pytest.raises(tts.FatalServiceError, match="502"):
        backend.synthesize("a bird")
    FakeSpeech.script = [KeyError("access_token")]
    with pytest.raises(tts.FatalServiceError, match="refused the credentials.*unknown client id"):
        backend.synthesize("a bird")
    assert len(FakeSpeech.calls) == 2 and fake_aip == []


def test_baidu_unreachable_stops_the_run_with_one_error(tmp_path, fake_aip, monkeypatch):
    manifest = write_manifest(tmp_path, CAPTIONS)
    FakeSpeech.script = [ConnectionError("Connection refused")] * 100
    msg = cli_error(monkeypatch, "--train_json", str(manifest), "--splits", "train", "--workers", "1",
                    "--max_retries", "2", "--retry_wait", "0.25", *BAIDU)
    assert "could not be reached (3 attempts)" in msg and SHORT in msg and "Connection refused" in msg
    assert len(FakeSpeech.calls) == 3  # the other captions were not tried
    assert fake_aip == [0.25, 0.5]


def test_baidu_real_client_against_a_closed_port_fails_fast(tmp_path, monkeypatch, free_port):
    aip = pytest.importorskip("aip")
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    # The SDK keeps its URLs in name-mangled class attributes.
    monkeypatch.setattr(aip.AipSpeech, "_AipSpeech__ttsUrl", f"http://127.0.0.1:{free_port}/text2audio")
    monkeypatch.setattr(aip.base.AipBase, "_AipBase__accessTokenUrl", f"http://127.0.0.1:{free_port}/token")
    manifest = write_manifest(tmp_path, CAPTIONS)
    t0 = time.monotonic()
    msg = cli_error(monkeypatch, "--train_json", str(manifest), "--splits", "train", "--workers", "1",
                    "--max_retries", "1", "--retry_wait", "0", *BAIDU)
    assert time.monotonic() - t0 < 10
    assert msg.startswith("error: the Baidu TTS service") and "could not be reached" in msg and SHORT in msg


def test_baidu_without_the_package_or_credentials(monkeypatch, tmp_path):
    manifest = write_manifest(tmp_path, CAPTIONS)
    msg = cli_error(monkeypatch, "--train_json", str(manifest), "--splits", "train", "--backend", "baidu",
                    "--APP_ID", "app")
    assert "--API_KEY" in msg and "--SECRET_KEY" in msg
    monkeypatch.setitem(sys.modules, "aip", None)
    msg = cli_error(monkeypatch, "--train_json", str(manifest), "--splits", "train", *BAIDU)
    assert "pip install baidu-aip" in msg


@needs_espeak
def test_a_killed_process_loses_no_records(tmp_path):
    """SIGKILL mid-run: every finished wav has its record in the manifest or the journal, and the next
    run merges them, speaks the rest and ends with every record equal to its draw."""
    import signal
    import subprocess

    captions = [[f"bird number {i}, caption {k}, a small bird" for k in range(10)] for i in range(12)]
    manifest = write_manifest(tmp_path, captions)
    proc = subprocess.Popen([sys.executable, "-m", "Audio_to_Image.text_to_speech", "--train_json", str(manifest),
                             "--splits", "train", "--workers", "2", "--no-progress", "--manifest_every", "0.05"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    audio = tmp_path / "audio"
    deadline = time.monotonic() + 30
    while len(list(audio.rglob("*.wav"))) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    recs = records_or_none(manifest)
    journal = tmp_path / "train.json.tts-journal.jsonl"
    for line in journal.read_text().splitlines() if journal.exists() else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        recs[entry["item"]] = recs[entry["item"]] or [None] * 10
        recs[entry["item"]][entry["caption"]] = entry["tts"]
    finished = [(i, k) for i in range(12) for k in range(10)
                if tts.wav_is_complete(audio / f"{i + 1:03d}.Class{i}" / f"img{i}_{k}.wav")]
    assert 20 <= len(finished) < 120, "the run should have been killed part-way"
    assert all(recs[i] and recs[i][k] == tts.VoiceSpec().draw(0, "train", i, k) for i, k in finished)

    summary = run(manifest)
    assert summary["skipped"] == len(finished) and summary["spoken"] == 120 - len(finished)
    assert records(manifest) == [[tts.VoiceSpec().draw(0, "train", i, k) for k in range(10)] for i in range(12)]
    assert not journal.exists()
