"""Stage B (teacher image features): image loading, the ten-view protocol, both teachers, the CLI.

The Caffe path runs for real through ``cv2.dnn.readNetFromCaffe`` on a tiny network written here: a
text ``deploy.prototxt`` and a binary ``.caffemodel`` (a ``NetParameter`` protobuf encoded by hand).
Its 1×1 convolution and 112×112 average pooling make the features computable with numpy, so the
test checks the whole protocol (resize, BGR order, ×255, mean, crop offsets, flip direction).
"""

from __future__ import annotations

import json
import pickle
import subprocess

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from prepare_image_features import main
from s2i.config import ConfigError
from s2i.data.images import CROP_OFFSETS, ImageLoadError, caffe_resize, load_image, ten_views
from s2i.data.manifests import load_manifest
from s2i.data.safe_pickle import load_feature_list
from s2i.features.image_features import (
    FeatureFileError,
    PartialResult,
    add_feature_path_to_manifest,
    partial_dir,
    sidecar_path,
)
from s2i.features.teachers import (
    ILSVRC_2012_MEAN_BGR,
    CaffeGoogLeNet,
    EfficientNetLite0,
    TeacherError,
    parse_lite0_layers,
    read_mean_file,
)
from tests.conftest import PYTHON, REPO

# ---------------------------------------------------------------- a tiny Caffe network, by hand


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob(arr: np.ndarray) -> bytes:
    """caffe.proto ``BlobProto``: shape = 7 (``BlobShape``, packed int64 dims = 1), data = 5 (packed float)."""
    arr = np.asarray(arr, dtype="<f4")
    return _field(7, _field(1, b"".join(_varint(d) for d in arr.shape))) + _field(5, arr.tobytes())


def write_caffemodel(path, layers: dict[str, list[np.ndarray]]) -> None:
    """``NetParameter`` (name = 1, layer = 100) whose ``LayerParameter``s (name = 1, blobs = 7) hold weights."""
    body = _field(1, b"tiny")
    for name, blobs in layers.items():
        body += _field(100, _field(1, name.encode()) + b"".join(_field(7, _blob(b)) for b in blobs))
    path.write_bytes(body)


TINY_PROTOTXT = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 224 dim: 224 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "pool5/7x7_s1" type: "Pooling" bottom: "conv1" top: "pool5/7x7_s1"
        pooling_param { pool: AVE kernel_size: 112 stride: 112 } }
"""
# out0 = B, out1 = 2·G + 1, out2 = R − B/2 (input blob channels are B, G, R).
CONV_W = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [-0.5, 0.0, 1.0]], dtype=np.float32)
CONV_B = np.array([0.0, 1.0, 0.0], dtype=np.float32)
MEAN_BGR = (100.0, 110.0, 120.0)


@pytest.fixture(scope="module")
def tiny_caffe(tmp_path_factory):
    root = tmp_path_factory.mktemp("caffe")
    (root / "deploy.prototxt").write_text(TINY_PROTOTXT)
    write_caffemodel(root / "tiny.caffemodel", {"conv1": [CONV_W.reshape(3, 3, 1, 1), CONV_B]})
    mean_image = np.empty((3, 256, 256), np.float64)
    for c, m in enumerate(MEAN_BGR):  # varies over H, W but averages to m
        mean_image[c] = m + np.linspace(-5, 5, 256)[None, :]
    np.save(root / "mean.npy", mean_image)
    return root


def _reference_features(rgb01: np.ndarray, mean_bgr, flip: str) -> np.ndarray:
    """The original's ten views through the tiny net, in numpy, written independently of s2i.data.images."""
    img = cv2.resize(rgb01, (227, 227), interpolation=cv2.INTER_LINEAR)  # a downscale: equal to skimage order 1
    chw = img.transpose(2, 0, 1)[::-1].astype(np.float64) * 255.0 - np.asarray(mean_bgr)[:, None, None]
    flipped = np.fliplr(chw) if flip == "vertical" else chw[:, :, ::-1]
    boxes = [(0, 0, 224, 224), (3, 0, 227, 224), (1, 1, 225, 225), (0, 3, 224, 227), (3, 3, 227, 227)]  # docs/original.md#s3
    feats = []
    for src in (chw, flipped):
        for x0, y0, x1, y1 in boxes:
            view = src[:, y0:y1, x0:x1]
            conv = np.einsum("oc,chw->ohw", CONV_W, view) + CONV_B[:, None, None]
            feats.append(conv.reshape(3, 2, 112, 2, 112).mean(axis=(2, 4)).reshape(-1))
    return np.stack(feats)


