"""Each loss against a brute-force computation written out here from docs/original.md#s6."""

import math
import warnings

import numpy as np
import pytest
import torch

from Audio_to_Image.losses import (
    LossWeights,
    distillation_loss,
    encoder_loss,
    joint_embedding_loss,
    normalised_l1_loss,
)


def brute_jel(v, a, y, c_diff, c_same):
    b = v.shape[0]
    total = 0.0
    for i in range(b):
        for j in range(b):
            m = float(v[i] @ a[j]) - float(v[j] @ a[j])  # column j anchored on its own pair
            if y[i] == y[j]:
                total += c_same * max(0.0, m)
            else:
                total += c_diff * max(0.0, 1.0 + m)
    return total / (b * b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jel_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    v, a = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 2, 1, 1, 3])
    got = joint_embedding_loss(v, a, y, c_diff=1.0, c_same=0.1).item()
    assert got == pytest.approx(brute_jel(v, a, y, 1.0, 0.1), rel=1e-12)


def test_jel_is_zero_when_matched_pairs_win_by_the_margin():
    a = torch.eye(3) * 5.0
    v = torch.eye(3)
    assert joint_embedding_loss(v, a, torch.tensor([0, 1, 2])).item() == 0.0
    # Same class, no margin: equal scores cost nothing either.
    assert joint_embedding_loss(v, torch.ones(3, 3), torch.zeros(3, dtype=torch.long)).item() == 0.0


def test_l1_uses_the_frobenius_norm_of_the_whole_batch():
    g = torch.Generator().manual_seed(3)
    a, v = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.rand(4, 6, generator=g, dtype=torch.float64)
    fa = math.sqrt(sum(float(x) ** 2 for x in a.flatten()))
    fv = math.sqrt(sum(float(x) ** 2 for x in v.flatten()))
    want = sum(abs(float(a[i, d]) / fa - float(v[i, d]) / fv) for i in range(4) for d in range(6)) / 24
    assert normalised_l1_loss(a, v).item() == pytest.approx(want, rel=1e-12)
    # A row-wise norm would differ: scaling one row changes the answer.
    a2 = a.clone()
    a2[0] *= 3
    assert normalised_l1_loss(a2, v).item() != pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_distillation_matches_brute_force(temperature):
    g = torch.Generator().manual_seed(4)
    a, v = torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(3, 5, generator=g, dtype=torch.float64)
    total = 0.0
    for i in range(3):
        zp = sum(math.exp(float(v[i, k]) / temperature) for k in range(5))
        zq = sum(math.exp(float(a[i, k])) for k in range(5))
        for d in range(5):
            p = math.exp(float(v[i, d]) / temperature) / zp
            q = math.exp(float(a[i, d])) / zq  # the student is not divided by T
            total += p * (math.log(p) - math.log(q))
    assert distillation_loss(a, v, temperature).item() == pytest.approx(total / 15, rel=1e-10)


def test_distillation_equals_torch_kl_div_with_elementwise_mean():
    g = torch.Generator().manual_seed(5)
    a, v = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
    with warnings.catch_warnings():  # torch warns that 'mean' will change meaning; that is the point here
        warnings.simplefilter("ignore", UserWarning)
        ref = torch.nn.functional.kl_div(torch.log_softmax(a, 1), torch.softmax(v / 2.0, 1), reduction="mean")
    assert distillation_loss(a, v, 2.0).item() == pytest.approx(ref.item(), rel=1e-5)


def test_total_is_the_weighted_sum_and_disabled_terms_are_zero():
    g = torch.Generator().manual_seed(6)
    a, v = torch.randn(5, 8, generator=g), torch.rand(5, 8, generator=g)
    y = torch.tensor([0, 0, 1, 1, 2])
    w = LossWeights(jel=True, loss_diff=1.0, loss_same=0.1, l1=True, lambda_l1=5.0, distill=True,
                    lambda_distill=1000.0, distill_T=2.0)
    total, terms = encoder_loss(a, v, y, w)
    want = (joint_embedding_loss(v, a, y, 1.0, 0.1) + 5 * normalised_l1_loss(a, v)
            + 1000 * distillation_loss(a, v, 2.0))
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    only_l1, terms = encoder_loss(a, v, y, LossWeights(l1=True, lambda_l1=2.0))
    assert terms["jel"].item() == 0 and terms["distill"].item() == 0
    assert only_l1.item() == pytest.approx(2 * normalised_l1_loss(a, v).item(), rel=1e-6)
    assert 0.0 <= terms["accu"].item() <= 100.0


def test_class_prototypes_are_unit_class_means():
    from Audio_to_Image.losses import class_prototypes

    feats = [np.array([[2.0, 0.0], [4.0, 0.0]]), np.array([[0.0, 3.0]]), np.array([[0.0, 1.0]])]
    p = class_prototypes(feats, [0, 1, 1], num_classes=3)
    assert p.shape == (3, 2)
    torch.testing.assert_close(p[0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(p[1], torch.tensor([0.0, 1.0]))
    assert torch.count_nonzero(p[2]) == 0  # a class without images never attracts anything


def test_prototype_loss_is_cross_entropy_over_cosines():
    from Audio_to_Image.losses import prototype_loss

    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0, 1])
    # cosines: row 0 → (1, 0), row 1 → (0.7071, 0.7071); logits = cos / 0.5
    expected = 0.5 * (math.log(1 + math.exp(-2.0)) + math.log(2.0))
    assert prototype_loss(a, y, protos, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_encoder_loss_adds_the_prototype_term_only_when_on():
    from Audio_to_Image.losses import LossWeights, encoder_loss, prototype_loss

    g = torch.Generator().manual_seed(0)
    a, v = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    y = torch.tensor([0, 1, 0, 2])
    protos = torch.nn.functional.normalize(torch.randn(3, 6, generator=g), dim=1)
    base, terms = encoder_loss(a, v, y, LossWeights(jel=True))
    assert "proto" not in terms
    w = LossWeights(jel=True, proto=True, lambda_proto=2.0, proto_T=0.2)
    total, terms = encoder_loss(a, v, y, w, protos)
    assert total.item() == pytest.approx(base.item() + 2.0 * prototype_loss(a, y, protos, 0.2).item(), rel=1e-6)
    with pytest.raises(ValueError, match="no class prototypes"):
        encoder_loss(a, v, y, w)
