"""Stage D, speech-embedding extraction: output files, exactness of length batching, order, reruns, errors."""

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from Audio_to_Image import embedding
from Audio_to_Image import extract_audio_feature as extract
from Audio_to_Image.audio import FrontEndConfig, compute_logmel
from Audio_to_Image.speech_encoder import CNNRNN, encoder_steps, load_speech_encoder
from s2i import precision
from s2i.checkpoints import CheckpointError
from s2i.config import ConfigError
from s2i.data.manifests import ManifestError
from s2i.data.safe_pickle import load_pickle
from s2i.data.synthetic import SyntheticSpec, make_dataset
from tests.conftest import PYTHON, REPO

TARGET = 320  # 5 encoder steps: small enough for a fast CPU test, long enough for cut and uncut batches
SPEC = SyntheticSpec(num_classes=2, train_images_per_class=2, test_images_per_class=1, captions_per_image=3,
                     feature_dim=8, min_seconds=0.7, max_seconds=3.5)


@functools.cache
def _model(seed: int = 0) -> CNNRNN:
    """An untrained encoder whose BatchNorm running statistics are those of real inputs.

    With PyTorch's initial statistics (mean 0, variance 1) the activations of N(0, 0.02) convs shrink
    layer by layer and every output is nearly the same, so a wrong frame would hardly show. One
    train-mode pass over padded dB spectrograms sets the statistics as training would.
    """
    torch.manual_seed(seed)
    model = CNNRNN(bidirectional=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: the statistics of this one batch
    x = torch.zeros(16, 40, 512)
    for i, n in enumerate(torch.randint(100, 512, (16,)).tolist()):
        x[i, :, :n] = -80 * torch.rand(40, n)
    with torch.no_grad():
        model.train()(x, torch.full((16,), 8))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Our format (with model_args and frontend) and the authors' ({'meta', 'state_dict'}, module. keys)."""
    folder = tmp_path_factory.mktemp("ckpt")
    model = _model()
    args = {"n_filters": 40, "embedding_dim": 1024, "drop_prob": 0.5, "nhidden": 1024, "nsent": 1024,
            "bidirectional": True, "rnn_layers": 1, "input_dropout": 0.0}
    ours = folder / "latest.pth"
    torch.save({"meta": {"epoch": 0}, "epoch": 0, "state_dict": model.state_dict(), "model_args": args,
                "frontend": FrontEndConfig(target_length=TARGET).to_dict()}, ours)
    authors = folder / "epoch_3.pth"
    torch.save({"meta": {"epoch": 3}, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               authors)
    return {"ours": ours, "authors": authors}


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, SPEC)
    return root


def run(ckpt, root, *extra):
    return extract.main(["--model", str(ckpt), "--data_root", str(root), "--num_workers", "0", "--batch_size", "4",
                         "--no-progress", *extra])


@functools.cache
def _encoder(ckpt: str) -> CNNRNN:
    return load_speech_encoder(ckpt)[0]


_ALONE: dict = {}


@torch.no_grad()
def alone(ckpt, path, frontend: FrontEndConfig) -> tuple[np.ndarray, int]:
    """The embedding of one clip run alone at the full target length, as the original did.

    Memoised on the file's content: every test's generated dataset holds the same wavs (same seed).
    """
    key = (str(ckpt), hashlib.sha1(Path(path).read_bytes()).hexdigest(), frontend)
    if key not in _ALONE:
        model = _encoder(str(ckpt))
        spec, n = compute_logmel(path, frontend)
        steps = encoder_steps(torch.tensor([n]), model.steps_for(frontend.target_length))
        _ALONE[key] = model(torch.from_numpy(spec)[None], steps)[1][0].numpy(), n
    return _ALONE[key]


def manifest_audio(root, split="train"):
    m = json.loads((root / f"{split}.json").read_text())
    return m, [[os.path.join(m["audio_base_path"], a) for a in item["audio"]] for item in m["data"]]


def check_against_alone(root, split, ckpt, frontend, switch="0"):
    feats = load_pickle(root / split / f"audio_features_{switch}.pickle")
    lens = load_pickle(root / split / f"audio_features_lens_{switch}.pickle")
    _, paths = manifest_audio(root, split)
    assert feats.dtype == np.float32 and lens.dtype == np.int64
    assert feats.shape == (len(paths), len(paths[0]), 1024) and lens.shape == (len(paths), len(paths[0]))
    for i, row in enumerate(paths):
        for j, path in enumerate(row):
            emb, n = alone(ckpt, path, frontend)
            assert lens[i, j] == n, (i, j)
            np.testing.assert_allclose(feats[i, j], emb, rtol=0, atol=1e-5, err_msg=f"image {i} caption {j}")
    return feats, lens


# --------------------------------------------------------------------------------------------------
# Length batching is exact


def test_frames_needed_is_the_receptive_field_of_the_papers_encoder():
    model = _model()
    assert [embedding.frames_needed(model, n) for n in (1, 2, 5, 32)] == [64 * n + 131 for n in (1, 2, 5, 32)]
    table = embedding.frames_needed_table(model, 2048)
    assert len(table) == 33 and table[1] == 195 and table[29] == 1987 and table[30] == table[32] == 2048


@torch.no_grad()
def test_frames_past_the_receptive_field_never_reach_the_valid_steps():
    """The proof of length batching, on the model itself: for a clip with n valid steps, any values in the
    frames from frames_needed(n) on leave its n valid outputs unchanged; frame frames_needed(n) - 1 does not."""
    model = _model()
    g = torch.Generator().manual_seed(1)
    n_frames = 3 * 64 + 20
    steps = encoder_steps(torch.tensor([n_frames]), 32)
    x = torch.zeros(1, 40, 2048)
    x[:, :, :n_frames] = -80 * torch.rand(1, 40, n_frames, generator=g)
    need = embedding.frames_needed(model, int(steps))
    base = model(x, steps)[0][..., : int(steps)]

    scrambled = x.clone()
    scrambled[:, :, need:] = -80 * torch.rand(1, 40, 2048 - need, generator=g)
    torch.testing.assert_close(model(scrambled, steps)[0][..., : int(steps)], base, rtol=0, atol=1e-6)

    edge = x.clone()
    edge[:, :, need - 1] = -80.0
    assert (model(edge, steps)[0][..., : int(steps)] - base).abs().max() > 1e-3


@torch.no_grad()
def test_cut_batches_equal_each_clip_alone_at_full_length():
    """Mixed lengths (short, exact multiples of 64, near and at 2048) in one batch cut to what its longest
    clip reads: every embedding equals that clip run alone on 2048 frames."""
    model = _model()
    g = torch.Generator().manual_seed(2)
    n_frames = torch.tensor([10, 64, 127, 640, 1900, 2048])
    x = torch.zeros(len(n_frames), 40, 2048)  # 0 dB padding, as the front-end pads
    for i, n in enumerate(n_frames.tolist()):
        x[i, :, :n] = -80 * torch.rand(40, n, generator=g)
    ref = torch.cat([model(x[i:i + 1], encoder_steps(n_frames[i:i + 1], 32))[1] for i in range(len(x))])
    for group in ([0, 1, 2], [3, 4], [2, 0], [0, 5, 3]):
        idx = torch.tensor(group)
        steps = encoder_steps(n_frames[idx], 32)
        t = min(2048, embedding.frames_needed(model, int(steps.max())))
        got = embedding.embed_batch(model, x[idx, :, :t], n_frames[idx], full_steps=32)
        torch.testing.assert_close(got, ref[idx], rtol=0, atol=1e-5)


@torch.no_grad()
def test_cutting_at_the_longest_clip_without_the_margin_is_not_exact():
    """Why the margin matters: the 0 dB padding is the loudest value and reaches the last valid steps."""
    model = _model()
    n_frames = torch.tensor([300])
    x = torch.zeros(1, 40, 2048)
    x[:, :, :300] = -80 * torch.rand(1, 40, 300, generator=torch.Generator().manual_seed(3))
    ref = model(x, encoder_steps(n_frames, 32))[1]
    naive = embedding.embed_batch(model, x[:, :, :300], n_frames, full_steps=32)
    assert (naive - ref).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------------
# The stage script


def test_outputs_match_each_clip_embedded_alone(data, checkpoints):
    summary = run(checkpoints["ours"], data)
    frontend = FrontEndConfig(target_length=TARGET)
    for split, n_images in (("train", 4), ("test", 2)):
        assert summary[split]["shape"] == [n_images, 3, 1024] and not summary[split]["skipped"]
        feats, lens = check_against_alone(data, split, checkpoints["ours"], frontend)
        assert lens.max() == TARGET and lens.min() < TARGET  # cropped clips and cut batches both occur
        side = json.loads((data / split / "audio_features_0.pickle.json").read_text())
        assert side["inputs"]["checkpoint"]["path"] == str(checkpoints["ours"].resolve())
        assert side["inputs"]["checkpoint"]["epoch"] == 0
        assert side["inputs"]["frontend"] == frontend.to_dict()
        assert (side["inputs"]["N"], side["inputs"]["C"], side["inputs"]["D"]) == (n_images, 3, 1024)
        assert side["short_utterances"]["count"] == 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_outputs_match_each_clip_embedded_alone_on_the_cpu(data, checkpoints):
    run(checkpoints["ours"], data, "--device", "cuda", "--splits", "train")
    check_against_alone(data, "train", checkpoints["ours"], FrontEndConfig(target_length=TARGET))
    assert torch.backends.cudnn.allow_tf32  # restored after the extraction


def test_rows_and_columns_follow_the_manifest(data, checkpoints, tmp_path):
    """Permute the images and each image's captions: the rows and columns follow, with and without
    length batching, with and without loader workers."""
    m, _ = manifest_audio(data)
    rng = np.random.default_rng(0)
    m["data"] = [dict(m["data"][i], audio=list(np.array(m["data"][i]["audio"])[rng.permutation(3)]))
                 for i in rng.permutation(len(m["data"]))]
    other = tmp_path / "permuted"
    other.mkdir()
    (other / "train.json").write_text(json.dumps(m))
    run(checkpoints["ours"], other, "--splits", "train", "--num_workers", "2", "--feature_cache", "off")
    frontend = FrontEndConfig(target_length=TARGET)
    permuted, _ = check_against_alone(other, "train", checkpoints["ours"], frontend)
    run(checkpoints["ours"], other, "--splits", "train", "--no-length_batching", "--force")
    np.testing.assert_allclose(load_pickle(other / "train" / "audio_features_0.pickle"), permuted, rtol=0, atol=1e-5)


def test_short_utterances_are_embedded_alone_and_reported(data, checkpoints, capsys):
    _, paths = manifest_audio(data)
    short = paths[1][2]
    sf.write(short, 0.3 * np.sin(np.arange(4800) / 7.0).astype(np.float32), 16000, subtype="PCM_16")  # 0.3 s
    summary = run(checkpoints["ours"], data, "--splits", "train")
    assert summary["train"]["short_utterances"] == 1
    err = capsys.readouterr().err
    assert "1 utterance(s) shorter than one encoder step" in err and short in err
    feats, lens = check_against_alone(data, "train", checkpoints["ours"], FrontEndConfig(target_length=TARGET))
    assert lens[1, 2] == 31  # 1 + 4800 // 160 frames, stored before the //64 reduction
    # Its own embedding, not a copy of a neighbour's as the original made it.
    assert not np.allclose(feats[1, 2], feats[1, 0]) and not np.allclose(feats[1, 2], feats[1, 1])
    side = json.loads((data / "train" / "audio_features_0.pickle.json").read_text())
    assert side["short_utterances"]["count"] == 1 and side["short_utterances"]["files"] == [short]


def test_the_authors_checkpoint_format_works(data, checkpoints):
    run(checkpoints["authors"], data, "--bidirectional", "--rnn_layers", "1", "--audio_switch", "googlenet_caffe",
        "--frontend.target_length", str(TARGET), "--splits", "test",
        "--train_json", "x.json", "--val_json", "y.json", "--feature_len", "1024", "--dropout", "0.5")
    check_against_alone(data, "test", checkpoints["authors"], FrontEndConfig(target_length=TARGET),
                        switch="googlenet_caffe")
    side = json.loads((data / "test" / "audio_features_googlenet_caffe.pickle.json").read_text())
    assert side["inputs"]["checkpoint"]["epoch"] == 3 and side["inputs"]["checkpoint"]["format"] == "original"
    with pytest.raises(CheckpointError, match="bidirectional LSTM but --no-bidirectional"):
        run(checkpoints["authors"], data, "--no-bidirectional")
    with pytest.raises(CheckpointError, match="1 LSTM layer"):
        run(checkpoints["authors"], data, "--rnn_layers", "2")


def test_a_rerun_skips_and_force_recomputes(data, checkpoints, capsys, tmp_path):
    run(checkpoints["ours"], data, "--splits", "test")
    feat = data / "test" / "audio_features_0.pickle"
    first = feat.stat().st_mtime_ns
    assert run(checkpoints["ours"], data, "--splits", "test")["test"]["skipped"]
    assert "up to date" in capsys.readouterr().out and feat.stat().st_mtime_ns == first
    assert not run(checkpoints["ours"], data, "--splits", "test", "--force")["test"]["skipped"]
    # Another checkpoint (here: another epoch) makes the outputs stale.
    other = tmp_path / "epoch_7.pth"
    ckpt = torch.load(checkpoints["ours"], weights_only=True)
    torch.save({**ckpt, "epoch": 7, "meta": {"epoch": 7}}, other)
    assert not run(other, data, "--splits", "test")["test"]["skipped"]
    assert "recomputing audio_features_0.pickle (checkpoint changed" in capsys.readouterr().out
    # Pickles that this script did not write (no sidecar) are not replaced without --force.
    (data / "test" / "audio_features_0.pickle.json").unlink()
    with pytest.raises(ConfigError, match="not written by this script"):
        run(other, data, "--splits", "test")
    assert not run(other, data, "--splits", "test", "--force")["test"]["skipped"]


BF16_REL_TOL = 0.05
"""Largest relative difference ``‖e_bf16 − e_fp32‖ / ‖e_fp32‖`` allowed between an embedding extracted with
``--precision bf16`` and with fp32 (measured on this fixture, the paper's encoder: 0.019 at most, 0.015 on
average, cosine similarity >= 0.9998)."""


@pytest.mark.skipif(not precision.native_bf16(torch.device("cpu")),
                    reason="this CPU has no native bf16 (none of s2i.precision.NATIVE_BF16_FLAGS): bf16 is refused")
def test_bf16_writes_float32_embeddings_close_to_fp32_and_records_it(data, checkpoints, capsys):
    fp32 = run(checkpoints["ours"], data, "--splits", "test")
    feat = data / "test" / "audio_features_0.pickle"
    ref = load_pickle(feat)
    capsys.readouterr()
    summary = run(checkpoints["ours"], data, "--splits", "test", "--precision", "bf16")
    assert not summary["test"]["skipped"]  # another precision makes the stored embeddings stale
    assert "recomputing audio_features_0.pickle (precision changed" in capsys.readouterr().out
    low = load_pickle(feat)
    assert low.dtype == np.float32 and low.shape == ref.shape == tuple(fp32["test"]["shape"])
    rel = np.linalg.norm(low - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert 0 < rel.max() < BF16_REL_TOL, rel.max()
    side = json.loads((data / "test" / "audio_features_0.pickle.json").read_text())
    assert side["inputs"]["precision"] == side["run"]["precision"] == "bf16"
    assert side["outputs"]["features_dtype"] == "float32"
    assert run(checkpoints["ours"], data, "--splits", "test", "--precision", "auto")["test"]["skipped"]


def test_precision_in_the_sidecar_and_sidecars_from_before_it(data, checkpoints):
    """fp32 is recorded; a sidecar written before --precision existed counts as fp32, so the upgrade does
    not recompute what was extracted; a precision the machine cannot run is refused before any work."""
    run(checkpoints["ours"], data, "--splits", "test")
    path = data / "test" / "audio_features_0.pickle.json"
    side = json.loads(path.read_text())
    assert side["inputs"]["precision"] == "fp32"
    del side["inputs"]["precision"]
    path.write_text(json.dumps(side))
    assert run(checkpoints["ours"], data, "--splits", "test")["test"]["skipped"]
    with pytest.raises(precision.PrecisionError, match="fp16 needs CUDA"):
        run(checkpoints["ours"], data, "--splits", "test", "--precision", "fp16", "--device", "cpu")


def test_places_layout_has_one_caption_column(tmp_path, checkpoints):
    """Places manifests hold one 'wav' per image: the output is (N, 1, D) and (N, 1)."""
    root = tmp_path / "places"
    (root / "wavs" / "00").mkdir(parents=True)
    items = []
    for i, cls in enumerate(("b/bedroom", "k/kitchenette")):
        sf.write(root / "wavs" / "00" / f"utterance_{i}.wav",
                 (0.2 * np.sin(np.arange(16000 + 4000 * i) / (5.0 + i))).astype(np.float32), 16000)
        items.append({"image": f"{cls}/img_{i}.jpg", "wav": f"wavs/00/utterance_{i}.wav", "asr_text": "a room"})
    (root / "test.json").write_text(json.dumps({"audio_base_path": str(root / "wavs"), "data": items}))
    run(checkpoints["ours"], root, "--dataset", "places", "--splits", "test")
    assert load_pickle(root / "test" / "audio_features_0.pickle").shape == (2, 1, 1024)
    assert load_pickle(root / "test" / "audio_features_lens_0.pickle").tolist() == [[101], [126]]


def test_items_with_another_caption_count_are_an_error(data, checkpoints):
    m, _ = manifest_audio(data)
    m["data"][2]["audio"] = m["data"][2]["audio"][:2]
    (data / "train.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match=r"train.json item 2 \(002.class_2/train_000.jpg\) has 2 captions but item 0"):
        run(checkpoints["ours"], data, "--splits", "train")


def cli_error(monkeypatch, *argv) -> str:
    monkeypatch.setattr(sys, "argv", ["extract_audio_feature.py", "--no-progress", "--num_workers", "0", *argv])
    with pytest.raises(SystemExit) as exc:
        extract.cli()
    message = str(exc.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_user_errors_are_one_line(data, checkpoints, monkeypatch, tmp_path):
    ours = str(checkpoints["ours"])
    assert f"checkpoint {tmp_path / 'none.pth'} does not exist" in cli_error(
        monkeypatch, "--model", str(tmp_path / "none.pth"), "--data_root", str(data))
    foreign = tmp_path / "generator.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, foreign)
    assert "not a CNNRNN state dict" in cli_error(monkeypatch, "--model", str(foreign), "--data_root", str(data))
    wrong = tmp_path / "unidirectional.pth"
    torch.save({"meta": {"epoch": 0}, "state_dict": CNNRNN(bidirectional=False).state_dict()}, wrong)
    assert "unidirectional LSTM but --bidirectional" in cli_error(
        monkeypatch, "--model", str(wrong), "--bidirectional", "--data_root", str(data))
    assert f"manifest {tmp_path / 'train.json'} does not exist" in cli_error(
        monkeypatch, "--model", ours, "--data_root", str(tmp_path))
    _, paths = manifest_audio(data, "test")
    os.remove(paths[1][0])
    message = cli_error(monkeypatch, "--model", ours, "--data_root", str(data), "--splits", "test")
    assert f"audio file '{paths[1][0]}': file does not exist" in message


def test_command_line_error_has_no_traceback(tmp_path):
    script = REPO / "Audio_to_Image" / "extract_audio_feature.py"
    proc = subprocess.run([PYTHON, str(script), "--model", str(tmp_path / "latest.pth"), "--dataset", "birds"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: checkpoint {tmp_path / 'latest.pth'} does not exist (--model)"]
