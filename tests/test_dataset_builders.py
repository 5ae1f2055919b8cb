"""prepare_manifests.py / s2i/data/dataset_builders.py on the raw CUB, Oxford-102 and Places layouts in miniature."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from s2i.config import ConfigError
from s2i.data import dataset_builders as db
from s2i.data.manifests import ManifestError, load_manifest

REPO = Path(__file__).resolve().parents[1]
# A stage script at the repository root, not part of the installed packages: load it from its file.
_spec = importlib.util.spec_from_file_location("prepare_manifests", REPO / "prepare_manifests.py")
prepare_manifests = sys.modules.setdefault("prepare_manifests", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(prepare_manifests)  # registered first: dataclasses look their module up there

@pytest.fixture(autouse=True)
def _outside_cwd(tmp_path, monkeypatch):
    """Runs from a folder of its own, so the raw data under tmp_path is outside the working directory
    (paths are written absolute) wherever pytest itself was started."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")


# ---------------------------------------------------------------------------------------------------
# CUB-200-2011 in miniature: 4 classes, 9 images, listed in images.txt out of class order


CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]
# (image id, class id, file stem, is_training_image), in images.txt order
CUB_IMAGES = [
    (1, 2, "Laysan_Albatross_0002_1027", 1),
    (2, 1, "Black_Footed_Albatross_0046_18", 0),
    (3, 1, "Black_Footed_Albatross_0009_34", 1),
    (4, 3, "Sooty_Albatross_0031_1066", 1),
    (5, 4, "Groove_Billed_Ani_0002_1670", 0),
    (6, 2, "Laysan_Albatross_0001_545", 0),
    (7, 3, "Sooty_Albatross_0001_796", 0),
    (8, 4, "Groove_Billed_Ani_0003_1535", 1),
    (9, 1, "Black_Footed_Albatross_0001_796111", 1),
]


def _jpeg(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, 64, 32)).save(path, "JPEG")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _captions(name: str, n: int = 10) -> list[str]:
    return [f"{name} caption {k}" for k in range(n)]


def make_cub(root: Path) -> Path:
    """``root/CUB_200_2011/...``, ``root/text_c10/...``, ``root/{trainval,test}classes.txt``."""
    cub = root / "CUB_200_2011"
    _write(cub / "classes.txt", "".join(f"{i} {c}\n" for i, c in enumerate(CUB_CLASSES, 1)))
    _write(cub / "images.txt", "".join(f"{i} {CUB_CLASSES[c - 1]}/{s}.jpg\n" for i, c, s, _ in CUB_IMAGES))
    _write(cub / "image_class_labels.txt", "".join(f"{i} {c}\n" for i, c, _, _ in CUB_IMAGES))
    _write(cub / "bounding_boxes.txt", "".join(f"{i} {i}.0 {i + 1}.5 {10 * i}.0 {5 * i}.0\n" for i, *_ in CUB_IMAGES))
    _write(cub / "train_test_split.txt", "".join(f"{i} {t}\n" for i, _, _, t in CUB_IMAGES))
    for i, c, s, _ in CUB_IMAGES:
        _jpeg(cub / "images" / CUB_CLASSES[c - 1] / f"{s}.jpg", 20 * i)
        lines = _captions(s)
        if i == 3:  # blank lines are skipped and only the first 10 kept
            lines = lines[:4] + ["", "   "] + lines[4:] + ["an eleventh caption", "a twelfth"]
        _write(root / "text_c10" / CUB_CLASSES[c - 1] / f"{s}.txt", "\n".join(lines) + "\n")
    # the zero-shot lists in an order of their own: the manifest follows classes.txt, not the list
    _write(root / "trainvalclasses.txt", f"{CUB_CLASSES[3]}\n{CUB_CLASSES[0]}\n{CUB_CLASSES[1]}\n")
    _write(root / "testclasses.txt", f"{CUB_CLASSES[2]}\n")
    return root


def _bird(image_id: int) -> dict:
    _, c, s, _ = CUB_IMAGES[image_id - 1]
    cls = CUB_CLASSES[c - 1]
    return {"image": f"{cls}/{s}.jpg", "class": cls, "text": _captions(s),
            "audio": [f"{cls}/{s}_{k}.wav" for k in range(10)],
            "bbox": [float(image_id), image_id + 1.5, 10.0 * image_id, 5.0 * image_id]}


