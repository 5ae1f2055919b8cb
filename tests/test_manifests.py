"""s2i/data/manifests.py: the three dataset schemas of docs/original.md#s1-2, their class labels, paths and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from s2i.data.manifests import PLACES_CLASSES, Manifest, ManifestError, load_manifest, resolve_data_path


def _write(path: Path, obj, *, raw: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw if raw is not None else json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def _bird(cls: str, name: str) -> dict:
    stem = f"{cls}/{name}"
    return {
        "image": f"{stem}.jpg",
        "class": cls,
        "text": [f"{name} caption {k}" for k in range(10)],
        "audio": [f"{stem}_{k}.wav" for k in range(10)],
    }


def _birds_manifest(**top) -> dict:
    return {
        "image_feature_path": "train/image_features.pickle",
        "audio_base_path": "CUB_200_2011_audio/audio/0",
        "image_base_path": "CUB_200_2011/images",
        "data": [
            _bird("001.Black_footed_Albatross", "Black_Footed_Albatross_0046_18"),
            _bird("001.Black_footed_Albatross", "Black_Footed_Albatross_0009_34"),
            _bird("200.Common_Yellowthroat", "Common_Yellowthroat_0003_190521"),
        ],
        **top,
    }


def _flowers_manifest() -> dict:
    return {
        "audio_base_path": "wav",
        "data": [
            {"img": "jpg/image_00001.jpg", "class": "17", "text": [f"t{k}" for k in range(10)],
             "wav": [f"class_00017/image_00001_{k}.wav" for k in range(10)]},
            {"img": "jpg/image_00002.jpg", "class": "1", "text": [f"u{k}" for k in range(10)],
             "wav": [f"class_00001/image_00002_{k}.wav" for k in range(10)]},
            {"img": "jpg/image_00003.jpg", "class": "102", "text": [f"v{k}" for k in range(10)],
             "wav": [f"class_00102/image_00003_{k}.wav" for k in range(10)]},
        ],
    }


def _places_manifest() -> dict:
    return {
        "audio_base_path": "audios",
        "data": [
            {"image": "b/bedroom/x.jpg", "asr_text": "a bed with white sheets", "wav": "wavs/12/utt.wav"},
            {"image": "l/living_room/y.jpg", "asr_text": "a sofa", "wav": "wavs/3/utt_7.wav"},
            {"image": "k/kitchenette/z.jpg", "asr_text": "a tiny kitchen", "wav": "wavs/40/a.wav"},
        ],
    }


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A working directory that holds none of the manifests' relative paths."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


# --- schemas and labels ---------------------------------------------------------------------------


def test_birds(tmp_path, elsewhere):
    path = _write(tmp_path / "birds" / "train.json", _birds_manifest())
    m = load_manifest(path, "birds")
    assert isinstance(m, Manifest) and len(m) == 3 and m.dataset == "birds" and m.path == path
    assert m.labels.tolist() == [0, 0, 199] and m.labels.dtype == np.int64
    first = m.items[0]
    assert first.class_name == "001.Black_footed_Albatross"
    assert first.image == "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg"
    assert len(first.captions) == 10 and first.captions[3] == "Black_Footed_Albatross_0046_18 caption 3"
    assert first.audio[9] == "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18_9.wav"
    assert isinstance(first.captions, tuple) and isinstance(first.audio, tuple)


def test_flowers(tmp_path, elsewhere):
    m = load_manifest(_write(tmp_path / "flowers" / "test.json", _flowers_manifest()), "flowers")
    assert m.labels.tolist() == [16, 0, 101]
    assert [it.class_name for it in m.items] == ["17", "1", "102"]
    assert m.items[0].image == "jpg/image_00001.jpg"
    assert m.items[2].captions == tuple(f"v{k}" for k in range(10))
    assert m.items[1].audio[0] == "class_00001/image_00002_0.wav"
    assert m.image_base_path is None and m.image_feature_path is None


def test_flowers_class_may_be_a_json_integer(tmp_path, elsewhere):
    data = _flowers_manifest()
    data["data"][0]["class"] = 17
    assert load_manifest(_write(tmp_path / "f.json", data), "flowers").labels[0] == 16


def test_places(tmp_path, elsewhere):
    m = load_manifest(_write(tmp_path / "places" / "train.json", _places_manifest()), "places")
    assert m.labels.tolist() == [0, 6, 5]
    assert [it.class_name for it in m.items] == ["bedroom", "living_room", "kitchenette"]
    assert m.items[0].image == "bedroom/x.jpg"
    assert m.items[0].captions == ("a bed with white sheets",)
    assert m.items[0].audio == ("12/utt.wav",)
    assert m.audio_path(1, 0) == elsewhere / "audios" / "3/utt_7.wav"


def test_places_class_map_is_fixed():
    assert PLACES_CLASSES == ("bedroom", "dinette", "dining_room", "home_office", "hotel_room",
                              "kitchenette", "living_room")


def test_places_class_outside_the_map(tmp_path):
    data = _places_manifest()
    data["data"][2]["image"] = "a/attic/q.jpg"
    path = _write(tmp_path / "p.json", data)
    with pytest.raises(ManifestError, match=r"item 2: image 'attic/q.jpg' is not in one of the classes") as exc:
        load_manifest(path, "places")
    assert str(path) in str(exc.value)


def test_non_ascii_captions_survive(tmp_path, elsewhere):
    data = _birds_manifest()
    data["data"][1]["text"][0] = "un oiseau très élégant — 鳥"
    path = _write(tmp_path / "b.json", data)
    assert "鳥".encode() in path.read_bytes()  # written as UTF-8, not \u escapes
    m = load_manifest(path, "birds")
    assert m.items[1].captions[0] == "un oiseau très élégant — 鳥"


# --- audio paths ----------------------------------------------------------------------------------


def test_audio_paths_and_order(tmp_path, elsewhere):
    m = load_manifest(_write(tmp_path / "birds" / "train.json", _birds_manifest()), "birds")
    base = elsewhere / "CUB_200_2011_audio/audio/0"
    assert m.audio_base_path == base
    assert m.audio_path(2, 4) == base / "200.Common_Yellowthroat/Common_Yellowthroat_0003_190521_4.wav"
    paths = m.all_audio_paths()
    assert len(paths) == 30
    # Image by image, caption by caption (docs/original.md#s10): entry i*10 + k is image i, caption k.
    assert paths == [m.audio_path(i, k) for i in range(3) for k in range(10)]
    assert paths[13] == base / "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34_3.wav"


def test_all_audio_paths_flowers(tmp_path, elsewhere):
    m = load_manifest(_write(tmp_path / "f.json", _flowers_manifest()), "flowers")
    paths = m.all_audio_paths()
    assert [p.name for p in paths[9:11]] == ["image_00001_9.wav", "image_00002_0.wav"]


# --- path resolution ------------------------------------------------------------------------------


def test_absolute_paths_are_kept(tmp_path, elsewhere):
    data = _birds_manifest(audio_base_path=str(tmp_path / "abs_audio"),
                           image_feature_path=str(tmp_path / "abs" / "feat.pickle"))
    m = load_manifest(_write(tmp_path / "ds" / "train.json", data), "birds")
    assert m.audio_base_path == tmp_path / "abs_audio"
    assert m.image_feature_path == tmp_path / "abs" / "feat.pickle"


def test_relative_to_cwd_when_it_exists_there(tmp_path, monkeypatch):
    ds = tmp_path / "repo" / "data" / "birds"
    (ds / "train").mkdir(parents=True)
    (ds / "train" / "image_features.pickle").write_bytes(b"x")
    # As in the original, run from the repository root with paths like ./data/birds/...
    data = _birds_manifest(image_feature_path="data/birds/train/image_features.pickle",
                           audio_base_path="data/birds/audio")
    (ds / "audio").mkdir()
    path = _write(ds / "train.json", data)
    monkeypatch.chdir(tmp_path / "repo")
    m = load_manifest(path, "birds")
    assert m.image_feature_path == tmp_path / "repo" / "data/birds/train/image_features.pickle"
    assert m.audio_base_path == tmp_path / "repo" / "data/birds/audio"


def test_relative_to_the_manifest_folder_otherwise(tmp_path, elsewhere):
    ds = tmp_path / "moved" / "birds"
    (ds / "train").mkdir(parents=True)
    (ds / "train" / "image_features.pickle").write_bytes(b"x")
    (ds / "CUB_200_2011_audio/audio/0").mkdir(parents=True)
    m = load_manifest(_write(ds / "train.json", _birds_manifest()), "birds")
    assert m.image_feature_path == ds / "train/image_features.pickle"
    assert m.audio_base_path == ds / "CUB_200_2011_audio/audio/0"
    # image_base_path exists in neither place, so it stays relative to the working directory.
    assert m.image_base_path == elsewhere / "CUB_200_2011/images"


def test_cwd_wins_when_both_exist(tmp_path, monkeypatch):
    for root in (tmp_path / "cwd", tmp_path / "ds"):
        (root / "feat.pickle").parent.mkdir(parents=True, exist_ok=True)
        (root / "feat.pickle").write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "cwd")
    assert resolve_data_path("feat.pickle", tmp_path / "ds") == tmp_path / "cwd" / "feat.pickle"
    assert resolve_data_path(tmp_path / "ds" / "feat.pickle", tmp_path / "nowhere") == tmp_path / "ds" / "feat.pickle"


def test_extra_top_level_keys_are_kept(tmp_path, elsewhere):
    m = load_manifest(_write(tmp_path / "b.json", _birds_manifest(split="train", version=2)), "birds")
    assert m.extra == {"split": "train", "version": 2}


# --- errors ---------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="does not exist") as exc:
        load_manifest(tmp_path / "nope.json", "birds")
    assert str(tmp_path / "nope.json") in str(exc.value)


def test_invalid_json(tmp_path):
    path = _write(tmp_path / "bad.json", None, raw='{"data": [1, 2,')
    with pytest.raises(ManifestError, match="is not valid JSON") as exc:
        load_manifest(path, "birds")
    assert str(path) in str(exc.value)


def test_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"data": ["caf\u00e9"]}'.encode("latin-1"))
    with pytest.raises(ManifestError, match="is not valid JSON"):
        load_manifest(path, "birds")


@pytest.mark.parametrize("obj", [[1, 2], "data", 3])
def test_not_an_object(tmp_path, obj):
    path = _write(tmp_path / "list.json", obj)
    with pytest.raises(ManifestError, match="expected a JSON object") as exc:
        load_manifest(path, "birds")
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("data", [[], {}, "x"])
def test_empty_or_wrong_data(tmp_path, data):
    path = _write(tmp_path / "e.json", {"audio_base_path": "a", "data": data})
    with pytest.raises(ManifestError, match="'data' must be a non-empty list") as exc:
        load_manifest(path, "birds")
    assert str(path) in str(exc.value)


def test_missing_data_and_audio_base_path(tmp_path):
    path = _write(tmp_path / "m.json", {"audio_base_path": "a"})
    with pytest.raises(ManifestError, match="missing key 'data'"):
        load_manifest(path, "birds")
    data = _birds_manifest()
    del data["audio_base_path"]
    path = _write(tmp_path / "n.json", data)
    with pytest.raises(ManifestError, match="missing key 'audio_base_path'") as exc:
        load_manifest(path, "birds")
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    "dataset, make, index, key",
    [
        ("birds", _birds_manifest, 1, "audio"),
        ("birds", _birds_manifest, 2, "class"),
        ("birds", _birds_manifest, 0, "image"),
        ("flowers", _flowers_manifest, 2, "wav"),
        ("flowers", _flowers_manifest, 1, "img"),
        ("places", _places_manifest, 1, "wav"),
        ("places", _places_manifest, 2, "image"),
    ],
)
def test_missing_item_key_names_file_item_and_key(tmp_path, dataset, make, index, key):
    data = make()
    del data["data"][index][key]
    path = _write(tmp_path / "k.json", data)
    with pytest.raises(ManifestError) as exc:
        load_manifest(path, dataset)
    assert f"{path} item {index}: missing key '{key}'" in str(exc.value)


def test_item_not_an_object(tmp_path):
    data = _birds_manifest()
    data["data"][1] = ["001.x/y.jpg"]
    path = _write(tmp_path / "o.json", data)
    with pytest.raises(ManifestError, match=r"item 1: expected an object, found list") as exc:
        load_manifest(path, "birds")
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    "dataset, make, cls, message",
    [
        ("birds", _birds_manifest, "Black_footed_Albatross", "is not of the form 'NNN.Name'"),
        ("birds", _birds_manifest, "abc.Albatross", "is not of the form 'NNN.Name'"),
        ("flowers", _flowers_manifest, "17.Rose", "is not an integer string like '17'"),
        ("flowers", _flowers_manifest, "", "is not an integer string like '17'"),
    ],
)
def test_bad_class_string(tmp_path, dataset, make, cls, message):
    data = make()
    data["data"][1]["class"] = cls
    path = _write(tmp_path / "c.json", data)
    with pytest.raises(ManifestError, match=message) as exc:
        load_manifest(path, dataset)
    assert f"{path} item 1: class {cls!r}" in str(exc.value)


def test_duplicate_image(tmp_path):
    data = _birds_manifest()
    data["data"].append(dict(data["data"][1]))
    path = _write(tmp_path / "d.json", data)
    with pytest.raises(ManifestError, match=r"appears twice \(items 1 and 3\)") as exc:
        load_manifest(path, "birds")
    assert str(path) in str(exc.value) and "Black_Footed_Albatross_0009_34.jpg" in str(exc.value)


def test_duplicate_places_image_after_dropping_the_letter(tmp_path):
    data = _places_manifest()
    data["data"][2]["image"] = "B/bedroom/x.jpg"  # the same file as item 0 once 2 chars are dropped
    with pytest.raises(ManifestError, match=r"items 0 and 2"):
        load_manifest(_write(tmp_path / "p.json", data), "places")


@pytest.mark.parametrize("dataset, make, key", [("birds", _birds_manifest, "audio"),
                                                ("flowers", _flowers_manifest, "wav")])
def test_audio_given_as_a_string(tmp_path, dataset, make, key):
    data = make()
    data["data"][2][key] = "x/y_0.wav"
    path = _write(tmp_path / "s.json", data)
    with pytest.raises(ManifestError) as exc:
        load_manifest(path, dataset)
    assert f"{path} item 2: '{key}' must be a list of strings, found str" in str(exc.value)


@pytest.mark.parametrize("bad", [[], ["a.wav", 3], None])
def test_audio_list_must_hold_strings(tmp_path, bad):
    data = _birds_manifest()
    data["data"][0]["audio"] = bad
    with pytest.raises(ManifestError, match=r"item 0: "):
        load_manifest(_write(tmp_path / "a.json", data), "birds")


def test_text_given_as_a_string(tmp_path):
    data = _birds_manifest()
    data["data"][1]["text"] = "one caption"
    with pytest.raises(ManifestError, match=r"item 1: 'text' must be a list of strings"):
        load_manifest(_write(tmp_path / "t.json", data), "birds")


def test_unknown_dataset(tmp_path):
    with pytest.raises(ManifestError, match="unknown dataset 'cars'"):
        load_manifest(_write(tmp_path / "u.json", _birds_manifest()), "cars")
