"""Attribute accuracy of generated "shapes" images: does the picture show the colour and shape its caption named?

Reference: no published implementation scores this dataset (it is ours, ``s2i.data.shapes``); the method
is that of Semantic Object Accuracy (Hinz et al. 2020,
``tohinz/semantic-object-accuracy-for-generative-text-to-image-synthesis``): a network trained on real
images checks whether each generated image shows what its caption named. Here the network is the
attribute classifier of :mod:`s2i.evaluation.attribute_classifier` (the "judge"), and every shapes caption
names its image's colour and shape, so the expected answer of each generated image is its test item's
``attributes`` in the manifest.

* :func:`expected_attributes` / :func:`generated_folder`: the expected colour and shape of every image of a
  StackGAN evaluation folder (``flat_<res>/<key with '/' → '__'>_sentence<i>_<k>.png``, named by
  :mod:`s2i.data.naming`; ``key`` is the test item's image path without extension, as in
  ``StackGAN/datasets.py``); :func:`score_folder` scores such a folder.
* :func:`score_attributes`: the registered ``attributes`` metric of stage F: colour, shape and both-right
  accuracy for every voice group, and on the real test images (the ceiling a generator can reach).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from s2i.data.naming import flat_key
from s2i.data.naming import parse_generated_name as parse_flat_name
from s2i.evaluation.attribute_classifier import (
    AttributeClassifier,
    load_classifier,
    manifest_attributes,
    predict,
    score_images,
)
from s2i.metrics.context import EvaluationContext, EvaluationError

__all__ = [
    "CLASSIFIER_NAME",
    "classifier_path",
    "expected_attributes",
    "generated_folder",
    "parse_generated_name",
    "score_attributes",
    "score_folder",
]

CLASSIFIER_NAME = "attribute_classifier.pth"  # where prepare_attribute_classifier.py keeps it in the data root


def parse_generated_name(name: str | Path) -> tuple[str, int, int]:
    """``"001.red_circle__shape_00012_sentence3_0.png"`` → (``"001.red_circle/shape_00012"``, 3, 0).

    The file names of a StackGAN evaluation's ``flat_<res>`` folder (``StackGAN/main.py`` ``evaluate``).

    Raises:
        ValueError: the name is not of that form.
    """
    parsed = parse_flat_name(name)
    if parsed is None:
        raise ValueError(f"{name}: not a generated-image name; expected <key with '/' as '__'>_sentence<i>_<k>.png "
                         "as StackGAN/main.py's evaluation writes into flat_<res>/")
    key, sentence, sample = parsed
    return key.replace("__", "/"), sentence, sample


def expected_attributes(names: Sequence[str | Path], test_manifest: str | Path) -> tuple[list[str], list[str]]:
    """The colour and shape each generated image should show: those of the test item it was generated for.

    Args:
        names: generated file names (or paths), ``<key '/'→'__'>_sentence<i>_<k>.png``.
        test_manifest: the ``test.json`` whose captions the generator was given.

    Raises:
        ValueError: a name is not of that form, or its key is not a test item's image (naming both).
    """
    manifest, attrs = manifest_attributes(test_manifest)
    # Keys as StackGAN/datasets.py makes them: the image path without its extension.
    by_key = {flat_key(str(PurePosixPath(it.image).with_suffix(""))): a for it, a in zip(manifest.items, attrs)}
    colours, shapes = [], []
    for name in names:
        parsed = parse_flat_name(name)
        if parsed is None:
            parse_generated_name(name)  # raises the explanatory error
        key = parsed[0]
        a = by_key.get(key)
        if a is None:
            example = next(iter(by_key))
            raise ValueError(f"{name}: key {key!r} names no item of {test_manifest} ({len(by_key)} items, e.g. "
                             f"{example!r}); was it generated from another dataset's test split?")
        colours.append(a["colour"])
        shapes.append(a["shape"])
    return colours, shapes


def generated_folder(folder: str | Path, test_manifest: str | Path) -> tuple[list[Path], list[str], list[str]]:
    """Every PNG of a ``flat_<res>`` folder (sorted by name) with its expected colour and shape."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"generated-image folder {folder} does not exist")
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise ValueError(f"{folder} holds no .png images; expected StackGAN's flat_<res> evaluation output")
    colours, shapes = expected_attributes(paths, test_manifest)
    return paths, colours, shapes


def score_folder(classifier: AttributeClassifier, folder: str | Path, test_manifest: str | Path,
                 batch_size: int = 128) -> dict[str, Any]:
    """:func:`~s2i.evaluation.attribute_classifier.score_images` of a StackGAN ``flat_<res>`` folder against
    its test manifest's attributes."""
    paths, colours, shapes = generated_folder(folder, test_manifest)
    return score_images(classifier, paths, colours, shapes, batch_size)


def classifier_path(setting: str, data_root: Path) -> Path:
    """The ``--attribute_classifier`` file: ``auto`` is ``<data_root>/attribute_classifier.pth``."""
    return Path(data_root / CLASSIFIER_NAME if setting == "auto" else setting)


def score_attributes(ctx: EvaluationContext) -> dict[str, Any]:
    """The registered ``attributes`` metric (shapes only).

    Returns:
        ``{"attributes": section}``: for each voice group ``"generated, <group>"`` and for
        ``"real test images (ceiling)"``, ``colour_accuracy``, ``shape_accuracy``, ``both_accuracy`` in
        [0, 1] and ``n``. Leaves what the judge saw in each generated image in
        ``ctx.annotations["classifier sees"]``.
    """
    path = classifier_path(ctx.settings.attribute_classifier, ctx.data_root)
    if not path.is_file():
        raise EvaluationError(f"attribute classifier {path} does not exist; train it with "
                              f"`python prepare_attribute_classifier.py --data_root {ctx.data_root}` or pass "
                              f"--attribute_classifier none")
    gen = ctx.generated
    clf, _ = load_classifier(path, ctx.device)
    _, attrs = manifest_attributes(ctx.manifest.path)
    exp_c = [attrs[g.item]["colour"] for g in gen]
    exp_s = [attrs[g.item]["shape"] for g in gen]
    t0 = time.time()
    pred_c, pred_s = predict(clf, [g.path for g in gen])
    pred_c, pred_s = np.array(pred_c), np.array(pred_s)
    flat = np.array([ctx.offsets[g.item] + g.caption for g in gen])
    section = {}
    for name, mask in ctx.groups.items():
        sel = mask[flat]
        if sel.any():
            ok_c = pred_c[sel] == np.array(exp_c)[sel]
            ok_s = pred_s[sel] == np.array(exp_s)[sel]
            section[f"generated, {name}"] = {"colour_accuracy": float(ok_c.mean()),
                                             "shape_accuracy": float(ok_s.mean()),
                                             "both_accuracy": float((ok_c & ok_s).mean()), "n": int(sel.sum())}
    real = score_images(clf, ctx.real_paths, [a["colour"] for a in attrs], [a["shape"] for a in attrs])
    section["real test images (ceiling)"] = {k: real[k] for k in ("colour_accuracy", "shape_accuracy",
                                                                   "both_accuracy", "n")}
    ctx.log(f"attributes: {len(gen)} generated + {len(ctx.real_paths)} real images scored in {time.time() - t0:.1f}s "
            f"by {path}")
    said = [ctx.manifest.items[g.item].class_name.split(".", 1)[-1].replace("_", " ") for g in gen]
    ctx.annotations["classifier sees"] = [f"{c} {s} {'✓' if f'{c} {s}' == want else '✗'}"
                                          for c, s, want in zip(pred_c, pred_s, said)]
    return {"attributes": section}
