"""Stage F end to end on a fixture: every metric of a folder of generated images, per voice group, and
the report. Speech embeddings and the judge are built so the right answers are known exactly."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

import evaluate
import prepare_shapes_dataset
from s2i.data.manifests import load_manifest
from s2i.data.safe_pickle import save_pickle
from s2i.evaluation.attribute_classifier import TrainSettings, save_classifier
from s2i.evaluation.scoring import pick_samples, voice_groups
from s2i.metrics.context import EvaluationError

TRAIN_VOICES = ["en-us", "en-gb"]
HELD_OUT = "en+klatt"
DIM = 24  # one coordinate per class


@pytest.fixture(scope="module")
def world(tmp_path_factory, constant_attribute_classifier) -> dict:
    """A tiny shapes set (48 images of 64 px, 2 captions each) with what stages A–E would have written:
    wavs and their voices, teacher features, speech embeddings, and a generator's evaluation folder."""
    tmp = tmp_path_factory.mktemp("eval")
    root = tmp / "shapes"
    prepare_shapes_dataset.main(["--out", str(root), "--num_images", "48", "--image_size", "64",
                                 "--test_fraction", "0.25", "--captions_per_image", "2", "--no-progress"])
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        path = root / f"{split}.json"
        data = json.loads(path.read_text())
        m = load_manifest(path, "shapes")
        for i, entry in enumerate(data["data"]):
            # Test caption 1 of every image is spoken by a voice training never heard.
            voices = [TRAIN_VOICES[0], HELD_OUT if split == "test" else TRAIN_VOICES[1]]
            entry["tts"] = [{"backend": "espeak", "voice": v, "rate": 170, "pitch": 50} for v in voices]
            for c in range(2):
                wav = m.audio_path(i, c)
                wav.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(wav, 0.1 * np.sin(np.arange(8000) * 0.05 * (c + 1)), 16000)
        path.write_text(json.dumps(data))
        feats = [np.eye(DIM)[lab] + 0.01 * rng.standard_normal((10, DIM)) for lab in m.labels]
        m.image_feature_path.parent.mkdir(parents=True, exist_ok=True)
        save_pickle(feats, m.image_feature_path)
    test = load_manifest(root / "test.json", "shapes")
    # Speech embeddings: caption 0 (a training voice) lands on its class, caption 1 (held out) on the next.
    emb = np.zeros((len(test), 2, DIM))
    for i, lab in enumerate(test.labels):
        emb[i, 0, lab] = 1.0
        emb[i, 1, (lab + 1) % DIM] = 1.0
    save_pickle(emb, root / "test" / "audio_features_t.pickle")
    # The "generator" drew each test image itself for every caption.
    images = tmp / "run" / "Model" / "iteration7"
    flat = images / "flat_64"
    flat.mkdir(parents=True)
    for i, item in enumerate(test.items):
        key = str(Path(item.image).with_suffix("")).replace("/", "__")
        for c in range(2):
            shutil.copy(test.image_path(i), flat / f"{key}_sentence{c}_0.png")
    (tmp / "run" / "losses.jsonl").write_text("".join(json.dumps({"step": s, "D": 1.0 / s, "G": s / 10}) + "\n"
                                                      for s in range(1, 6)))
    save_classifier(root / "attribute_classifier.pth", constant_attribute_classifier("red", "circle"), TrainSettings(), {})
    return {"root": root, "images": images, "run": tmp / "run", "test": test}


def _run(world, *extra):
    return evaluate.main(["--dataset", "shapes", "--data_root", str(world["root"]), "--images", str(world["images"]),
                          "--audio_switch", "t", "--device", "cpu", "--no-progress", "--samples", "4", *extra])