@pytest.fixture
def cub(tmp_path) -> Path:
    return make_cub(tmp_path / "birds")


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_birds_zero_shot_manifests_exactly(cub, capsys):
    paths = prepare_manifests.main(["--dataset", "birds", "--raw", str(cub)])
    assert paths == {"train": cub / "train.json", "test": cub / "test.json"}
    train, test = _read(cub / "train.json"), _read(cub / "test.json")
    # class order (classes.txt), then images.txt order within a class; class 003 is the test class
    assert train["data"] == [_bird(i) for i in (2, 3, 9, 1, 6, 5, 8)]
    assert test["data"] == [_bird(i) for i in (4, 7)]
    assert list(train) == ["image_feature_path", "audio_base_path", "image_base_path", "data"]
    assert train["image_base_path"] == str(cub / "CUB_200_2011" / "images")
    assert train["audio_base_path"] == str(cub / "CUB_200_2011_audio" / "audio" / "0")
    assert train["image_feature_path"] == str(cub / "train" / "image_features_googlenet_caffe.pickle")
    assert test["image_feature_path"] == str(cub / "test" / "image_features_googlenet_caffe.pickle")

    m = load_manifest(cub / "train.json", "birds")
    assert m.labels.tolist() == [0, 0, 0, 1, 1, 3, 3]  # int(class[:3]) - 1
    assert m.audio_path(0, 9) == cub / "CUB_200_2011_audio/audio/0/001.Black_footed_Albatross" \
        / "Black_Footed_Albatross_0046_18_9.wav"
    for i in range(len(m)):
        assert m.image_path(i).is_file()
        assert m.image_path(i) == cub / "CUB_200_2011" / "images" / m.items[i].image
    assert load_manifest(cub / "test.json", "birds").labels.tolist() == [2, 2]

    out = capsys.readouterr().out
    assert "birds train: 3 classes, 7 images, 70 captions" in out
    assert "birds test: 1 classes, 2 images, 20 captions" in out


def test_birds_image_split_mode_uses_train_test_split(cub):
    (cub / "trainvalclasses.txt").unlink()  # not needed in this mode
    prepare_manifests.main(["--dataset", "birds", "--raw", str(cub), "--split_mode", "image"])
    train, test = _read(cub / "train.json"), _read(cub / "test.json")
    assert train["data"] == [_bird(i) for i in (3, 9, 1, 4, 8)]
    assert test["data"] == [_bird(i) for i in (2, 6, 7, 5)]
    assert {e["class"] for e in test["data"]} == set(CUB_CLASSES)


def test_birds_paths_relative_to_the_working_directory(cub, monkeypatch):
    monkeypatch.chdir(cub.parent)
    prepare_manifests.main(["--dataset", "birds", "--raw", "./birds", "--feature_tag", "effnet"])
    train = _read(cub / "train.json")
    assert train["image_base_path"] == "./birds/CUB_200_2011/images"
    assert train["audio_base_path"] == "./birds/CUB_200_2011_audio/audio/0"
    assert train["image_feature_path"] == "./birds/train/image_features_effnet.pickle"
    m = load_manifest(cub / "train.json", "birds")
    assert all(m.image_path(i).is_file() for i in range(len(m)))