def _gradient_image(h: int = 256, w: int = 240, seed: int = 0) -> np.ndarray:
    """Ramps in different directions per channel plus texture: no symmetry a wrong crop or flip could hide in."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx / w, yy / h, 0.5 + 0.4 * np.sin(xx / 9.0) * np.cos(yy / 13.0)], axis=2)
    return np.clip(img + rng.normal(0, 0.02, img.shape).astype(np.float32), 0, 1)


def _save_png(arr01: np.ndarray, path) -> None:
    Image.fromarray(np.rint(arr01 * 255).astype(np.uint8)).save(path)


# ---------------------------------------------------------------- image loading


def test_load_image_modes(tmp_path):
    rgb = (np.random.default_rng(1).random((20, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    got = load_image(tmp_path / "rgb.png")
    assert got.dtype == np.float32 and got.shape == (20, 24, 3)
    np.testing.assert_allclose(got, rgb / 255.0, atol=1e-6)

    gray = rgb[:, :, 0]
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    got = load_image(tmp_path / "gray.png")
    assert got.shape == (20, 24, 3)
    for c in range(3):
        np.testing.assert_allclose(got[:, :, c], gray / 255.0, atol=1e-6)

    # Alpha is dropped, not composited: a fully transparent pixel keeps its colour (caffe.io.load_image).
    rgba = np.dstack([rgb, np.zeros((20, 24), np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_allclose(load_image(tmp_path / "rgba.png"), rgb / 255.0, atol=1e-6)
    Image.fromarray(np.dstack([gray, np.full_like(gray, 7)]), "LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(load_image(tmp_path / "la.png")[:, :, 1], gray / 255.0, atol=1e-6)

    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=100)
    got = load_image(tmp_path / "cmyk.jpg")
    with Image.open(tmp_path / "cmyk.jpg") as im:
        assert im.mode == "CMYK"
        expected = np.asarray(im.convert("RGB")) / 255.0
    np.testing.assert_allclose(got, expected, atol=1e-6)

    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "pal.png")
    np.testing.assert_allclose(load_image(tmp_path / "pal.png"), np.asarray(pal.convert("RGB")) / 255.0, atol=1e-6)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal_t.png", transparency=0)
    np.testing.assert_allclose(load_image(tmp_path / "pal_t.png"), np.asarray(pal.convert("RGB")) / 255.0, atol=1e-6)

    g16 = (np.arange(20 * 24, dtype=np.uint16).reshape(20, 24) * 130)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(load_image(tmp_path / "g16.png")[:, :, 2], g16 / 65535.0, atol=1e-6)


def test_load_image_errors_name_file_and_item(tmp_path):
    with pytest.raises(ImageLoadError, match=r"missing\.png \(train\.json item 3\) does not exist"):
        load_image(tmp_path / "missing.png", where="train.json item 3")
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match="junk.png.*could not be decoded"):
        load_image(tmp_path / "junk.png")
    _save_png(np.full((64, 64, 3), 0.5, np.float32), tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cut.png.*could not be decoded"):
        load_image(tmp_path / "cut.png")
    _save_png(np.zeros((8, 40, 3), np.float32), tmp_path / "tiny.png")
    with pytest.raises(ImageLoadError, match=r"tiny.png is 40×8 pixels, smaller than the minimum side of 16"):
        load_image(tmp_path / "tiny.png")
    assert load_image(tmp_path / "tiny.png", min_side=8).shape == (8, 40, 3)


# ---------------------------------------------------------------- resize and views


def test_caffe_resize_downscale_equals_bilinear_and_constant_image():
    img = np.random.default_rng(2).random((300, 257, 3)).astype(np.float32) * 0.6 + 0.2
    got = caffe_resize(img, (227, 227))
    ref = cv2.resize(img, (227, 227), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(got, ref, atol=2e-6)
    flat = np.full((30, 40, 3), 0.25, np.float32)
    np.testing.assert_array_equal(caffe_resize(flat, (227, 227)), np.full((227, 227, 3), 0.25, np.float32))


def test_caffe_resize_upscale_edges_blend_towards_the_minimum():
    # 2 → 4 samples at source positions −0.25, 0.25, 0.75, 1.25 (half-pixel centres). Outside the image
    # scikit-image's mode='constant' reads 0 of the min–max scaled image, i.e. the image minimum.
    img = np.array([[0.2, 1.0], [0.6, 0.6]], np.float32)[:, :, None]
    got = caffe_resize(img, (2, 4))[:, :, 0]
    scaled = (img[:, :, 0] - 0.2) / 0.8
    row = lambda a, b: [0.75 * a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, 0.75 * b]  # noqa: E731
    expected = np.array([row(*scaled[0]), row(*scaled[1])]) * 0.8 + 0.2
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_ten_views_offsets_and_flips():
    chw = np.arange(2 * 10 * 10, dtype=np.float32).reshape(2, 10, 10)
    for flip, flipped in (("vertical", chw[:, ::-1, :]), ("horizontal", chw[:, :, ::-1])):
        views = ten_views(chw, 7, flip)
        assert views.shape == (10, 2, 7, 7)
        for k, (x, y) in enumerate(CROP_OFFSETS):
            np.testing.assert_array_equal(views[k], chw[:, y:y + 7, x:x + 7])
            np.testing.assert_array_equal(views[5 + k], flipped[:, y:y + 7, x:x + 7])
    # The original's "flip" is np.fliplr on CHW, which turns the image upside down.
    np.testing.assert_array_equal(ten_views(chw, 7, "vertical")[5], np.fliplr(chw)[:, 0:7, 0:7])
    with pytest.raises(ValueError, match="flip"):
        ten_views(chw, 7, "diagonal")
    with pytest.raises(ValueError, match=r"\(C, 227, 227\)"):
        ten_views(chw, 224, "vertical")


# ---------------------------------------------------------------- the Caffe teacher through OpenCV


def test_read_mean_file(tmp_path, tiny_caffe):
    np.testing.assert_allclose(read_mean_file(tiny_caffe / "mean.npy"), MEAN_BGR, atol=1e-9)
    np.save(tmp_path / "bad.npy", np.zeros((4, 4)))
    with pytest.raises(TeacherError, match=r"\(3, H, W\) or \(3,\)"):
        read_mean_file(tmp_path / "bad.npy")


@pytest.mark.parametrize("flip", ["vertical", "horizontal"])
def test_caffe_teacher_matches_the_numpy_protocol(tiny_caffe, tmp_path, flip):
    teacher = CaffeGoogLeNet(tiny_caffe / "deploy.prototxt", tiny_caffe / "tiny.caffemodel",
                             read_mean_file(tiny_caffe / "mean.npy"), device="cpu")
    assert teacher.dim == 12 and teacher.crop == 224
    img = _gradient_image()
    _save_png(img, tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    views = ten_views(teacher.prepare(loaded), 224, flip)
    got = teacher.forward(views)
    expected = _reference_features(loaded, MEAN_BGR, flip)
    assert got.shape == (10, 12) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-3)
    other = "horizontal" if flip == "vertical" else "vertical"
    assert np.abs(_reference_features(loaded, MEAN_BGR, other)[5:] - got[5:]).max() > 1.0
    # x and y of the crop offsets are not interchangeable, and the channel order matters.
    swapped = teacher.forward(np.stack([teacher.prepare(loaded)[:, x:x + 224, y:y + 224] for x, y in CROP_OFFSETS]))
    assert np.abs(swapped - got[:5]).max() > 0.5
    rgb_order = teacher.forward(views[:, ::-1].copy())
    assert np.abs(rgb_order - got).max() > 1.0


def _shape_image(colour, shape, k, size=64):
    im = Image.new("RGB", (size, size), (128, 128, 128))
    draw = ImageDraw.Draw(im)
    o = 8 + 3 * k
    box = [o, o, o + size // 2, o + size // 2]
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
    return im


def _shapes_dataset(root, per_class=(2, 1), with_feature_path=False):
    """A few shapes-like images in the birds schema: 2 colours × 2 shapes."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    classes = [((220, 20, 20), "circle"), ((220, 20, 20), "square"), ((30, 60, 220), "circle"),
               ((30, 60, 220), "triangle")]
    for split, n in zip(("train", "test"), per_class):
        data = []
        for ci, (rgb, shape) in enumerate(classes):
            for k in range(n):
                name = f"{split}_{ci}_{k}.png"
                _shape_image(rgb, shape, k).save(root / "images" / name)
                data.append({"image": name, "class": f"{ci + 1:03d}.c{ci}", "text": ["a shape"],
                             "audio": [f"{name}_0.wav"]})
        raw = {"audio_base_path": "audio", "image_base_path": "images", "note": "kept", "data": data}
        if with_feature_path:
            raw["image_feature_path"] = f"{split}/feats.pickle"
        (root / f"{split}.json").write_text(json.dumps(raw))
    return root