def test_every_metric_end_to_end(world):
    out = _run(world)
    test = world["test"]
    saved = json.loads(Path(out["metrics_file"]).read_text())
    assert saved["generated"] == {"folder": str(world["images"]), "resolution": 64, "images": 2 * len(test),
                                  "captions": 2 * len(test), "test_images": len(test)}
    assert saved["voices"]["held out of training"] == HELD_OUT
    # Speech encoder: seen voices retrieve their class, the held-out voice the wrong one, exactly.
    enc = saved["speech_encoder"]
    assert enc["seen voices"]["s2i_R1"] == 1.0 and enc["seen voices"]["queries"] == len(test)
    assert enc["held-out voices"]["s2i_R1"] == 0.0
    assert enc["all"]["s2i_R1"] == pytest.approx(0.5)
    by_voice = {r["voice"]: r for r in saved["speech_encoder_by_voice"]}
    assert by_voice[HELD_OUT]["s2i_R1"] == 0.0 and by_voice[HELD_OUT]["held out"] == "yes"
    assert by_voice[TRAIN_VOICES[0]]["s2i_R1"] == 1.0 and by_voice[TRAIN_VOICES[0]]["captions"] == len(test)
    # Attributes: a judge that always says "red circle" is right exactly where the caption said so.
    colours = [it.class_name.split(".")[1].split("_")[0] for it in test.items]
    shapes = [it.class_name.split("_")[-1] for it in test.items]
    red, circle = np.mean([c == "red" for c in colours]), np.mean([s == "circle" for s in shapes])
    both = np.mean([c == "red" and s == "circle" for c, s in zip(colours, shapes)])
    for group in ("generated, all", "generated, seen voices", "generated, held-out voices",
                  "real test images (ceiling)"):
        got = saved["attributes"][group]
        assert got["colour_accuracy"] == pytest.approx(red) and got["shape_accuracy"] == pytest.approx(circle)
        assert got["both_accuracy"] == pytest.approx(both)
    # FID and the IS proxy come from the real networks.
    assert math.isfinite(saved["fid"]["FID"]) and saved["fid"]["FID"] >= 0
    assert saved["fid"]["generated images"] == 2 * len(test) and saved["fid"]["real test images"] == len(test)
    assert "proxy" in saved["inception_score"]["name"] and saved["inception_score"]["mean"] >= 1.0 - 1e-6
    # The report sits in the run folder and shows captions, held-out voices and curves.
    report = Path(out["report"])
    assert report == world["run"] / "report.html"
    page = report.read_text()
    assert "held out of training" in page and "<audio" in page
    assert any(cap in page for it in test.items for cap in it.captions)
    assert list((world["run"] / "report_files" / "curves").glob("*.png"))


def test_bad_inputs_name_the_problem(world, tmp_path):
    with pytest.raises(ValueError, match="--images is required"):
        evaluate.main(["--dataset", "shapes", "--data_root", str(world["root"])])
    with pytest.raises(EvaluationError, match="no flat_<resolution>"):
        evaluate.main(["--dataset", "shapes", "--data_root", str(world["root"]), "--images", str(tmp_path)])
    stray = tmp_path / "Model" / "iteration1" / "flat_64"
    stray.mkdir(parents=True)
    (stray / "somebody_elses_image.png").write_bytes(b"")
    with pytest.raises(EvaluationError, match="matches no item"):
        evaluate.main(["--dataset", "shapes", "--data_root", str(world["root"]), "--images", str(stray.parent),
                       "--no-fid"])
    with pytest.raises(EvaluationError, match=r"expected speech embeddings of shape"):
        save_pickle(np.zeros((3, 2, DIM)), world["root"] / "test" / "audio_features_bad.pickle")
        _run(world, "--audio_switch", "bad", "--no-fid", "--no-inception_score", "--samples", "0")


def test_voice_groups_and_sample_choice():
    groups, names = voice_groups([["a", "x"], ["b", None]], [["a", "b"]])
    assert names == {"seen": ["a", "b"], "held_out": ["x"]}
    assert groups["seen voices"].tolist() == [True, False, True, False]
    assert groups["held-out voices"].tolist() == [False, True, False, False]
    from s2i.metrics.context import GeneratedImage

    gen = [GeneratedImage(Path(f"{i}_{c}.png"), i, c, 0) for i in range(6) for c in range(2)]
    held = np.array([c == 1 for i in range(6) for c in range(2)])
    chosen = pick_samples(gen, 3, held, np.arange(6) * 2)
    assert len(chosen) == 3 and len({i for i, _ in chosen}) == 3  # one caption per image
    assert sum(c == 1 for _, c in chosen) == 1  # a third from the held-out voice