def test_birds_overrides_and_other_locations(tmp_path):
    """The Reed et al. download unpacked as cub_icml/ next to a CUB release somewhere else."""
    src = make_cub(tmp_path / "src")
    (src / "cub_icml").mkdir()
    (src / "text_c10").rename(src / "cub_icml" / "text_c10")
    for name in ("trainvalclasses.txt", "testclasses.txt"):
        (src / name).rename(src / "cub_icml" / name)
    out = tmp_path / "out"
    prepare_manifests.main(["--dataset", "birds", "--raw", str(src), "--out_dir", str(out),
                            "--audio_base_path", str(tmp_path / "tts")])
    assert _read(out / "train.json")["data"][0] == _bird(2)
    assert _read(out / "train.json")["audio_base_path"] == str(tmp_path / "tts")
    assert _read(out / "train.json")["image_feature_path"] == str(out / "train" / "image_features_googlenet_caffe.pickle")

    flat = tmp_path / "flat"
    (src / "CUB_200_2011").rename(tmp_path / "CUB")
    prepare_manifests.main(["--dataset", "birds", "--raw", str(src), "--out_dir", str(flat),
                            "--cub_dir", str(tmp_path / "CUB"), "--text_dir", str(src / "cub_icml" / "text_c10"),
                            "--train_classes", str(src / "cub_icml" / "testclasses.txt"),
                            "--test_classes", str(src / "cub_icml" / "trainvalclasses.txt")])
    assert [e["class"] for e in _read(flat / "train.json")["data"]] == [CUB_CLASSES[2]] * 2


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "CUB_200_2011" / "images.txt").unlink(), r"CUB_200_2011/images.txt does not exist"),
    (lambda r: (r / "CUB_200_2011" / "images" / CUB_CLASSES[3] / "Groove_Billed_Ani_0003_1535.jpg").unlink(),
     r"images.txt line 8: image file .*Groove_Billed_Ani_0003_1535.jpg does not exist .*--no-check_images"),
    (lambda r: _edit(r / "testclasses.txt", CUB_CLASSES[2], "003.Sooty_albatross"),
     r"testclasses.txt line 1: class '003.Sooty_albatross' does not exist in .*classes.txt"),
    (lambda r: _edit(r / "CUB_200_2011" / "images.txt", "9 001.", "4 001."),
     r"images.txt line 9: id 4 already appears on line 4"),
    (lambda r: _edit(r / "CUB_200_2011" / "images.txt", "9 001.", "nine 001."),
     r"images.txt line 9: expected 'id class_name/file.jpg', found 'nine 001"),
    (lambda r: (r / "text_c10" / CUB_CLASSES[1] / "Laysan_Albatross_0001_545.txt").unlink(),
     r"caption file .*Laysan_Albatross_0001_545.txt is missing for image "
     r"'002.Laysan_Albatross/Laysan_Albatross_0001_545.jpg' \(.*images.txt line 6\)"),
    (lambda r: _write(r / "text_c10" / CUB_CLASSES[0] / "Black_Footed_Albatross_0046_18.txt", "one\n\ntwo\n"),
     r"Black_Footed_Albatross_0046_18.txt has 2 non-blank lines; expected at least 10"),
    (lambda r: _write(r / "testclasses.txt", f"{CUB_CLASSES[2]}\n{CUB_CLASSES[0]}\n"),
     r"class '001.Black_footed_Albatross' is in both .*trainvalclasses.txt and .*testclasses.txt"),
    (lambda r: _write(r / "trainvalclasses.txt", f"{CUB_CLASSES[0]}\n\n{CUB_CLASSES[0]}\n"),
     r"trainvalclasses.txt line 3: class '001.Black_footed_Albatross' already listed on line 1"),
    (lambda r: (r / "trainvalclasses.txt").unlink(),
     r"class list file not found \(looked for .*trainvalclasses.txt.*\); pass --train_classes"),
    (lambda r: _edit(r / "CUB_200_2011" / "image_class_labels.txt", "5 4", "5 7"),
     r"image_class_labels.txt line 5: class id 7 is not in .*classes.txt"),
    (lambda r: _edit(r / "CUB_200_2011" / "image_class_labels.txt", "5 4", "5 3"),
     r"images.txt line 5: image '004.Groove_billed_Ani/Groove_Billed_Ani_0002_1670.jpg' is not in the folder "
     r"of its class '003.Sooty_Albatross'"),
    (lambda r: _edit(r / "CUB_200_2011" / "bounding_boxes.txt", "6 6.0", "16 6.0"),
     r"bounding_boxes.txt has no line for image id 6 \(.*images.txt line 6\)"),
    (lambda r: _edit(r / "CUB_200_2011" / "bounding_boxes.txt", "6 6.0 7.5", "6 6.0 x"),
     r"bounding_boxes.txt line 6: expected 'image_id x y w h'"),
])
def test_birds_errors_name_file_and_line(cub, breakage, message):
    breakage(cub)
    with pytest.raises(db.DatasetBuildError, match=message):
        prepare_manifests.main(["--dataset", "birds", "--raw", str(cub)])
    assert not (cub / "train.json").exists() and not (cub / "test.json").exists()


def test_no_check_images_skips_the_disk_check(cub):
    (cub / "CUB_200_2011" / "images" / CUB_CLASSES[3] / "Groove_Billed_Ani_0003_1535.jpg").unlink()
    prepare_manifests.main(["--dataset", "birds", "--raw", str(cub), "--no-check_images"])
    assert len(_read(cub / "train.json")["data"]) == 7