def _caffe_args(tiny_caffe, root, *extra):
    return ["--dataset", "shapes", "--data_root", str(root), "--prototxt", str(tiny_caffe / "deploy.prototxt"),
            "--caffemodel", str(tiny_caffe / "tiny.caffemodel"), "--mean_file", str(tiny_caffe / "mean.npy"),
            "--no-progress", *extra]


def test_cli_caffe_pickle_sidecar_manifest_and_skip(tiny_caffe, tmp_path, capsys):
    root = _shapes_dataset(tmp_path / "shapes")
    summary = main(_caffe_args(tiny_caffe, root, "--batch_size", "3"))
    teacher = CaffeGoogLeNet(tiny_caffe / "deploy.prototxt", tiny_caffe / "tiny.caffemodel", MEAN_BGR, device="cpu")
    assert summary["teacher"] == "caffe-googlenet" and summary["flip"] == "vertical" and summary["dim"] == 12
    for split, n in (("train", 8), ("test", 4)):
        pkl = root / split / "image_features_googlenet_caffe.pickle"
        feats = load_feature_list(pkl, expected_len=n, expected_views=10, expected_dim=12)
        assert all(f.dtype == np.float32 for f in feats)
        assert pkl.read_bytes()[:2] == b"\x80\x02"  # pickle protocol 2, readable by the Python 2 tools
        raw = pickle.loads(pkl.read_bytes())
        assert isinstance(raw, list) and isinstance(raw[0], np.ndarray)
        manifest = load_manifest(root / f"{split}.json", "shapes")
        assert manifest.image_feature_path.resolve() == pkl.resolve()
        assert json.loads((root / f"{split}.json").read_text())["note"] == "kept"
        # Row order = manifest order: item 1's features are those of item 1's image.
        img = load_image(manifest.image_path(1))
        np.testing.assert_allclose(feats[1], teacher.forward(ten_views(teacher.prepare(img), 224, "vertical")),
                                   rtol=1e-6, atol=1e-4)
        side = json.loads(sidecar_path(pkl).read_text())
        s = side["settings"]
        assert s["teacher"] == "caffe-googlenet" and s["layers"] == ["pool5/7x7_s1"]
        assert s["weights"]["caffemodel_sha256"] and s["weights"]["prototxt_sha256"]
        assert s["normalization"]["mean_bgr"] == pytest.approx(MEAN_BGR)
        assert "mean.npy" in s["weights"]["mean_source"]
        assert s["image_size"] == 224 and s["dim"] == 12
        assert s["views"]["flip"] == "vertical" and s["views"]["resize_to"] == [227, 227]
        assert s["views"]["crop_offsets_xy"] == [list(o) for o in CROP_OFFSETS]
        assert side["output"]["num_images"] == n and side["output"]["dim"] == 12
        assert side["manifest"]["path"] == str((root / f"{split}.json").resolve())
    assert not list(root.rglob("*.partial"))

    before = (root / "train" / "image_features_googlenet_caffe.pickle").stat().st_mtime_ns
    capsys.readouterr()
    summary = main(_caffe_args(tiny_caffe, root))
    assert all(r["skipped"] for r in summary["splits"].values())
    assert "up to date" in capsys.readouterr().out
    assert (root / "train" / "image_features_googlenet_caffe.pickle").stat().st_mtime_ns == before

    summary = main(_caffe_args(tiny_caffe, root, "--flip", "horizontal", "--splits", "test"))
    assert not summary["splits"]["test"]["skipped"] and "settings changed: views" in capsys.readouterr().out
    summary = main(_caffe_args(tiny_caffe, root, "--flip", "horizontal", "--splits", "test", "--force"))
    assert not summary["splits"]["test"]["skipped"]


