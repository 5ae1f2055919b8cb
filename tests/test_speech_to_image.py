"""speech_to_image.py end to end on a tiny encoder and generator saved in our and the authors' formats:
images from files of any rate and channel count, reproducibility, the microphone path, one-line errors."""

import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import speech_to_image
from Audio_to_Image.audio import FrontEndConfig, compute_logmel
from Audio_to_Image.embedding import embed_clips
from Audio_to_Image.speech_encoder import CNNRNN
from Audio_to_Image.trainer import checkpoint_dict
from s2i import precision
from s2i.cli import run_cli
from s2i.config import ConfigError, from_dict, parse_config
from s2i.grids import to_uint8
from speech_to_image import load_speech_to_image
from StackGAN.model import D_NET, G_NET
from StackGAN.trainer import GanState, original_generator_state, snapshot_dict

TARGET = 320  # 5 encoder steps: a fast CPU encoder input
D_EMB = 24  # speech-embedding size = the generator's text_dim
RES = 128  # the tiny generator has 2 branches (64, 128 px)


def _primed(model: torch.nn.Module, forward) -> None:
    """One train-mode pass sets every BatchNorm's running statistics to those of real inputs, so outputs in
    eval mode depend on their input (with the initial statistics tiny-width models map most inputs alike)."""
    momenta = {m: m.momentum for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    for m in momenta:
        m.momentum = None  # the cumulative average: this one batch's statistics
    with torch.no_grad():
        forward(model.train())
    for m, mom in momenta.items():
        m.momentum = mom
    model.eval()


def _encoder(nhidden: int = D_EMB) -> CNNRNN:
    torch.manual_seed(0)
    model = CNNRNN(n_filters=40, embedding_dim=32, nhidden=nhidden, nsent=nhidden, bidirectional=True)
    x = torch.zeros(8, 40, TARGET)
    for i, n in enumerate(torch.randint(80, TARGET, (8,)).tolist()):
        x[i, :, :n] = -80 * torch.rand(40, n)
    _primed(model, lambda m: m(x, torch.full((8,), 4)))
    return model


def _generator(text_dim: int = D_EMB) -> G_NET:
    torch.manual_seed(1)
    G = G_NET(branch_num=2, gf_dim=8, z_dim=10, embedding_dim=16, text_dim=text_dim, r_num=1)
    _primed(G, lambda m: m(torch.randn(8, 10), torch.randn(8, text_dim)))
    return G


def _save_encoder(model: CNNRNN, path: Path) -> Path:
    """Through the trainer's own checkpoint_dict: the format train_audio_encoder.py writes."""
    args = {"n_filters": 40, "embedding_dim": 32, "drop_prob": 0.5, "nhidden": model.nhidden,
            "nsent": model.nhidden, "bidirectional": True, "rnn_layers": 1, "input_dropout": 0.0}
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    torch.save(checkpoint_dict(model, opt, sched, epoch=0, model_args=args,
                               frontend=FrontEndConfig(target_length=TARGET).to_dict(), config={}, metrics=None,
                               best_accu=0.0), path)
    return path


def _save_generator(G: G_NET, path: Path) -> dict:
    """Through the GAN trainer's snapshot_dict (format s2i.stackgan.v1, averaged G = G here)."""
    netsD = torch.nn.ModuleList([D_NET(resolution=64 * 2**i, df_dim=8, embedding_dim=16) for i in range(2)])
    snap = snapshot_dict(GanState.create(G, netsD, 2e-4, 2e-4), epoch=0, config={})
    torch.save(snap, path)
    return snap


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: on the shared 2-core machine a second intra-op thread only waits for a core
    (a run took ~1.5 s with 2 threads under load, 0.25 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    enc = _encoder()
    snap = _save_generator(_generator(), d / "G.pth")
    torch.save({"meta": {"epoch": 3}, "state_dict": {f"module.{k}": v for k, v in enc.state_dict().items()}},
               d / "epoch_3.pth")  # the authors' encoder format (docs/original.md#s15)
    torch.save(original_generator_state(snap), d / "netG_5.pth")  # and theirs for G
    _save_generator(_generator(text_dim=32), d / "G32.pth")
    return {"enc": _save_encoder(enc, d / "enc.pth"), "G": d / "G.pth", "enc_orig": d / "epoch_3.pth",
            "G_orig": d / "netG_5.pth", "G32": d / "G32.pth"}


def _speech(seconds: float = 1.5, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A gliding harmonic 'vowel' with a little noise: not from any dataset of the repository."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 60 * t / seconds
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(h * phase) / h for h in range(1, 12)) * np.hanning(t.size) ** 0.3
    return (0.3 * y / np.abs(y).max() + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _run(ckpts, out: Path, *wavs, enc="enc", G="G", extra=()) -> dict:
    args = ["--encoder", str(ckpts[enc]), "--generator", str(ckpts[G]), "--out", str(out), "--device", "cpu"]
    if wavs:
        args += ["--wav", *map(str, wavs)]
    return speech_to_image.main([*args, *extra])


def _error(ckpts, out: Path, *wavs, **kw) -> str:
    """The one line run_cli exits with (as `python speech_to_image.py ...` prints it)."""
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: _run(ckpts, out, *wavs, **kw))
    msg = str(exc.value.code)
    assert msg.startswith("error: ") and "\n" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("wav")
    y = _speech()
    sf.write(d / "tone.wav", y, 16000)
    sf.write(d / "tone_stereo.wav", np.stack([y, y], axis=1), 16000)  # same samples in both channels
    y44 = _speech(sr=44100, seed=1)
    sf.write(d / "stereo44.flac", np.stack([y44, 0.5 * y44], axis=1), 44100)
    sf.write(d / "other.wav", _speech(seed=2)[::-1].copy(), 16000)
    sf.write(d / "zeros.wav", np.zeros(16000, np.float32), 16000)
    sf.write(d / "hiss.wav", (1e-4 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32), 16000)
    (d / "junk.wav").write_bytes(b"RIFF not really a wav file")
    return {p.stem: p for p in d.iterdir()}


def test_round_trip_writes_images_at_the_largest_resolution(ckpts, wavs, tmp_path, capsys):
    out = tmp_path / "out"
    summary = _run(ckpts, out, wavs["tone"], wavs["stereo44"])
    assert summary["images"] == [str(out / "tone_0.png"), str(out / "stereo44_0.png")]
    for name in summary["images"]:
        img = Image.open(name)
        assert img.size == (RES, RES) and img.mode == "RGB"
        assert np.asarray(img).std() > 1  # a picture, not a constant
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("wrote ")] == summary["images"]
    assert len([ln for ln in lines if ln.startswith("timing: ")]) == 1
    assert summary["embedding_dim"] == D_EMB and summary["resolution"] == RES
    assert summary["frontend_source"] == "the checkpoint" and summary["encoder_format"] == "ours"
    t = summary["timing"]
    assert min(t["frontend_s"], t["encoder_s"], t["generator_s"]) > 0


def test_44khz_stereo_is_resampled_and_averaged_by_the_shared_front_end(ckpts, wavs, tmp_path):
    """A 16 kHz stereo file with equal channels gives the mono file's images byte for byte (downmix =
    channel mean); the 44.1 kHz stereo flac reaches the encoder as 1.5 s at 16 kHz."""
    _run(ckpts, tmp_path / "m", wavs["tone"])
    _run(ckpts, tmp_path / "s", wavs["tone_stereo"])
    assert (tmp_path / "m" / "tone_0.png").read_bytes() == (tmp_path / "s" / "tone_stereo_0.png").read_bytes()
    _, n_frames = compute_logmel(wavs["stereo44"], FrontEndConfig(target_length=TARGET))
    assert n_frames == 1 + 24000 // 160


def test_embedding_equals_what_extraction_writes(ckpts, wavs):
    """The generator sees exactly the embedding stage D would have stored for the same file."""
    pipe, _ = load_speech_to_image(ckpts["enc"], ckpts["G"], torch.device("cpu"))
    for name in ("tone", "stereo44"):
        emb = pipe.embed(*pipe.features(wavs[name]))
        ref, _ = embed_clips(pipe.encoder, [wavs[name]], pipe.frontend, None, torch.device("cpu"), batch_size=1,
                             progress=False)
        assert torch.equal(emb, torch.from_numpy(ref))


BF16_REL_TOL = 0.05
"""Largest relative difference ``‖e_bf16 − e_fp32‖ / ‖e_fp32‖`` of a bf16 embedding from the fp32 one
(measured on this fixture's encoder: 0.009-0.011)."""
BF16_IMAGE_TOL = 4.0
"""Largest mean absolute difference, in 8-bit levels, of the generator's bf16 images from its fp32 ones for
the same embedding and seed (measured: 0.81-0.84 levels on average; single pixels up to 85)."""


@pytest.mark.skipif(not precision.native_bf16(torch.device("cpu")),
                    reason="this CPU has no native bf16 (none of s2i.precision.NATIVE_BF16_FLAGS): bf16 is refused")
def test_bf16_gives_float32_embeddings_and_images_close_to_fp32(ckpts, wavs, tmp_path):
    cpu = torch.device("cpu")
    ref, _ = load_speech_to_image(ckpts["enc"], ckpts["G"], cpu)
    low, info = load_speech_to_image(ckpts["enc"], ckpts["G"], cpu, precision="bf16")
    assert info["precision"] == "bf16"
    for name in ("tone", "stereo44"):
        spec, n = ref.features(wavs[name])
        a, b = ref.embed(spec, n), low.embed(spec, n)
        assert b.dtype == torch.float32 and b.shape == a.shape == (1, D_EMB)
        assert 0 < float((b - a).norm() / a.norm()) < BF16_REL_TOL
        # The generator's images from the same embedding and seed, in 8-bit levels.
        ia, ib = ref.images(a, seed=3, samples=2), low.images(a, seed=3, samples=2)
        assert ib.dtype == torch.float32
        diff = np.abs(to_uint8(ia).astype(np.int16) - to_uint8(ib).astype(np.int16))
        assert 0 < diff.mean() < BF16_IMAGE_TOL, diff.mean()
    summary = _run(ckpts, tmp_path / "out", wavs["tone"], extra=["--precision", "bf16"])
    assert summary["precision"] == "bf16" and Image.open(summary["images"][0]).size == (RES, RES)


def test_precision_the_device_cannot_run_is_a_one_line_error(ckpts, wavs, tmp_path):
    assert "--precision fp16 needs CUDA" in _error(ckpts, tmp_path / "x", wavs["tone"], extra=["--precision", "fp16"])
    assert _run(ckpts, tmp_path / "o", wavs["tone"])["precision"] == "fp32"


def test_short_and_long_inputs_are_used_with_a_warning(ckpts, tmp_path, capsys):
    sf.write(tmp_path / "short.wav", _speech(seconds=0.3), 16000)  # < 64 frames: one encoder step
    sf.write(tmp_path / "long.wav", _speech(seconds=4.0), 16000)  # > TARGET frames: cropped
    summary = _run(ckpts, tmp_path / "out", tmp_path / "short.wav", tmp_path / "long.wav")
    assert len(summary["images"]) == 2
    err = capsys.readouterr().err
    assert "short.wav is shorter than one encoder step (0.64 s)" in err
    assert "long.wav: only its first 3.20 s are used" in err


def test_seeds_and_samples(ckpts, wavs, tmp_path):
    a, b, c = (tmp_path / x for x in "abc")
    _run(ckpts, a, wavs["tone"], extra=["--seed", "7"])
    _run(ckpts, b, wavs["tone"], extra=["--seed", "7"])
    _run(ckpts, c, wavs["tone"], extra=["--seed", "8"])
    assert (a / "tone_0.png").read_bytes() == (b / "tone_0.png").read_bytes()
    assert (a / "tone_0.png").read_bytes() != (c / "tone_0.png").read_bytes()
    many = _run(ckpts, tmp_path / "k", wavs["tone"], wavs["other"], extra=["--seed", "7", "--samples", "3"])
    assert sorted(Path(p).name for p in many["images"]) == [f"{s}_{k}.png" for s in ("other", "tone") for k in range(3)]
    pics = {Path(p).name: Path(p).read_bytes() for p in many["images"]}
    assert len(set(pics.values())) == 6
    # Sample k depends on (seed, k, audio) only: not on --samples or on the other inputs of the run.
    assert pics["tone_0.png"] == (a / "tone_0.png").read_bytes()
    # Sample k of two inputs shares its noise: what was said changes the picture.
    assert pics["tone_1.png"] != pics["other_1.png"]


def test_the_authors_formats_with_their_flags_give_the_same_images(ckpts, wavs, tmp_path):
    """epoch_N.pth has no front-end settings (docs/original.md#s4 defaults, here overridden to the trained length) and
    netG_<N>.pth none of G's arguments; both are read off the weights and checked against the flags."""
    ours = _run(ckpts, tmp_path / "ours", wavs["tone"])
    theirs = _run(ckpts, tmp_path / "theirs", wavs["tone"], enc="enc_orig", G="G_orig",
                  extra=["--bidirectional", "--rnn_layers", "1", "--branch_num", "2", "--text_dim", str(D_EMB),
                         "--frontend.target_length", str(TARGET)])
    assert theirs["encoder_format"] == "original" and theirs["generator_step"] == 5
    assert Path(ours["images"][0]).read_bytes() == Path(theirs["images"][0]).read_bytes()
    assert "--no-bidirectional was given" in _error(ckpts, tmp_path / "x", wavs["tone"], enc="enc_orig",
                                                   extra=["--no-bidirectional"])
    assert "--branch_num 3 was given" in _error(ckpts, tmp_path / "x", wavs["tone"], G="G_orig",
                                               extra=["--branch_num", "3"])


def test_bad_inputs_give_one_line_naming_the_problem(ckpts, wavs, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "nowhere.wav"
    assert f"audio file '{missing}': file does not exist" in _error(ckpts, out, missing)
    assert f"audio file '{wavs['junk']}': cannot be decoded as audio" in _error(ckpts, out, wavs["junk"])
    msg = _error(ckpts, out, wavs["zeros"])
    assert str(wavs["zeros"]) in msg and "is silent (all its samples are equal" in msg
    msg = _error(ckpts, out, wavs["hiss"])
    assert str(wavs["hiss"]) in msg and "is silent (RMS level -80.0 dBFS" in msg
    # One bad input among good ones stops the run before any image is written.
    _error(ckpts, out, wavs["tone"], wavs["zeros"])
    assert not out.exists() or not list(out.iterdir())

    msg = _error(ckpts, out, wavs["tone"], G="G32")
    assert all(s in msg for s in ("24-d", "32-d", str(ckpts["enc"]), str(ckpts["G32"]))), msg
    msg = _error(ckpts, out, wavs["tone"], enc="G")  # a generator snapshot handed over as the encoder
    assert msg.startswith(f"error: --encoder: checkpoint {ckpts['G']}") and "expected our speech-encoder" in msg
    msg = _error(ckpts, out, wavs["tone"], G="enc")
    assert msg.startswith(f"error: --generator: {ckpts['enc']}: not a StackGAN-v2 generator"), msg
    assert "expected our StackGAN snapshot" in msg
    foreign = tmp_path / "notes.pth"
    foreign.write_text("not a checkpoint")
    assert f"cannot read checkpoint {foreign}" in _error({**ckpts, "foreign": foreign}, out, wavs["tone"], G="foreign")
    assert "--wav, or --mic" in _error(ckpts, out)


def test_existing_images_are_kept_unless_overwrite(ckpts, wavs, tmp_path):
    out = tmp_path / "out"
    _run(ckpts, out, wavs["tone"], extra=["--seed", "1"])
    before = (out / "tone_0.png").read_bytes()
    msg = _error(ckpts, out, wavs["tone"], extra=["--seed", "2"])
    assert f"{out / 'tone_0.png'} already exists" in msg and "--overwrite" in msg
    assert (out / "tone_0.png").read_bytes() == before
    _run(ckpts, out, wavs["tone"], extra=["--seed", "2", "--overwrite"])
    assert (out / "tone_0.png").read_bytes() != before
    assert "same name stem 'tone'" in _error(ckpts, tmp_path / "o2", wavs["tone"], tmp_path / "x" / "tone.flac")


def _fake_sounddevice(recording: np.ndarray | None) -> types.ModuleType:
    """A stand-in for the sounddevice module: no input device, or one that 'records' ``recording``."""
    sd = types.ModuleType("sounddevice")

    class PortAudioError(Exception):
        pass

    def query_devices(kind=None):
        if recording is None:
            raise PortAudioError("Error querying device -1")
        return {"name": "fake mic", "default_samplerate": 44100.0, "max_input_channels": 1}

    def rec(frames, samplerate, channels, dtype):
        assert (frames, samplerate, channels, dtype) == (len(recording), 44100, 1, "float32")
        return recording[:, None].copy()

    sd.PortAudioError, sd.query_devices, sd.rec, sd.wait = PortAudioError, query_devices, rec, lambda: None
    return sd


def test_mic_without_an_input_device_says_so(ckpts, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(None))
    msg = _error(ckpts, tmp_path / "out", extra=["--mic", "2"])
    assert msg.startswith("error: --mic: no sound input device found on this machine")


def test_mic_recording_is_saved_and_turned_into_images(ckpts, tmp_path, monkeypatch):
    y = _speech(seconds=1.5, sr=44100, seed=3)
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(y))
    out = tmp_path / "out"
    summary = _run(ckpts, out, extra=["--mic", "1.5"])
    rec = Path(summary["recording"])
    assert rec.parent == out and rec.name.startswith("mic_") and rec.suffix == ".wav"
    data, sr = sf.read(rec, dtype="float32")
    assert sr == 44100 and np.abs(data - y).max() <= 1 / 32768 + 1e-7  # 16-bit PCM of the recording
    assert summary["images"] == [str(out / f"{rec.stem}_0.png")]
    assert Image.open(summary["images"][0]).size == (RES, RES)
    # The saved recording is a normal input: the same images again from --wav.
    again = _run(ckpts, tmp_path / "again", rec)
    assert Path(again["images"][0]).read_bytes() == Path(summary["images"][0]).read_bytes()


def test_cli_in_a_subprocess_on_this_machine(ckpts, wavs, tmp_path):
    """The real script and the real sounddevice: a one-line error without an input device (skipped where
    one exists), and an exit status of 1 with no traceback."""
    import sounddevice

    try:
        sounddevice.query_devices(kind="input")
        pytest.skip("this machine has a sound input device; the no-device message is tested with a fake above")
    except sounddevice.PortAudioError:
        pass
    repo = Path(speech_to_image.__file__).parent
    res = subprocess.run([sys.executable, "speech_to_image.py", "--encoder", str(ckpts["enc"]), "--generator",
                          str(ckpts["G"]), "--mic", "1", "--out", str(tmp_path / "o"), "--device", "cpu"],
                         cwd=repo, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith("error: --mic: no sound input device found")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed: no real synthetic speech")
def test_espeak_ng_speech(ckpts, tmp_path):
    wav = tmp_path / "a_red_circle.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "a small red circle on a blue background"], check=True,
                   capture_output=True, timeout=60)
    assert sf.info(wav).samplerate != 16000  # espeak-ng writes 22.05 kHz: resampled on the way in
    summary = _run(ckpts, tmp_path / "out", wav, extra=["--samples", "2"])
    assert [Image.open(p).size for p in summary["images"]] == [(RES, RES)] * 2


def test_wav_takes_several_files_from_flags_and_yaml(tmp_path):
    """``list[str]`` settings (s2i.config): ``--wav a b --wav c`` extends; a YAML list is type-checked."""
    cfg, _ = parse_config(speech_to_image.InferenceConfig, ["--wav", "a.wav", "b.flac", "--wav", "c.wav"], "t")
    assert cfg.wav == ["a.wav", "b.flac", "c.wav"]
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yml"
    good.write_text("wav: [x.wav, y.wav]\nsamples: 2\n")
    bad.write_text("wav: [x.wav, 3]\n")
    assert parse_config(speech_to_image.InferenceConfig, ["--config", str(good)], "t")[0].wav == ["x.wav", "y.wav"]
    with pytest.raises(SystemExit):  # argparse reports the ConfigError with the usage line
        parse_config(speech_to_image.InferenceConfig, ["--config", str(bad)], "t")
    with pytest.raises(ConfigError, match="'wav' must be list"):
        from_dict(speech_to_image.InferenceConfig, {"wav": "x.wav"})