def test_classes_in_neither_list_are_left_out_with_a_warning(cub, capsys):
    _write(cub / "trainvalclasses.txt", f"{CUB_CLASSES[0]}\n")
    prepare_manifests.main(["--dataset", "birds", "--raw", str(cub)])
    assert [e["class"] for e in _read(cub / "train.json")["data"]] == [CUB_CLASSES[0]] * 3
    assert "warning: 2 classes (002.Laysan_Albatross, 004.Groove_billed_Ani) are in neither class list; " \
           "their 4 images are left out" in capsys.readouterr().out


def test_existing_manifests_need_force(cub):
    args = ["--dataset", "birds", "--raw", str(cub)]
    prepare_manifests.main(args)
    (cub / "train.json").write_text("{}")
    with pytest.raises(db.DatasetBuildError, match=r"train.json, .*test.json already exist\(s\); pass --force"):
        prepare_manifests.main(args)
    assert (cub / "train.json").read_text() == "{}"
    prepare_manifests.main([*args, "--force"])
    assert len(_read(cub / "train.json")["data"]) == 7
    assert sorted(p.name for p in cub.iterdir() if p.is_file()) == ["test.json", "testclasses.txt", "train.json",
                                                                     "trainvalclasses.txt"]


def test_a_manifest_the_loader_rejects_is_never_installed(tmp_path):
    bad = {"audio_base_path": "a", "data": [{"image": "x.jpg", "class": "oops", "audio": ["a.wav"]}]}
    with pytest.raises(ManifestError, match=r"class 'oops' is not of the form"):
        db.write_manifests({"train": bad}, tmp_path / "out", "birds")
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_prints_one_line_errors(cub, monkeypatch, capsys):
    (cub / "CUB_200_2011" / "classes.txt").unlink()
    monkeypatch.setattr(sys, "argv", ["prepare_manifests.py", "--dataset", "birds", "--raw", str(cub)])
    with pytest.raises(SystemExit) as exc:
        prepare_manifests.cli()
    assert str(exc.value) == f"error: {cub / 'CUB_200_2011' / 'classes.txt'} does not exist"


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "flowers", "--cub_dir", "x"], r"--cub_dir applies to birds only, not flowers"),
    (["--dataset", "places", "--split_mode", "image"], r"--split_mode applies to birds and flowers only"),
    (["--dataset", "birds", "--split_mode", "image", "--train_classes", "x"], r"zero_shot only"),
    (["--dataset", "birds", "--captions_per_image", "0"], r"at least 1"),
])
def test_flags_that_do_not_apply_are_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        prepare_manifests.main(argv)


def test_missing_raw_folder(tmp_path):
    with pytest.raises(db.DatasetBuildError, match=r"raw dataset folder .*nope does not exist \(pass --raw\)"):
        prepare_manifests.main(["--dataset", "birds", "--raw", str(tmp_path / "nope")])


def test_portable_path(tmp_path):
    assert db.portable_path(tmp_path / "a" / "b", tmp_path) == "./a/b"
    assert db.portable_path(tmp_path, tmp_path) == "."
    assert db.portable_path("/elsewhere/x", tmp_path) == "/elsewhere/x"
    assert db.portable_path(tmp_path / ".." / "sibling", tmp_path) == str(tmp_path.parent / "sibling")


# ---------------------------------------------------------------------------------------------------
# Oxford-102 in miniature: 6 images of 3 classes


FLOWER_LABELS = [3, 1, 3, 2, 1, 2]


def make_flowers(root: Path) -> Path:
    for i, c in enumerate(FLOWER_LABELS, 1):
        _jpeg(root / "jpg" / f"image_{i:05d}.jpg", 30 * i)
        _write(root / "text_c10" / f"class_{c:05d}" / f"image_{i:05d}.txt", "\n".join(_captions(f"f{i}")) + "\n")
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([FLOWER_LABELS], dtype=np.uint8)})
    scipy.io.savemat(root / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[6]]),
                                          "tstid": np.array([[3, 4, 5]])})
    _write(root / "trainvalclasses.txt", "class_00003\nclass_00001\n")
    _write(root / "testclasses.txt", "class_00002\n")
    return root


def _flower(i: int) -> dict:
    c = FLOWER_LABELS[i - 1]
    return {"img": f"jpg/image_{i:05d}.jpg", "class": str(c), "text": _captions(f"f{i}"),
            "wav": [f"class_{c:05d}/image_{i:05d}_{k}.wav" for k in range(10)]}


