"""The shapes dataset: attributes within their stated ranges, captions that say what is drawn, splits,
and a build that is deterministic, resumable and refuses to overwrite another dataset."""

import json

import numpy as np
import pytest

import prepare_shapes_dataset
from s2i.data import shapes
from s2i.data.manifests import load_manifest


def test_24_classes_colour_by_shape():
    names = shapes.class_names()
    assert len(names) == 24 and names[0] == "001.red_circle" and names[-1] == "024.black_triangle"
    assert len(set(names)) == 24


@pytest.mark.parametrize("colour", list(shapes.COLOURS))
def test_colour_jitter_and_background_ranges(colour):
    for i in range(20):
        s = shapes.draw_sample(np.random.default_rng(i), colour, "circle")
        assert np.all(np.abs(np.array(s.rgb) - np.array(shapes.COLOURS[colour])) <= 12)
        assert 100 <= s.background <= 160
        assert s.size in ("small", "large") and s.position in shapes.POSITIONS


@pytest.mark.parametrize("shape", shapes.SHAPES)
@pytest.mark.parametrize("size,frac", [("small", 0.30), ("large", 0.60)])
def test_rendered_shape_has_its_colour_size_and_place(shape, size, frac):
    s = shapes.ShapeSample("blue", shape, size, "center", (30, 60, 220), 130, frac)
    img = np.asarray(shapes.render(s, np.random.default_rng(0), 128)).astype(int)
    assert np.all(np.abs(img[64, 64] - [30, 60, 220]) <= 12)  # the centre is the shape
    assert np.all(np.abs(img[2, 2] - 130) <= 12)  # a corner is the grey background
    covered = (np.abs(img - [30, 60, 220]).sum(axis=2) < 60).mean()
    # Circle of diameter d covers pi/4 d^2; the square is drawn with the circle's area; the triangle less.
    expected = np.pi / 4 * frac**2
    assert 0.3 * expected < covered < 1.25 * expected


def test_positions_move_the_shape():
    centres = {}
    for pos in shapes.POSITIONS:
        s = shapes.ShapeSample("red", "square", "small", pos, (220, 20, 20), 120, 0.3)
        img = np.asarray(shapes.render(s, np.random.default_rng(0), 100)).astype(int)
        ys, xs = np.nonzero(np.abs(img - [220, 20, 20]).sum(axis=2) < 60)
        centres[pos] = (xs.mean(), ys.mean())
    assert centres["left"][0] < centres["center"][0] < centres["right"][0]
    assert centres["top"][1] < centres["center"][1] < centres["bottom"][1]


def test_captions_name_colour_and_shape_from_distinct_templates():
    rng = np.random.default_rng(3)
    s = shapes.draw_sample(rng, "orange", "triangle")
    caps = shapes.captions(s, rng, 10)
    assert len(caps) == 10 and len(set(caps)) >= 8
    for c in caps:
        assert "orange" in c and "triangle" in c
        assert all(other not in c.split() for other in shapes.COLOURS if other != "orange")
    assert any(w in " ".join(caps) for w in ("small", "little", "large", "big"))


def test_image_split_keeps_every_class_in_both():
    plan = shapes.class_plan(240, seed=0)
    train, test = shapes.split_indices(plan, 0.2, seed=0)
    assert sorted(train + test) == list(range(240)) and not set(train) & set(test)
    assert {plan[i] for i in train} == {plan[i] for i in test} and len({plan[i] for i in test}) == 24
    assert len(test) == 24 * 2


def test_compositional_split_holds_pairs_out_of_training():
    plan = shapes.class_plan(240, seed=0)
    hold = shapes.parse_holdout("red triangle, blue_circle")
    train, test = shapes.split_indices(plan, 0.2, seed=0, holdout=hold)
    assert not any(plan[i] in hold for i in train)
    assert sum(plan[i] in hold for i in test) == 20  # all 10 images of each held-out pair
    assert len({plan[i] for i in train}) == 22 and len({plan[i] for i in test}) == 24
    with pytest.raises(ValueError, match="must be '<colour> <shape>'"):
        shapes.parse_holdout("pink circle")


def _build(out, *extra):
    return prepare_shapes_dataset.main(["--out", str(out), "--num_images", "48", "--image_size", "64",
                                        "--no-progress", *extra])


def test_build_writes_loadable_manifests_and_resumes(tmp_path):
    out = tmp_path / "shapes"
    first = _build(out)
    assert first["drawn"] == 48 and first["train"] + first["test"] == 48
    m = load_manifest(out / "train.json", "shapes")
    item = m.items[0]
    assert len(item.captions) == 10 and len(item.audio) == 10 and item.audio[3].endswith("_3.wav")
    assert m.image_path(0).is_file() and m.image_feature_path.name == "image_features_efficientnet_lite0.pickle"
    names = shapes.class_names()
    raw = json.loads((out / "train.json").read_text())["data"]
    for it, e in zip(m.items, raw):
        assert names[it.label] == e["class"] == f"{it.label + 1:03d}.{e['attributes']['colour']}_{e['attributes']['shape']}"
    # A second run draws nothing and keeps the manifests (later stages add to them).
    before = (out / "train.json").read_text()
    assert _build(out)["drawn"] == 0 and (out / "train.json").read_text() == before
    # A deleted image is redrawn identically.
    victim = m.image_path(1)
    data = victim.read_bytes()
    victim.unlink()
    assert _build(out)["drawn"] == 1 and victim.read_bytes() == data


def test_build_is_deterministic_and_refuses_other_settings(tmp_path):
    _build(tmp_path / "a", "--workers", "1")
    _build(tmp_path / "b", "--workers", "3")  # threads draw in any order: the files must not depend on it
    ja, jb = (json.loads((tmp_path / d / "test.json").read_text()) for d in "ab")
    assert ja["data"] == jb["data"] and ja["generator"] == jb["generator"]
    images = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a/images").rglob("*.png"))
    assert len(images) == 48
    assert all((tmp_path / "a" / i).read_bytes() == (tmp_path / "b" / i).read_bytes() for i in images)
    with pytest.raises(Exception, match="made with other settings"):
        _build(tmp_path / "a", "--seed", "5")
    rebuilt = _build(tmp_path / "a", "--seed", "5", "--force")
    assert json.loads((tmp_path / "a/test.json").read_text())["generator"]["seed"] == 5
    assert rebuilt["drawn"] == 48 and rebuilt["train"] + rebuilt["test"] == 48
    new = json.loads((tmp_path / "a/test.json").read_text())["data"]
    assert new != jb["data"]
    same_name = [e["image"] for e in new if (tmp_path / "b/images" / e["image"]).exists()]
    assert same_name and all((tmp_path / "a/images" / n).read_bytes() != (tmp_path / "b/images" / n).read_bytes()
                             for n in same_name)