def test_cli_refuses_to_overwrite_foreign_features(tiny_caffe, tmp_path):
    root = _shapes_dataset(tmp_path / "shapes", with_feature_path=True)
    (root / "train").mkdir()
    (root / "train" / "feats.pickle").write_bytes(b"the authors' released features")
    with pytest.raises(FeatureFileError, match="has no sidecar.*--force"):
        main(_caffe_args(tiny_caffe, root, "--splits", "train"))
    main(_caffe_args(tiny_caffe, root, "--splits", "train", "--force"))
    assert len(load_feature_list(root / "train" / "feats.pickle")) == 8


def test_cli_resumes_from_partial_chunks(tiny_caffe, tmp_path):
    root = _shapes_dataset(tmp_path / "shapes", per_class=(3, 1))
    main(_caffe_args(tiny_caffe, root, "--splits", "train", "--chunk_size", "5"))
    pkl = root / "train" / "image_features_googlenet_caffe.pickle"
    side = json.loads(sidecar_path(pkl).read_text())
    key = {"settings": side["settings"],
           "manifest": {k: side["manifest"][k] for k in ("num_images", "images_sha256")}}
    sidecar_path(pkl).unlink()
    pkl.unlink()
    partial = PartialResult(pkl, key)  # as if a run had been killed after its first chunk
    partial.save(0, 5, np.full((5, 10, 12), 7.0, np.float32))
    summary = main(_caffe_args(tiny_caffe, root, "--splits", "train", "--chunk_size", "5"))
    feats = load_feature_list(pkl, expected_len=12)
    assert all((f == 7.0).all() for f in feats[:5]) and not (feats[5] == 7.0).all()
    assert summary["splits"]["train"]["num_images"] == 12
    assert not partial.root.exists()