@pytest.fixture
def flowers(tmp_path) -> Path:
    return make_flowers(tmp_path / "flowers")


def test_flowers_zero_shot_manifests_exactly(flowers, capsys):
    prepare_manifests.main(["--dataset", "flowers", "--raw", str(flowers)])
    train, test = _read(flowers / "train.json"), _read(flowers / "test.json")
    assert train == {
        "image_feature_path": str(flowers / "train" / "image_features_googlenet_caffe.pickle"),
        "audio_base_path": str(flowers / "audio"),
        "image_base_path": str(flowers),
        "data": [_flower(i) for i in (2, 5, 1, 3)],
    }
    assert test["data"] == [_flower(4), _flower(6)]
    m = load_manifest(flowers / "train.json", "flowers")
    assert m.labels.tolist() == [0, 0, 2, 2]  # int(class) - 1
    assert all(m.image_path(i).is_file() for i in range(len(m)))
    assert m.audio_path(3, 4) == flowers / "audio" / "class_00003" / "image_00003_4.wav"
    assert load_manifest(flowers / "test.json", "flowers").labels.tolist() == [1, 1]
    assert "flowers train: 2 classes, 4 images, 40 captions" in capsys.readouterr().out


def test_flowers_image_split_mode_uses_setid(flowers):
    prepare_manifests.main(["--dataset", "flowers", "--raw", str(flowers), "--split_mode", "image"])
    assert _read(flowers / "train.json")["data"] == [_flower(i) for i in (2, 6, 1)]
    assert _read(flowers / "test.json")["data"] == [_flower(i) for i in (5, 4, 3)]


@pytest.mark.parametrize("breakage, message", [
    (lambda r: _write(r / "testclasses.txt", "class_00002\nclass_00007\n"),
     r"testclasses.txt line 2: class 'class_00007' does not exist in .*imagelabels.mat \(classes 1..3\)"),
    (lambda r: _write(r / "testclasses.txt", "2\n"), r"testclasses.txt line 1: expected a class like 'class_00001'"),
    (lambda r: (r / "jpg" / "image_00005.jpg").unlink(),
     r"imagelabels.mat entry 5: image file .*image_00005.jpg does not exist"),
    (lambda r: (r / "text_c10" / "class_00003" / "image_00003.txt").unlink(),
     r"caption file .*image_00003.txt is missing for image 'jpg/image_00003.jpg'"),
    (lambda r: scipy.io.savemat(r / "imagelabels.mat", {"lab": np.array([[1, 2]])}),
     r"imagelabels.mat: no variable 'labels' \(found: lab\)"),
    (lambda r: _write(r / "imagelabels.mat", "not a mat file"), r"imagelabels.mat is not a readable MATLAB file"),
    (lambda r: (r / "imagelabels.mat").unlink(), r"Oxford-102 labels file not found .*pass --labels_file"),
])
def test_flowers_errors(flowers, breakage, message):
    breakage(flowers)
    with pytest.raises(db.DatasetBuildError, match=message):
        prepare_manifests.main(["--dataset", "flowers", "--raw", str(flowers)])


def test_flowers_setid_overlap_is_an_error(flowers):
    scipy.io.savemat(flowers / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[2]]),
                                             "tstid": np.array([[3]])})
    with pytest.raises(db.DatasetBuildError, match=r"setid.mat: image 2 is in more than one"):
        prepare_manifests.main(["--dataset", "flowers", "--raw", str(flowers), "--split_mode", "image"])


# ---------------------------------------------------------------------------------------------------
# Places Audio Caption metadata in miniature


def _utt(n: int, image: str) -> dict:
    return {"uttid": f"U{n}", "speaker": f"S{n % 3}", "asr_text": f"words of utterance {n}",
            "wav": f"wavs/{n % 4}/utterance_{n}.wav", "image": image}


PLACES_ENTRIES = [
    _utt(0, "l/living_room/00000001.jpg"),
    _utt(1, "b/bedroom/00000002.jpg"),
    _utt(2, "a/attic/00000003.jpg"),            # not one of the 7 classes
    _utt(3, "k/kitchenette/00000004.jpg"),
    _utt(4, "b/bedroom/00000005.jpg"),
    _utt(5, "d/dinette/home/00000006.jpg"),     # Places205 sub-category folder
    _utt(6, "h/hotel_room/00000007.jpg"),
    _utt(7, "l/living_room/00000008.jpg"),
    _utt(8, "d/dining_room/00000009.jpg"),      # listed, but the file is missing
]


