"""Exact-value tests for s2i.metrics.inception_score (docs/original.md#s12: StackGAN-inception-model's IS),
shape and layout tests for the torchvision-compatible Inception-v3, and the classifiers on tiny PNGs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from s2i.metrics import get_metric
from s2i.metrics.inception_score import (
    InceptionV3Classifier,
    Lite0Classifier,
    TorchScriptClassifier,
    folder_inception_score,
    inception_score,
    is_classifier,
)
from s2i.metrics.inception_v3 import IMAGENET_MEAN, IMAGENET_STD, InceptionV3, load_inception_v3

# The tests build small TorchScript stand-ins; torch >= 2.10 deprecates the API, not the files.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")


# --------------------------------------------------------------------------- the score


def test_is_of_identical_rows_is_one():
    rng = np.random.default_rng(0)
    for row in (np.full(7, 1 / 7), rng.dirichlet(np.ones(7))):
        mean, std = inception_score(np.tile(row, (20, 1)), splits=10)
        assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_is_of_one_hot_rows_over_equally_used_classes_is_the_class_count():
    probs = np.eye(4)[np.arange(40) % 4]  # every split of 4 rows holds each class once
    assert inception_score(probs, splits=10) == pytest.approx((4.0, 0.0), abs=1e-12)
    assert inception_score(probs, splits=1) == pytest.approx((4.0, 0.0), abs=1e-12)


def test_is_by_hand_with_reference_split_boundaries():
    # Two rows, one split: p_y = (0.75, 0.25).
    kl1 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    kl2 = math.log(1 / 0.75)
    assert inception_score(np.array([[0.5, 0.5], [1.0, 0.0]]), splits=1)[0] == pytest.approx(
        math.exp((kl1 + kl2) / 2), rel=1e-12)
    # N = 5, splits = 2: rows [0, 2) and [2, 5) (i * N // splits), population std over the splits.
    probs = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [1, 0]], dtype=float)
    scores = [2.0, 1.0]
    assert inception_score(probs, splits=2) == pytest.approx((np.mean(scores), np.std(scores)), abs=1e-12)


def test_is_rejects_logits_and_bad_shapes():
    with pytest.raises(ValueError, match="row 0 sums to 3"):
        inception_score(np.array([[1.0, 2.0], [0.5, 0.5]]), splits=1)
    with pytest.raises(ValueError, match="non-negative"):
        inception_score(np.array([[1.5, -0.5], [0.5, 0.5]]), splits=1)
    with pytest.raises(ValueError, match="3 rows cannot be cut into 10 splits"):
        inception_score(np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match=r"2-D array \(N, C\)"):
        inception_score(np.full(4, 0.25), splits=1)
    with pytest.raises(ValueError, match="NaN"):
        inception_score(np.array([[np.nan, 1.0]]), splits=1)


# --------------------------------------------------------------------------- Inception-v3


@pytest.fixture(scope="module")
def inception() -> InceptionV3:
    torch.manual_seed(0)
    return InceptionV3().eval()


def test_inception_v3_logits_shape(inception):
    with torch.no_grad():
        out = inception(torch.randn(2, 3, 299, 299))
        pool = inception.features(torch.randn(1, 3, 299, 299))
    assert out.shape == (2, 1000) and pool.shape == (1, 2048)


def test_inception_v3_has_torchvision_keys_and_shapes(inception):
    shapes = {k: tuple(v.shape) for k, v in inception.state_dict().items()}
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_mean": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "AuxLogits.conv1.conv.weight": (768, 128, 5, 5),
        "AuxLogits.fc.weight": (1000, 768),
        "fc.weight": (1000, 2048),
        "fc.bias": (1000,),
    }
    assert {k: shapes.get(k) for k in expected} == expected
    # torchvision's inception_v3 with aux logits has 27,161,264 parameters.
    assert sum(p.numel() for p in inception.parameters()) == 27_161_264


def test_transform_input_is_torchvision_semantics(inception):
    raw = torch.rand(1, 3, 75, 75)
    normalised = (raw - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        plain = inception.features((raw - 0.5) / 0.5)
        inception.transform_input = True
        try:
            transformed = inception.features(normalised)
        finally:
            inception.transform_input = False
    torch.testing.assert_close(transformed, plain, rtol=1e-4, atol=1e-5)


def test_state_dict_loads_strictly_and_classifies(tmp_path, inception):
    path = tmp_path / "inception_v3_google-test.pth"
    torch.save(inception.state_dict(), path)
    clf = is_classifier(path)
    assert isinstance(clf, InceptionV3Classifier) and clf.name == "IS (Inception-v3 ImageNet)"
    assert clf.net.transform_input and not clf.net.training and clf.net.AuxLogits is not None
    torch.testing.assert_close(clf.net.state_dict(), inception.state_dict(), rtol=0, atol=0)
    probs = clf(np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8))
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-9)

    # DataParallel prefixes and a state dict without the auxiliary head also load.
    state = {f"module.{k}": v for k, v in inception.state_dict().items() if not k.startswith("AuxLogits.")}
    torch.save(state, tmp_path / "no_aux.pth")
    assert load_inception_v3(tmp_path / "no_aux.pth").AuxLogits is None

    broken = dict(inception.state_dict())
    del broken["Mixed_6b.branch1x1.conv.weight"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="Mixed_6b.branch1x1.conv.weight"):
        load_inception_v3(tmp_path / "broken.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no 'fc.weight' key"):
        is_classifier(tmp_path / "other.pth")


# --------------------------------------------------------------------------- other classifiers


class _RangeProbe(torch.nn.Module):
    """Logits (min, max, 0, W - 299): the log-ratios of the posteriors give back the input's range and size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros(x.shape[0])
        return torch.stack([x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), zero, zero + (x.shape[-1] - 299)], dim=1)