def test_interrupted_run_leaves_no_pickle_and_resumes(tiny_caffe, tmp_path, capsys, monkeypatch):
    root = _shapes_dataset(tmp_path / "shapes", per_class=(3, 1))
    args = _caffe_args(tiny_caffe, root, "--splits", "train", "--chunk_size", "3", "--batch_size", "3")
    real_forward, calls = CaffeGoogLeNet.forward, []

    def killed_in_third_chunk(self, views):
        calls.append(len(views))
        if len(calls) == 4:  # call 1 is the probe at start-up, then one call per chunk of 3 images
            raise KeyboardInterrupt
        return real_forward(self, views)

    monkeypatch.setattr(CaffeGoogLeNet, "forward", killed_in_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    monkeypatch.setattr(CaffeGoogLeNet, "forward", real_forward)
    pkl = root / "train" / "image_features_googlenet_caffe.pickle"
    assert not pkl.exists() and not sidecar_path(pkl).exists()
    assert len(list(partial_dir(pkl).glob("chunk_*.npy"))) == 2  # images 0-5 were finished
    capsys.readouterr()
    main(args)
    assert "resuming, 6 of 12 images already done" in capsys.readouterr().out
    resumed = load_feature_list(pkl)
    main([*args, "--force"])
    for a, b in zip(resumed, load_feature_list(pkl)):
        np.testing.assert_array_equal(a, b)


def test_cli_errors_are_one_line(tiny_caffe, tmp_path):
    root = _shapes_dataset(tmp_path / "shapes")
    with pytest.raises(TeacherError, match=r"the Caffe weights .*nope.caffemodel \(--caffemodel\) does not exist"):
        main(["--dataset", "shapes", "--data_root", str(root), "--prototxt", str(tiny_caffe / "deploy.prototxt"),
              "--caffemodel", str(tmp_path / "nope.caffemodel")])
    with pytest.raises(TeacherError, match="needs the Caffe weights: pass --caffemodel"):
        main(["--dataset", "shapes", "--data_root", str(root), "--prototxt", str(tiny_caffe / "deploy.prototxt")])
    (tmp_path / "garbage.caffemodel").write_bytes(b"\xff\x00garbage")
    with pytest.raises(TeacherError, match="OpenCV could not read the Caffe model"):
        main(_caffe_args(tiny_caffe, root)[:6] + ["--caffemodel", str(tmp_path / "garbage.caffemodel")])
    with pytest.raises(TeacherError, match="has no layer 'pool5/nope'"):
        main(_caffe_args(tiny_caffe, root, "--layer", "pool5/nope"))
    (root / "images" / "train_1_0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageLoadError, match=r"train_1_0.png \(.*train.json item 2\) could not be decoded"):
        main(_caffe_args(tiny_caffe, root))
    (root / "images" / "train_0_1.png").unlink()
    with pytest.raises(ImageLoadError, match=r"train_0_1.png \(.*train.json item 1\) does not exist"):
        main(_caffe_args(tiny_caffe, root))

    proc = subprocess.run([PYTHON, str(REPO / "prepare_image_features.py"), "--dataset", "shapes", "--data_root",
                           str(root), "--prototxt", str(tmp_path / "missing.prototxt"), "--caffemodel",
                           str(tmp_path / "missing.caffemodel")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "missing.prototxt (--prototxt) does not exist" in proc.stderr


def test_add_feature_path_keeps_the_rest_of_the_manifest(tmp_path, monkeypatch):
    raw = {"image_base_path": "images", "audio_base_path": "audio", "extra": [1, 2],
           "data": [{"image": "a.png", "class": "001.x", "audio": ["a.wav"]}]}
    (tmp_path / "train.json").write_text(json.dumps(raw))
    monkeypatch.chdir(tmp_path)
    written = add_feature_path_to_manifest(tmp_path / "train.json", tmp_path / "train" / "f.pickle")
    assert written == "./train/f.pickle"
    new = json.loads((tmp_path / "train.json").read_text())
    assert list(new) == ["image_base_path", "audio_base_path", "extra", "image_feature_path", "data"]
    assert {k: v for k, v in new.items() if k != "image_feature_path"} == raw
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------- EfficientNet-Lite0


def test_lite0_layer_parsing():
    specs = parse_lite0_layers("head,stage3:max,block5:avg,stem")
    assert [str(s) for s in specs] == ["head", "stage3:max", "block5", "stem"]
    assert [s.channels for s in specs] == [1280, 40, 80, 32] and specs[1].index == 4
    for bad, msg in (("block16", "blocks 0-15"), ("head:median", "avg' or 'max"), ("conv9", "unknown layer"),
                     ("head,head", "twice"), ("", "empty")):
        with pytest.raises(TeacherError, match=msg):
            parse_lite0_layers(bad)


def test_lite0_features_shape_dtype_and_determinism(tmp_path):
    teacher = EfficientNetLite0(image_size=64, device="cpu")
    assert teacher.dim == 1360 and teacher.default_flip == "horizontal"
    img = np.asarray(_shape_image((30, 60, 220), "triangle", 0), dtype=np.float32) / 255.0
    x = teacher.prepare(img)
    assert x.shape == (3, 67, 67) and x.dtype == np.float32
    # inception-style input scaling: (255·v − 127) / 128; the grey background (128) maps to 1/128.
    assert x[:, 60, 5] == pytest.approx([1 / 128] * 3, abs=1e-6)
    views = ten_views(x, 64, "horizontal")
    a, b = teacher.forward(views), teacher.forward(views)
    assert a.shape == (10, 1360) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    small = EfficientNetLite0("stage2:max", image_size=64, device="cpu")
    assert small.forward(views).shape == (10, 24)
    desc = teacher.describe()
    assert desc["layers"] == ["head", "stage4:max"] and len(desc["weights"]["sha256"]) == 64


def test_lite0_perception_matches_the_teacher_and_passes_gradients_only_to_the_images():
    """The generator's teacher loss sees what stage B's teacher computes (same network, same scaling), and
    training it changes no weight of the network nor its BatchNorm statistics."""
    import torch

    from s2i.features.teachers import Lite0Perception

    teacher = EfficientNetLite0(image_size=64, device="cpu")
    percept = Lite0Perception(image_size=64).train()  # .train() must not put the frozen network in train mode
    assert percept.dims == (1280, 80) and not percept.net.training
    img = np.asarray(_shape_image((30, 60, 220), "triangle", 0), dtype=np.float32) / 255.0
    view = teacher.prepare(img)[None, :, :64, :64].copy()  # a 64-px view, normalised as stage B does
    want = teacher.forward(view)
    x = (torch.from_numpy(view) * (128 / 255) + 127 / 255) * 2 - 1  # the same view in [-1, 1]
    x.requires_grad_(True)
    got = percept(x)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-4, atol=1e-5)
    before = {k: v.clone() for k, v in percept.net.state_dict().items()}
    got.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in percept.net.parameters())
    percept(torch.rand(4, 3, 64, 64) * 2 - 1)  # another forward in "train" mode
    assert all(torch.equal(before[k], v) for k, v in percept.net.state_dict().items())
    # other sizes are resized to image_size first: 128-px images at 64 px
    assert Lite0Perception("stage2:max", image_size=64)(torch.zeros(2, 3, 128, 128)).shape == (2, 24)
    with pytest.raises(TeacherError, match="at least 32"):
        Lite0Perception(image_size=16)


def test_cli_efficientnet_default_teacher(tmp_path):
    root = _shapes_dataset(tmp_path / "shapes", per_class=(1, 1))
    summary = main(["--dataset", "shapes", "--data_root", str(root), "--layers", "stage3:max,stage4:max",
                    "--no-progress", "--splits", "test"])
    assert summary["teacher"] == "efficientnet-lite0" and summary["flip"] == "horizontal" and summary["dim"] == 120
    pkl = root / "test" / "image_features_efficientnet_lite0.pickle"
    assert len(load_feature_list(pkl, expected_len=4, expected_views=10, expected_dim=120)) == 4
    side = json.loads(sidecar_path(pkl).read_text())
    s = side["settings"]
    assert s["normalization"]["name"] == "inception" and s["image_size"] == 128  # the shapes default
    assert s["views"]["flip"] == "horizontal" and s["views"]["resize_to"] == [131, 131]
    assert s["layers"] == ["stage3:max", "stage4:max"] and s["layer_dims"] == [40, 80]
    assert side["output"] == {**side["output"], "num_images": 4, "views": 10, "dim": 120, "pickle_protocol": 2}
    with pytest.raises(ConfigError, match="applies to caffe-googlenet"):
        main(["--dataset", "shapes", "--data_root", str(root), "--teacher", "efficientnet-lite0",
              "--mean_bgr", "1,2,3"])


def test_default_mean_is_the_ilsvrc_mean():
    assert ILSVRC_2012_MEAN_BGR == pytest.approx((104.007, 116.669, 122.679), abs=1e-3)


def test_cli_missing_caffe_files_from_caffe_root(tmp_path):
    root = _shapes_dataset(tmp_path / "shapes", per_class=(1, 1))
    with pytest.raises(TeacherError, match=r"deploy.prototxt \(--prototxt\) does not exist"):
        main(["--dataset", "shapes", "--data_root", str(root), "--caffe_root", str(tmp_path / "caffe")])