def make_places(root: Path, layout: str = "subset", entries=PLACES_ENTRIES, split: bool = True) -> Path:
    """Images in the original's subset layout ``data/<class>/...`` or the Places205 ``images256/<l>/<class>/...``."""
    for e in entries:
        if e["image"].startswith("d/dining_room"):
            continue
        _jpeg(root / "data" / e["image"][2:] if layout == "subset" else root / "images256" / e["image"])
    (root / "audio" / "wavs").mkdir(parents=True)
    base = {"image_base_path": "/nonexistent/images256" if layout == "subset" else str(root / "images256"),
            "audio_base_path": str(root / "audio")}
    if split:
        _write(root / "metadata" / "train.json", json.dumps({**base, "data": entries[:6]}))
        _write(root / "metadata" / "val.json", json.dumps({**base, "data": entries[6:]}))
    else:
        _write(root / "metadata" / "train.json", json.dumps({**base, "data": entries}))
    return root


def test_places_train_and_val_metadata(tmp_path, capsys):
    raw = make_places(tmp_path / "Places_subset")
    with pytest.raises(db.DatasetBuildError, match=r"val.json entry 2: image 'd/dining_room/00000009.jpg' "
                                                    r"not found under .*data"):
        prepare_manifests.main(["--dataset", "places", "--raw", str(raw)])
    (raw / "metadata" / "val.json").write_text(json.dumps({"data": PLACES_ENTRIES[6:8]}))
    prepare_manifests.main(["--dataset", "places", "--raw", str(raw)])
    train, test = _read(raw / "train.json"), _read(raw / "test.json")
    # class order of PLACES_CLASSES, then metadata order; the attic entry is dropped
    assert train == {
        "image_feature_path": str(raw / "train" / "image_features_googlenet_caffe.pickle"),
        "audio_base_path": str(raw / "audio" / "wavs"),  # the loader drops 'wavs/' from each wav
        "image_base_path": str(raw / "data"),
        "data": [PLACES_ENTRIES[i] for i in (1, 4, 5, 3, 0)],
    }
    assert test["data"] == [PLACES_ENTRIES[6], PLACES_ENTRIES[7]]
    assert test["audio_base_path"] == str(raw / "wavs")  # no audio_base_path in that file: <raw>/wavs, not there yet
    m = load_manifest(raw / "train.json", "places")
    assert m.labels.tolist() == [0, 0, 1, 5, 6]
    assert [m.image_path(i) for i in range(len(m))] == [raw / "data" / PLACES_ENTRIES[i]["image"][2:]
                                                       for i in (1, 4, 5, 3, 0)]
    assert all(m.image_path(i).is_file() for i in range(len(m)))
    assert m.audio_path(0, 0) == raw / "audio" / "wavs" / "1" / "utterance_1.wav"
    assert load_manifest(raw / "test.json", "places").labels.tolist() == [4, 6]
    out = capsys.readouterr().out
    assert "kept 5 of 6 entries (1 outside the 7 classes)" in out
    assert "image_base_path '/nonexistent/images256' does not exist here; using" in out
    assert "places train: 4 classes, 5 images, 5 captions" in out


def test_places_without_the_image_check_keeps_the_missing_image(tmp_path):
    raw = make_places(tmp_path / "P")
    prepare_manifests.main(["--dataset", "places", "--raw", str(raw), "--no-check_images"])
    assert [e["uttid"] for e in _read(raw / "test.json")["data"]] == ["U8", "U6", "U7"]


def test_places_letter_layout_resolves_through_manifest_image_path(tmp_path):
    raw = make_places(tmp_path / "P", layout="places205", entries=PLACES_ENTRIES[:8])
    prepare_manifests.main(["--dataset", "places", "--raw", str(raw)])
    m = load_manifest(raw / "train.json", "places")
    assert m.image_base_path == raw / "images256"
    assert [m.image_path(i) for i in range(len(m))] == [raw / "images256" / PLACES_ENTRIES[i]["image"]
                                                       for i in (1, 4, 5, 3, 0)]
    assert all(m.image_path(i).is_file() for i in range(len(m)))