def test_torchscript_classifier_gets_299_images_in_minus_one_one(tmp_path):
    path = tmp_path / "probe.pt"
    torch.jit.save(torch.jit.script(_RangeProbe()), str(path))
    clf = is_classifier(path)
    assert isinstance(clf, TorchScriptClassifier) and clf.name == "IS (TorchScript probe.pt)"
    images = np.zeros((2, 3, 40, 40), np.uint8)
    images[1] = 255
    log_p = np.log(clf(images))
    np.testing.assert_allclose(log_p[:, :2] - log_p[:, 2:3], [[-1, -1], [1, 1]], atol=1e-6)
    np.testing.assert_allclose(log_p[:, 3] - log_p[:, 2], 0, atol=1e-9)


def test_unknown_classifier_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'inception' is neither one of \['efficientnet-lite0'\]"):
        is_classifier("inception")


def test_lite0_proxy_on_a_folder_of_pngs(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "samples"
    for cls in range(2):  # class sub-folders, as the generator writes them
        (folder / f"class_{cls}").mkdir(parents=True)
        for i in range(5):
            img = rng.integers(0, 256, (1, 1, 3)) * np.ones((64, 64, 1)) + rng.normal(0, 20, (64, 64, 3))
            Image.fromarray(np.uint8(np.clip(img, 0, 255))).save(folder / f"class_{cls}" / f"{i}.png")
    clf = is_classifier("efficientnet-lite0", batch_size=10)
    assert isinstance(clf, Lite0Classifier) and clf.name == "IS (EfficientNet-Lite0 proxy)"
    mean, std = folder_inception_score(folder, clf, splits=2, batch_size=10)
    assert np.isfinite(mean) and np.isfinite(std) and 1.0 <= mean <= 1000.0 and std >= 0
    assert get_metric("is") is folder_inception_score
    with pytest.raises(ValueError, match="needs at least 20 images"):
        folder_inception_score(folder, clf, splits=20)
