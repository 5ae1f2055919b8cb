"""How well teacher image features separate the classes: nearest-class-centre accuracy on the test split.

Each image's feature is the mean of its ten views. Class centres are the means over the *training*
images of each class; a test image is assigned the class of the nearest centre (Euclidean distance,
and cosine similarity as a second column). Test classes absent from training (a compositional split)
fall back to leave-one-out centres over the test split, which the output says.

Evaluate the features the manifests point to (written by prepare_image_features.py; the per-image time
is read from their sidecars):
    python benchmarks/teacher_accuracy.py --dataset shapes
Compute EfficientNet-Lite0 features in memory for several view sizes and layer sets, side by side:
    python benchmarks/teacher_accuracy.py --dataset shapes --compute --image_sizes 224,128 \
        --layer_sets "head,stage3:max,stage4:max;head;stage4:max"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from s2i.data.manifests import DATA_ROOTS, load_manifest
from s2i.data.safe_pickle import load_feature_list
from s2i.features.image_features import iter_features, sidecar_path
from s2i.features.teachers import LITE0_DEFAULT_LAYERS, EfficientNetLite0, parse_lite0_layers


def nearest_centre(train_x, train_y, test_x, test_y, cosine: bool = False) -> tuple[np.ndarray, str]:
    """Predicted labels of ``test_x (N, D)`` by the nearest class centre; and where the centres came from."""
    if cosine:
        train_x = train_x / np.maximum(np.linalg.norm(train_x, axis=1, keepdims=True), 1e-12)
        test_x = test_x / np.maximum(np.linalg.norm(test_x, axis=1, keepdims=True), 1e-12)
    classes = np.unique(test_y)
    if np.isin(classes, train_y).all():
        centres = np.stack([train_x[train_y == c].mean(0) for c in classes])
        d = ((test_x[:, None, :] - centres[None]) ** 2).sum(-1)
        return classes[d.argmin(1)], "train"
    # Leave-one-out on the test split: each image's own class centre excludes the image itself.
    sums = np.stack([test_x[test_y == c].sum(0) for c in classes])
    counts = np.array([(test_y == c).sum() for c in classes], dtype=np.float64)
    d = np.empty((len(test_x), len(classes)))
    for j, c in enumerate(classes):
        own = test_y == c
        centre = np.where(own[:, None], (sums[j] - test_x) / np.maximum(counts[j] - 1, 1), sums[j] / counts[j])
        d[:, j] = ((test_x - centre) ** 2).sum(-1)
        if counts[j] == 1:
            d[own, j] = np.inf
    return classes[d.argmin(1)], "test leave-one-out"


def report(name: str, train_x, train_y, test_x, test_y, class_names: dict[int, str], seconds_per_image) -> None:
    pred, source = nearest_centre(train_x, train_y, test_x, test_y)
    pred_cos, _ = nearest_centre(train_x, train_y, test_x, test_y, cosine=True)
    acc, acc_cos = (pred == test_y).mean() * 100, (pred_cos == test_y).mean() * 100
    parts = ""
    names = [class_names.get(int(c), "") for c in range(max(class_names, default=-1) + 1)]
    if names and all("_" in n for n in names):  # shapes: "001.red_circle" → colour and shape accuracy
        colour = np.array([n.split(".", 1)[-1].split("_")[0] for n in names])
        shape = np.array([n.split(".", 1)[-1].split("_")[1] for n in names])
        parts = (f"  colour {(colour[pred] == colour[test_y]).mean() * 100:5.1f}%"
                 f"  shape {(shape[pred] == shape[test_y]).mean() * 100:5.1f}%")
    timing = f"  {seconds_per_image * 1000:7.1f} ms/image" if seconds_per_image else ""
    print(f"{name:48s} D={train_x.shape[1]:5d}  euclid {acc:5.1f}%  cosine {acc_cos:5.1f}%{parts}{timing}"
          f"  (centres: {source}, {len(test_y)} test images)", flush=True)


def _sidecar_seconds(pickle_path: Path) -> float | None:
    try:
        run = json.loads(sidecar_path(pickle_path).read_text())["run"]
        return run["seconds"] / run["images_computed"] if run.get("images_computed") else None
    except (OSError, KeyError, ValueError, TypeError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--dataset", default="shapes", choices=tuple(DATA_ROOTS), help="manifest schema")
    ap.add_argument("--data_root", help="dataset folder (default ./data/<dataset>)")
    ap.add_argument("--compute", action="store_true", help="compute EfficientNet-Lite0 features in memory instead "
                    "of reading the pickles the manifests point to")
    ap.add_argument("--image_sizes", default="224", help="--compute: comma-separated view sizes")
    ap.add_argument("--layer_sets", default=LITE0_DEFAULT_LAYERS, help="--compute: layer sets separated by ';'")
    ap.add_argument("--flip", default="horizontal", choices=("vertical", "horizontal"), help="--compute: flip")
    ap.add_argument("--batch_size", type=int, default=4, help="--compute: images per network call")
    ap.add_argument("--max_images", type=int, default=0, help="--compute: use only the first N images per split")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data_root or DATA_ROOTS[args.dataset])
    manifests = {s: load_manifest(root / f"{s}.json", args.dataset) for s in ("train", "test")}
    names = {it.label: it.class_name for m in manifests.values() for it in m.items}
    print(f"{root}: {len(manifests['train'])} train / {len(manifests['test'])} test images, {len(names)} classes; "
          f"torch threads {torch.get_num_threads()}")

    if not args.compute:
        feats, labels, secs = {}, {}, []
        for split, m in manifests.items():
            rows = load_feature_list(m.image_feature_path, expected_len=len(m))
            feats[split] = np.stack([r.mean(0) for r in rows])
            labels[split] = m.labels
            secs.append(_sidecar_seconds(Path(m.image_feature_path)))
        side = json.loads(sidecar_path(manifests["train"].image_feature_path).read_text()) \
            if sidecar_path(manifests["train"].image_feature_path).is_file() else {}
        s = side.get("settings", {})
        name = f"{s.get('teacher', '?')} {','.join(s.get('layers', []))} @{s.get('image_size', '?')}"
        per_image = np.mean([x for x in secs if x]) if any(secs) else None
        report(name, feats["train"], labels["train"], feats["test"], labels["test"], names, per_image)
        return

    layer_sets = [parse_lite0_layers(t) for t in args.layer_sets.split(";") if t.strip()]
    union = list(dict.fromkeys(s for ls in layer_sets for s in ls))
    for size in (int(v) for v in args.image_sizes.split(",")):
        teacher = EfficientNetLite0(tuple(union), image_size=size, device="cpu")
        offsets = np.cumsum([0] + [s.channels for s in union])
        cols = {str(s): slice(offsets[i], offsets[i + 1]) for i, s in enumerate(union)}
        feats, labels, total_t, total_n = {}, {}, 0.0, 0
        for split, m in manifests.items():
            n = min(len(m), args.max_images) if args.max_images else len(m)
            t0 = time.perf_counter()
            rows = list(iter_features(m, teacher, args.flip, 0, n, batch_size=args.batch_size))
            total_t += time.perf_counter() - t0
            total_n += n
            feats[split] = np.stack([r.mean(0) for r in rows])
            labels[split] = m.labels[:n]
        for ls in layer_sets:
            idx = np.concatenate([np.arange(cols[str(s)].start, cols[str(s)].stop) for s in ls])
            report(f"efficientnet-lite0 {','.join(str(s) for s in ls)} @{size}", feats["train"][:, idx],
                   labels["train"], feats["test"][:, idx], labels["test"], names, total_t / total_n)


if __name__ == "__main__":
    main()
