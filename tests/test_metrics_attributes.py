"""The shapes attribute classifier: it reads colour and shape off real test images, scores exact fractions,
maps StackGAN's evaluation file names to their test items, and its checkpoint rebuilds it alone."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import prepare_attribute_classifier
import prepare_shapes_dataset
from s2i.checkpoints import CheckpointError
from s2i.data.manifests import load_manifest
from s2i.data.shapes import COLOURS, SHAPES
from s2i.evaluation.attribute_classifier import (
    AttributeClassifier,
    TrainSettings,
    load_classifier,
    load_labelled_split,
    predict,
    score_images,
    train_attribute_classifier,
)
from s2i.metrics.attributes import expected_attributes, generated_folder, parse_generated_name, score_folder
from StackGAN.datasets import GanDataset

EPOCHS = "30"  # 216 training images; shape needs about 200 steps to reach 0.9 on unseen images


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    """288 images of 64 px (12 per class): 216 train, 72 test."""
    root = tmp_path_factory.mktemp("attr") / "shapes"
    prepare_shapes_dataset.main(["--out", str(root), "--num_images", "288", "--image_size", "64",
                                 "--test_fraction", "0.25", "--no-progress"])
    return root


@pytest.fixture(scope="module")
def trained(shapes_root) -> dict:
    """The stage run once on the tiny dataset: its summary."""
    return prepare_attribute_classifier.main(["--data_root", str(shapes_root), "--epochs", EPOCHS, "--device", "cpu"])


def test_two_heads_any_input_size():
    clf = AttributeClassifier(width=4).eval()
    for side in (64, 128, 256):
        c, s = clf(torch.rand(2, 3, side, side))
        assert c.shape == (2, len(COLOURS)) and s.shape == (2, len(SHAPES))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        clf(torch.rand(2, 1, 64, 64))


def test_reads_colour_and_shape_of_real_test_images(trained, shapes_root):
    assert not trained["reused"] and trained["train_images"] == 216
    real = trained["test"]
    assert real["n"] == 72
    assert real["colour_accuracy"] >= 0.9 and real["shape_accuracy"] >= 0.9
    # The stored ceiling is what scoring the test files again gives.
    clf, ckpt = load_classifier(trained["path"])
    m = load_manifest(shapes_root / "test.json", "shapes")
    _, colours, shapes = load_labelled_split(shapes_root / "test.json")
    again = score_images(clf, [m.image_path(i) for i in range(len(m))], colours, shapes, batch_size=16)
    assert again == pytest.approx(real)
    assert ckpt["summary"]["test"] == real


def test_checkpoint_rebuilds_the_classifier_alone(trained, shapes_root, tmp_path):
    clf, ckpt = load_classifier(trained["path"])
    assert ckpt["model_args"]["colours"] == list(COLOURS) and ckpt["model_args"]["shapes"] == list(SHAPES)
    assert ckpt["config"]["epochs"] == int(EPOCHS) and set(ckpt["data"]) == {"train", "test"}
    images, _, _ = load_labelled_split(shapes_root / "test.json")
    again, _ = load_classifier(trained["path"])
    with torch.no_grad():
        for a, b in zip(clf(images[:8].float() / 255), again(images[:8].float() / 255)):
            assert torch.equal(a, b)
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an attribute-classifier checkpoint"):
        load_classifier(foreign)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(Path(trained["path"]).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_classifier(broken)


def test_stage_reuses_an_up_to_date_classifier(trained, shapes_root, tmp_path, capsys):
    again = prepare_attribute_classifier.main(["--data_root", str(shapes_root), "--epochs", EPOCHS])
    assert again["reused"] and again["test"] == trained["test"]
    assert "up to date, reused" in capsys.readouterr().out
    # Other settings retrain (a copy, at 1 epoch, so the shared checkpoint stays the 30-epoch one).
    copy = tmp_path / "clf.pth"
    shutil.copyfile(trained["path"], copy)
    args = ["--data_root", str(shapes_root), "--out", str(copy), "--epochs", "1"]
    assert not prepare_attribute_classifier.main(args)["reused"]
    assert "settings changed: epochs" in capsys.readouterr().out
    assert prepare_attribute_classifier.main(args)["reused"]
    assert not prepare_attribute_classifier.main([*args, "--force"])["reused"]


def test_training_is_deterministic_for_a_seed(shapes_root):
    images, colours, shapes = load_labelled_split(shapes_root / "train.json")
    images, colours, shapes = images[:40], colours[:40], shapes[:40]
    runs = [train_attribute_classifier(images, colours, shapes, TrainSettings(epochs=1, width=4, seed=seed))[0]
            for seed in (3, 3, 4)]
    sd = [r.state_dict() for r in runs]
    assert all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])
    assert not all(torch.equal(sd[0][k], sd[2][k]) for k in sd[0])
    with pytest.raises(ValueError, match=r"unknown colour name\(s\) \['pink'\]"):
        train_attribute_classifier(images[:2], ["pink", "red"], ["circle", "circle"], TrainSettings(epochs=1))


def test_score_images_exact_fractions(constant_attribute_classifier):
    clf = constant_attribute_classifier("red", "circle")
    images = torch.rand(4, 3, 64, 64)
    assert predict(clf, images) == (["red"] * 4, ["circle"] * 4)
    result = score_images(clf, images, ["red", "blue", "red", "green"], ["circle", "circle", "square", "square"])
    assert result == {"n": 4, "colour_accuracy": 0.5, "shape_accuracy": 0.5, "both_accuracy": 0.25}
    wrong = score_images(clf, (images * 255).to(torch.uint8), ["blue"] * 4, ["triangle"] * 4, batch_size=3)
    assert wrong == {"n": 4, "colour_accuracy": 0.0, "shape_accuracy": 0.0, "both_accuracy": 0.0}
    with pytest.raises(ValueError, match="4 images but 3 expected colours"):
        score_images(clf, images, ["red"] * 3, ["circle"] * 4)
    with pytest.raises(ValueError, match=r"unknown expected shape name\(s\) \['hexagon'\]"):
        score_images(clf, images, ["red"] * 4, ["hexagon"] * 4)


def _write_generated(folder: Path, shapes_root: Path, size: int = 64) -> list[str]:
    """The test images, resized, under the names StackGAN/main.py's evaluate gives them (keys from GanDataset)."""
    m = load_manifest(shapes_root / "test.json", "shapes")
    keys = GanDataset(m, np.zeros((len(m), len(m.items[0].audio), 4), np.float32), train=False).keys
    folder.mkdir(parents=True)
    for i, key in enumerate(keys):
        with Image.open(m.image_path(i)) as im:
            small = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        for sentence in (0, 1):
            small.save(folder / f"{key.replace('/', '__')}_sentence{sentence}_0.png")
    return keys


