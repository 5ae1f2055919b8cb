"""StackGAN/datasets.py: images per branch and speech embeddings (docs/original.md#s1-4, §11.2, §14 #27)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from s2i.config import ConfigError
from s2i.data.images import ImageLoadError
from s2i.data.manifests import ManifestError, load_manifest
from s2i.data.safe_pickle import PickleFileMissingError, PickleFormatError, save_pickle
from StackGAN.config import load_gan_config
from StackGAN.datasets import (
    GanDataset,
    bbox_square,
    center_crop,
    dataset_from_config,
    read_bboxes,
    resize_shorter,
)

REPO = Path(__file__).resolve().parents[1]
CAPTIONS, DIM = 3, 8
RED, GREEN, BLUE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)
# The bird box of item 0: a red 40×40 square at (140, 30) in a 200×100 grey image.
BOX = [140.7, 30.2, 40.9, 40.0]


def _stripes(w: int, h: int) -> Image.Image:
    """Left third red, middle third green, right third blue."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 3] = RED
    arr[:, w // 3: 2 * w // 3] = GREEN
    arr[:, 2 * w // 3:] = BLUE
    return Image.fromarray(arr)


def _boxed() -> Image.Image:
    arr = np.full((100, 200, 3), GREY, np.uint8)
    arr[30:70, 140:180] = RED
    return Image.fromarray(arr)


def _halves(side: int) -> Image.Image:
    """Left half red, right half blue."""
    arr = np.zeros((side, side, 3), np.uint8)
    arr[:, : side // 2] = RED
    arr[:, side // 2:] = BLUE
    return Image.fromarray(arr)


def _noise(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _make(root: Path, images: list[tuple[str, str, Image.Image, list | None]], tag: str = "t",
          rows: int | None = None, captions: int = CAPTIONS, split: str = "train") -> tuple[Path, Path]:
    """Writes a birds-schema manifest, its images and a (N, C, D) embedding pickle."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    data = []
    for rel, cls, img, box in images:
        path = root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".jpg":
            img.save(path, quality=95)
        else:
            img.save(path)
        item = {"image": rel, "class": cls, "text": [f"t{k}" for k in range(captions)],
                "audio": [f"{Path(rel).stem}_{k}.wav" for k in range(captions)]}
        if box is not None:
            item["bbox"] = box
        data.append(item)
    manifest = root / f"{split}.json"
    manifest.write_text(json.dumps({"audio_base_path": str(root / "audio"),
                                    "image_base_path": str(root / "images"), "data": data}))
    n = len(data) if rows is None else rows
    emb = np.arange(n * captions * DIM, dtype=np.float32).reshape(n, captions, DIM)
    (root / split).mkdir(exist_ok=True)
    pickle = save_pickle(emb, root / split / f"audio_features_{tag}.pickle")
    return manifest, pickle


def _items() -> list:
    return [
        ("001.Red/box.png", "001.Red", _boxed(), BOX),
        ("001.Red/stripes.jpg", "001.Red", _stripes(60, 20), None),
        ("002.Green/grey.png", "002.Green", _noise(30, 40, 1).convert("L"), None),
        ("002.Green/rgba.png", "002.Green", _noise(50, 30, 2).convert("RGBA"), None),
        ("003.Blue/cmyk.jpg", "003.Blue", _noise(24, 24, 3).convert("CMYK"), None),
        ("003.Blue/solid.png", "003.Blue", Image.new("RGB", (33, 21), (255, 0, 127)), None),
        ("003.Blue/halves.png", "003.Blue", _halves(38), None),
    ]


@pytest.fixture
def data(tmp_path) -> tuple[Path, Path]:
    return _make(tmp_path / "birds", _items())


def _ds(data, **kw) -> GanDataset:
    manifest, pickle = data
    kw.setdefault("train", True)
    kw.setdefault("base_size", 16)
    return GanDataset.from_files(manifest, pickle, "birds", **kw)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


# --- image operations ------------------------------------------------------------------------------


def test_bbox_square_by_hand():
    # r = max(int(0.75·30), 10) = 22, centre (int(50/2), int(48/2)) = (25, 24).
    assert bbox_square((10, 20, 30, 8), 100, 50) == (3, 2, 47, 46)
    # A small box gets the floor radius 10.
    assert bbox_square((50, 20, 4, 4), 100, 50) == (42, 12, 62, 32)
    # Clipped at the image border.
    assert bbox_square((0, 0, 20, 20), 100, 50) == (0, 0, 25, 25)
    assert bbox_square((90, 40, 10, 10), 100, 50) == (85, 35, 100, 50)


def test_resize_shorter_and_center_crop():
    assert resize_shorter(Image.new("RGB", (60, 20)), 19).size == (57, 19)
    assert resize_shorter(Image.new("RGB", (20, 61)), 19).size == (19, 57)
    assert resize_shorter(Image.new("RGB", (40, 40)), 304).size == (304, 304)
    img = Image.fromarray(np.arange(57 * 19 * 3, dtype=np.uint8).reshape(19, 57, 3) % 251)
    crop = center_crop(img, 16)
    # torchvision: top = round((19 − 16)/2) = 2, left = round((57 − 16)/2) = 20
    assert np.array_equal(np.asarray(crop), np.asarray(img)[2:18, 20:36])


def test_read_bboxes_truncates(data):
    boxes = read_bboxes(data[0])
    assert boxes[0] == (140, 30, 40, 40) and boxes[1:] == [None] * (len(_items()) - 1)


# --- training samples -----------------------------------------------------------------------------


@pytest.mark.parametrize("branch_num", [1, 2, 3])
def test_training_shapes_and_range(data, branch_num):
    ds = _ds(data, branch_num=branch_num)
    assert ds.imsize == 16 * 2 ** (branch_num - 1) and ds.load_size == int(ds.imsize * 76 / 64)
    sizes = [16 * 2 ** i for i in range(branch_num)]
    for i in range(len(ds)):
        s = ds[i]
        assert [t.shape for t in s["imgs"]] == [(3, k, k) for k in sizes]
        assert [t.shape for t in s["wrong_imgs"]] == [(3, k, k) for k in sizes]
        for t in s["imgs"] + s["wrong_imgs"]:
            assert t.dtype == torch.float32 and t.min() >= -1.0 and t.max() <= 1.0
        assert s["embedding"].shape == (DIM,) and s["embedding"].dtype == torch.float32
        assert torch.equal(s["embedding"], torch.from_numpy(ds.embeddings[i, s["caption_index"]]))
        assert 0 <= s["caption_index"] < CAPTIONS and s["index"] == i
    assert ds[0]["key"] == "001.Red/box" and ds[0]["label"] == 0


def test_paper_size_once(data):
    s = _ds(data, base_size=64, branch_num=3)[1]
    assert [t.shape for t in s["imgs"]] == [(3, 64, 64), (3, 128, 128), (3, 256, 256)]


def test_exact_pixel_values(data):
    # A solid (255, 0, 127) image stays solid through resizing: x/127.5 − 1.
    ds = _ds(data, branch_num=2)
    for t in ds[5]["imgs"]:
        assert torch.allclose(t[0], torch.tensor(1.0)) and torch.allclose(t[1], torch.tensor(-1.0))
        assert torch.allclose(t[2], torch.tensor(127 / 127.5 - 1), atol=1e-6)


def test_random_flip_and_crop(data):
    # 38×38 halves: imsize 32 loads at int(32·76/64) = 38 (no resize), so a crop's first column is red
    # unless the crop was mirrored; the crop offset moves the red/blue edge.
    ds = _ds(data, branch_num=2)
    left_red, edges = [], set()
    for epoch in range(24):
        ds.set_epoch(epoch)
        img = ds[6]["imgs"][-1]
        red_cols = (img[0].mean(0) > 0.9)
        left_red.append(bool(red_cols[0]))
        edges.add(int(red_cols.sum()))
    assert 0 < sum(left_red) < len(left_red)
    assert len(edges) > 1


def test_image_cache_gives_identical_samples_and_decodes_once(data, monkeypatch):
    """cache_images keeps the decoded images: the same samples, every epoch, from one decode per image."""
    plain, cached = _ds(data, branch_num=2), _ds(data, branch_num=2, cache_images=True)
    decodes = []
    original = GanDataset._decode
    monkeypatch.setattr(GanDataset, "_decode", lambda self, i, box: decodes.append((id(self), i)) or original(self, i, box))
    for epoch in range(3):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            assert _same(plain[i], cached[i])
    per_ds = {k: sum(1 for d, _ in decodes if d == k) for k in (id(plain), id(cached))}
    # plain decodes a real and a wrong image per sample and epoch; the cache decodes each image once.
    assert per_ds[id(plain)] == 3 * 2 * len(plain)
    assert per_ds[id(cached)] == len({i for d, i in decodes if d == id(cached)}) <= len(cached)


def test_class_indices_number_the_split_classes(data):
    ds = _ds(data)
    assert list(ds.classes) == sorted(set(ds.labels.tolist()))
    for i in range(len(ds)):
        s = ds[i]
        assert ds.classes[s["class_index"]] == ds.labels[i]
        assert ds.classes[s["wrong_class_index"]] == ds.labels[s["wrong_index"]]


def test_wrong_image_is_of_another_class(data):
    ds = _ds(data)
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            assert ds.labels[s["wrong_index"]] != ds.labels[i]


def test_bbox_crop_makes_the_box_dominate(data):
    ds = _ds(data, branch_num=2)
    for epoch in range(3):
        ds.set_epoch(epoch)
        img = ds[0]["imgs"][-1]
        red = ((img[0] > 0.9) & (img[1] < -0.9) & (img[2] < -0.9)).float().mean()
        # The 40×40 box inside its 60×60 square: at least (40/60)² of the pixels (without the crop: 8 %).
        assert red > 0.42
    # Evaluation does not crop to the box (as the fork) unless asked to.
    plain = _ds(data, train=False, branch_num=2)[0]["imgs"][-1]
    assert ((plain[0] > 0.9) & (plain[1] < -0.9)).float().mean() < 0.2
    boxed = _ds(data, train=False, branch_num=2, eval_bbox_crop=True)[0]["imgs"][-1]
    assert ((boxed[0] > 0.9) & (boxed[1] < -0.9)).float().mean() > 0.42


def test_determinism_per_seed_epoch_index(data):
    a, b = _ds(data), _ds(data)
    a.set_epoch(3)
    b.set_epoch(3)
    for i in range(len(a)):
        assert _same(a[i], b[i])
    b.set_epoch(4)
    assert not all(_same(a[i], b[i]) for i in range(len(a)))
    c = _ds(data, seed=101)
    c.set_epoch(3)
    assert not all(_same(a[i], c[i]) for i in range(len(a)))


def test_worker_count_does_not_matter(data):
    ds = _ds(data)
    ds.set_epoch(2)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers)
        batches.append(list(loader))
    for x, y in zip(*batches):
        assert _same(x, y)
    batch = batches[0][0]
    assert batch["imgs"][0].shape == (4, 3, 16, 16) and batch["embedding"].shape == (4, DIM)
    assert batch["label"].shape == (4,) and len(batch["key"]) == 4


# --- evaluation samples ---------------------------------------------------------------------------


def test_eval_is_a_centre_crop_with_all_embeddings(data):
    ds = _ds(data, train=False, branch_num=1)
    s = ds[1]
    assert set(s) == {"imgs", "embeddings", "label", "index", "key"}
    assert torch.equal(s["embeddings"], torch.from_numpy(ds.embeddings[1])) and s["embeddings"].shape == (CAPTIONS, DIM)
    # 60×20 stripes → 57×19 → the centre 16×16 lies in the green third.
    img = s["imgs"][0]
    assert img[1].min() > 0.95 and img[0].max() < -0.95 and img[2].max() < -0.95
    first = [ds[i] for i in range(len(ds))]
    ds.set_epoch(7)
    assert all(_same(first[i], ds[i]) for i in range(len(ds)))


def test_eval_allows_one_class(tmp_path):
    items = [(f"001.Red/{k}.png", "001.Red", _noise(20, 20, k), None) for k in range(2)]
    manifest, pickle = _make(tmp_path, items, split="test")
    ds = GanDataset.from_files(manifest, pickle, "birds", train=False, base_size=16, branch_num=1)
    assert len(ds) == 2
    with pytest.raises(ManifestError, match="second class"):
        GanDataset.from_files(manifest, pickle, "birds", train=True, base_size=16, branch_num=1)


def test_one_caption_embeddings_as_2d(tmp_path):
    items = [(f"00{k}.C/{k}.png", f"00{k}.C", _noise(20, 20, k), None) for k in (1, 2)]
    manifest, _ = _make(tmp_path, items, captions=1)
    ds = GanDataset(load_manifest(manifest, "birds"), np.ones((2, DIM), np.float64), train=True,
                    base_size=16, branch_num=1)
    assert ds.captions_per_image == 1 and ds[0]["embedding"].shape == (DIM,)


# --- errors -----------------------------------------------------------------------------------------


def test_row_count_mismatch_names_both_files(tmp_path):
    manifest, pickle = _make(tmp_path, _items(), rows=5)
    with pytest.raises(ManifestError) as exc:
        GanDataset.from_files(manifest, pickle, "birds", train=True)
    assert str(manifest) in str(exc.value) and str(pickle) in str(exc.value) and "5 rows" in str(exc.value)


def test_caption_count_mismatch_names_both_files(tmp_path):
    manifest, _ = _make(tmp_path, _items())
    pickle = save_pickle(np.zeros((len(_items()), CAPTIONS + 1, DIM), np.float32), tmp_path / "other.pickle")
    with pytest.raises(ManifestError) as exc:
        GanDataset.from_files(manifest, pickle, "birds", train=True)
    assert str(manifest) in str(exc.value) and str(pickle) in str(exc.value) and "4 caption" in str(exc.value)


def test_bad_pickle_contents(tmp_path):
    manifest, _ = _make(tmp_path, _items())
    for obj in ([np.zeros((CAPTIONS, DIM))] * 7, np.zeros((7, CAPTIONS, DIM, 1))):
        pickle = save_pickle(obj, tmp_path / "bad.pickle")
        with pytest.raises(PickleFormatError, match="bad.pickle"):
            GanDataset.from_files(manifest, pickle, "birds", train=True)
    with pytest.raises(PickleFileMissingError):
        GanDataset.from_files(manifest, tmp_path / "missing.pickle", "birds", train=True)


def test_missing_and_corrupt_images_name_file_and_item(data):
    manifest, _ = data
    ds = _ds(data, train=False)
    root = manifest.parent / "images"
    (root / "001.Red/stripes.jpg").unlink()
    with pytest.raises(ImageLoadError) as exc:
        ds[1]
    assert "stripes.jpg" in str(exc.value) and f"{manifest} item 1" in str(exc.value)
    (root / "002.Green/grey.png").write_bytes(b"not a png")
    with pytest.raises(ImageLoadError, match=r"grey\.png.*item 2"):
        ds[2]


def test_bad_bbox(tmp_path):
    items = _items()
    items[1] = (*items[1][:3], [1, 2, 3])
    manifest, pickle = _make(tmp_path, items)
    with pytest.raises(ManifestError, match="item 1.*bbox"):
        GanDataset.from_files(manifest, pickle, "birds", train=True)


# --- from a config -----------------------------------------------------------------------------------


def test_dataset_from_config(tmp_path):
    _make(tmp_path / "birds", _items(), tag="gc")
    argv = ["--cfg", str(REPO / "StackGAN/cfg/birds_3stages.yml"), "--data_dir", str(tmp_path / "birds"),
            "--audio_switch", "gc", "--branch_num", "2", "--TREE.BASE_SIZE", "16"]
    with pytest.raises(ConfigError, match=f"TEXT.DIMENSION: {DIM}"):
        dataset_from_config(load_gan_config(argv)[0])
    cfg, _ = load_gan_config([*argv, "--TEXT.DIMENSION", str(DIM)])
    ds = dataset_from_config(cfg)
    assert ds.train and ds.imsize == 32 and ds.seed == 100 and ds.bboxes[0] == (140, 30, 40, 40)