def test_places_one_metadata_file_is_split_by_class_deterministically(tmp_path):
    entries = [_utt(n, f"{c[0]}/{c}/{n:08d}.jpg") for n, c in
               enumerate([cls for cls in ("bedroom", "kitchenette", "living_room") for _ in range(10)]
                         + ["hotel_room", "a_attic"])]
    entries[-1]["image"] = "a/attic/x.jpg"
    raw = make_places(tmp_path / "P", entries=entries, split=False)
    args = ["--dataset", "places", "--raw", str(raw), "--test_fraction", "0.2", "--seed", "3"]
    prepare_manifests.main(args)
    train, test = _read(raw / "train.json")["data"], _read(raw / "test.json")["data"]
    classes = [e["image"].split("/")[1] for e in test]
    assert classes == ["bedroom"] * 2 + ["kitchenette"] * 2 + ["living_room"] * 2  # 20 % per class
    assert [e["image"].split("/")[1] for e in train] == ["bedroom"] * 8 + ["hotel_room"] \
        + ["kitchenette"] * 8 + ["living_room"] * 8  # a class of one image stays in train
    assert {e["uttid"] for e in train} | {e["uttid"] for e in test} == {e["uttid"] for e in entries[:-1]}
    assert all(int(a["uttid"][1:]) < int(b["uttid"][1:]) for a, b in zip(test, test[1:]) if a["image"].split("/")[1]
               == b["image"].split("/")[1])  # metadata order within a class
    prepare_manifests.main([*args, "--force"])
    assert _read(raw / "test.json")["data"] == test
    prepare_manifests.main([*args[:-1], "4", "--force"])
    assert _read(raw / "test.json")["data"] != test


def test_places_split_helper_rejects_bad_fraction():
    with pytest.raises(db.DatasetBuildError, match=r"--test_fraction must lie strictly between 0 and 1"):
        db.split_stratified([], 1.0, 0)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[1].update(uttid="U0"), r"train.json entry 1: uttid 'U0' already used by entry 0"),
    (lambda d: d[1].pop("wav"), r"train.json entry 1: 'wav' must be a string"),
    (lambda d: d[1].update(image="bedroom/x.jpg"), r"entry 1: image 'bedroom/x.jpg' is not of the form"),
    (lambda d: d[1].update(wav="12/x.wav"), r"entry 1: wav '12/x.wav' does not start with 'wavs/'"),
])
def test_places_metadata_errors(tmp_path, mutate, message):
    entries = [dict(e) for e in PLACES_ENTRIES[:8]]
    mutate(entries)
    raw = make_places(tmp_path / "P", entries=entries)
    with pytest.raises(db.DatasetBuildError, match=message):
        prepare_manifests.main(["--dataset", "places", "--raw", str(raw)])


def test_places_repeated_image_keeps_the_first(tmp_path, capsys):
    entries = [dict(e) for e in PLACES_ENTRIES[:8]]
    entries.append({**entries[1], "uttid": "U99"})  # a second caption of the same image, in val.json
    raw = make_places(tmp_path / "P", entries=entries)
    prepare_manifests.main(["--dataset", "places", "--raw", str(raw)])
    assert "U99" not in {e["uttid"] for e in _read(raw / "test.json")["data"]}
    assert "1 entries repeat an image and are left out, e.g." in capsys.readouterr().out


def test_places_explicit_files_and_overrides(tmp_path):
    raw = make_places(tmp_path / "P", entries=PLACES_ENTRIES[:8])
    with pytest.raises(ConfigError, match=r"--test_fraction/--seed split one metadata file"):
        prepare_manifests.main(["--dataset", "places", "--raw", str(raw), "--test_fraction", "0.5"])
    with pytest.raises(db.DatasetBuildError, match=r"--test_metadata needs --train_metadata"):
        prepare_manifests.main(["--dataset", "places", "--raw", str(raw), "--test_metadata", "x.json"])
    prepare_manifests.main(["--dataset", "places", "--raw", str(raw), "--out_dir", str(tmp_path / "o"),
                            "--train_metadata", str(raw / "metadata" / "train.json"),
                            "--image_base_path", str(raw / "data"), "--audio_base_path", str(tmp_path / "tts")])
    train, test = _read(tmp_path / "o" / "train.json"), _read(tmp_path / "o" / "test.json")
    assert [e["uttid"] for e in test["data"]] == ["U4"]  # one of the two bedrooms; the other classes have one image
    assert [e["uttid"] for e in train["data"]] == ["U1", "U5", "U3", "U0"]
    assert train["audio_base_path"] == str(tmp_path / "tts")
    assert train["image_base_path"] == str(raw / "data")