def test_generated_file_names_map_to_their_test_items(trained, shapes_root, tmp_path):
    folder = tmp_path / "flat_64"
    keys = _write_generated(folder, shapes_root)
    raw = load_manifest(shapes_root / "test.json", "shapes")
    name = f"{keys[5].replace('/', '__')}_sentence1_0.png"
    assert parse_generated_name(name) == (keys[5], 1, 0)
    colours, shapes = expected_attributes([name], shapes_root / "test.json")
    colour, shape = raw.items[5].class_name.split(".")[1].split("_")
    assert (colours, shapes) == ([colour], [shape])

    paths, colours, shapes = generated_folder(folder, shapes_root / "test.json")
    assert len(paths) == 2 * len(keys) and len(colours) == len(shapes) == len(paths)
    clf, _ = load_classifier(trained["path"])
    result = score_folder(clf, folder, shapes_root / "test.json")
    assert result["n"] == 144 and result["colour_accuracy"] >= 0.9 and result["shape_accuracy"] >= 0.9

    with pytest.raises(ValueError, match="not a generated-image name"):
        expected_attributes(["001.red_circle__shape_00001.png"], shapes_root / "test.json")
    with pytest.raises(ValueError, match=r"key '999.pink_circle__shape_00001' names no item of .*test.json"):
        expected_attributes(["999.pink_circle__shape_00001_sentence0_0.png"], shapes_root / "test.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .png images"):
        generated_folder(tmp_path / "empty", shapes_root / "test.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        generated_folder(tmp_path / "missing", shapes_root / "test.json")
