"""Each StackGAN loss against a brute-force computation written out here from docs/original.md#s11-5."""

import math

import pytest
import torch
import torch.nn as nn

from StackGAN.losses import (
    auxiliary_class_loss,
    class_aware_loss,
    colour_consistency_loss,
    discriminator_loss,
    faithful_cal_weight,
    generator_adv_loss,
    generator_loss,
    kl_loss,
    teacher_feature_loss,
)
from StackGAN.model import D_NET, G_NET, make_discriminators

EF = 6


def bce_by_hand(probs, target):
    """Mean of −[t·log p + (1−t)·log(1−p)] over the batch, with Python floats."""
    p = [float(v) for v in probs]
    return sum(-(target * math.log(v) + (1 - target) * math.log(1 - v)) for v in p) / len(p)


@pytest.fixture
def tiny_d():
    torch.manual_seed(0)
    return D_NET(64, df_dim=4, embedding_dim=EF).double().eval()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)

    def img():
        return torch.rand(3, 3, 64, 64, generator=g, dtype=torch.float64) * 2 - 1

    return img(), img(), img(), torch.randn(3, EF, generator=g, dtype=torch.float64)


def scores(d, x, c):
    with torch.no_grad():
        (cond, uncond), _ = d(x, c)
    return cond, uncond


@pytest.mark.parametrize("u", [1.0, 0.5])
def test_discriminator_loss_matches_hand_bce(tiny_d, batch, u):
    real, wrong, fake, mu = batch
    rc, ru = scores(tiny_d, real, mu)
    wc, wu = scores(tiny_d, wrong, mu)
    fc, fu = scores(tiny_d, fake, mu)
    want = (bce_by_hand(rc, 1) + bce_by_hand(wc, 0) + bce_by_hand(fc, 0)
            + u * (bce_by_hand(ru, 1) + bce_by_hand(wu, 1) + bce_by_hand(fu, 0)))  # wrong is "real" unconditionally
    got = discriminator_loss(tiny_d, real, wrong, fake, mu, u).item()
    assert got == pytest.approx(want, rel=1e-10)
    with_logits = discriminator_loss(tiny_d, real, wrong, fake, mu, u, logits=True).item()
    assert with_logits == pytest.approx(want, rel=1e-10)


def test_discriminator_loss_fallback_without_uncond_term(tiny_d, batch):
    real, wrong, fake, mu = batch
    rc, _ = scores(tiny_d, real, mu)
    wc, _ = scores(tiny_d, wrong, mu)
    fc, _ = scores(tiny_d, fake, mu)
    want = bce_by_hand(rc, 1) + 0.5 * (bce_by_hand(wc, 0) + bce_by_hand(fc, 0))
    assert discriminator_loss(tiny_d, real, wrong, fake, mu, 0.0).item() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("u", [1.0, 0.0])
def test_generator_adv_loss_matches_hand_bce(tiny_d, batch, u):
    _, _, fake, mu = batch
    fc, fu = scores(tiny_d, fake, mu)
    want = bce_by_hand(fc, 1) + u * bce_by_hand(fu, 1)
    assert generator_adv_loss(tiny_d, fake, mu, u).item() == pytest.approx(want, rel=1e-10)
    loss, code = generator_adv_loss(tiny_d, fake, mu, u, logits=True, return_code=True)
    assert loss.item() == pytest.approx(want, rel=1e-10)
    assert code.shape == (3, 4 * 8 * 16)


def test_kl_matches_loop():
    g = torch.Generator().manual_seed(2)
    mu = torch.randn(4, 5, generator=g, dtype=torch.float64)
    logvar = torch.randn(4, 5, generator=g, dtype=torch.float64)
    terms = [1 + float(logvar[b, k]) - float(mu[b, k]) ** 2 - math.exp(float(logvar[b, k]))
             for b in range(4) for k in range(5)]
    want = -0.5 * sum(terms) / len(terms)
    assert kl_loss(mu, logvar).item() == pytest.approx(want, rel=1e-12)
    assert kl_loss(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0


def brute_class_aware(x, labels):
    b, n = x.shape
    gram = [[float(x[i] @ x[j]) for j in range(b)] for i in range(b)]
    all_mean = sum(gram[i][j] for i in range(b) for j in range(b)) / (b * b)
    same = [gram[i][j] for i in range(b) for j in range(b) if i != j and labels[i] == labels[j]]
    if not same:
        return 0.0
    return max(0.0, all_mean - sum(same) / len(same)) / n


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_class_aware_loss_matches_double_loop(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 10, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    want = brute_class_aware(x, labels.tolist())
    assert class_aware_loss(x, labels).item() == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_class_aware_loss_cases():
    # No same-class pair: 0, and still a tensor that backpropagates (zero gradient).
    x = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    loss = class_aware_loss(x, torch.tensor([0, 1, 2, 3]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(x.grad) == 0
    # Same-class codes far more alike than the batch average: the hinge is inactive.
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert class_aware_loss(x, torch.tensor([0, 0, 1, 1])).item() == 0.0
    # Same-class codes opposite: mean(G) = 0, mean(G[P]) = −1 → loss 1/N with N = 2.
    assert class_aware_loss(x, torch.tensor([0, 1, 0, 1])).item() == pytest.approx(0.5)
    assert brute_class_aware(x, [0, 1, 0, 1]) == pytest.approx(0.5)


def test_cal_weight_is_a_switch():
    assert faithful_cal_weight(50.0) == 1.0
    assert faithful_cal_weight(0.0) == 0.0


def brute_mean_cov(img):
    b, ch, h, w = img.shape
    means, covs = [], []
    for n in range(b):
        m = [sum(float(img[n, c, y, x]) for y in range(h) for x in range(w)) / (h * w) for c in range(ch)]
        cov = [[sum((float(img[n, c1, y, x]) - m[c1]) * (float(img[n, c2, y, x]) - m[c2])
                    for y in range(h) for x in range(w)) / (h * w) for c2 in range(ch)] for c1 in range(ch)]
        means.append(m)
        covs.append(cov)
    return means, covs


def test_colour_consistency_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(4)
    small = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    large = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    ms, cs = brute_mean_cov(small.detach())
    ml, cl = brute_mean_cov(large.detach())
    mse_mu = sum((ml[n][c] - ms[n][c]) ** 2 for n in range(2) for c in range(3)) / 6
    mse_cov = sum((cl[n][a][b] - cs[n][a][b]) ** 2 for n in range(2) for a in range(3) for b in range(3)) / 18
    loss = colour_consistency_loss(small, large)
    assert loss.item() == pytest.approx(mse_mu + 5 * mse_cov, rel=1e-12)
    loss.backward()
    assert small.grad is None and large.grad is not None  # upstream detaches the smaller scale


# --------------------------------------------------------------------------------- gradient flow


@pytest.fixture
def tiny_gan():
    torch.manual_seed(5)
    g = G_NET(branch_num=2, gf_dim=8, z_dim=10, embedding_dim=EF, text_dim=12, init_weights=False)
    ds = make_discriminators(2, df_dim=4, embedding_dim=EF, init_weights=False)
    fake, mu, logvar = g(torch.randn(4, 10), torch.randn(4, 12))
    return g, ds, fake, mu, logvar


def test_discriminator_loss_sends_no_gradient_to_the_generator(tiny_gan):
    g, ds, fake, mu, _ = tiny_gan
    for i, d in enumerate(ds):
        real = torch.rand_like(fake[i]) * 2 - 1
        discriminator_loss(d, real, real.flip(0), fake[i], mu).backward()
        assert all(p.grad is not None for p in d.parameters())
    assert all(p.grad is None for p in g.parameters())


def test_generator_loss_reaches_ca_through_mu(tiny_gan):
    g, ds, fake, mu, _ = tiny_gan
    # The image path is cut: any gradient on the CA net comes through D's conditioning on mu.
    generator_adv_loss(ds[0], fake[0].detach(), mu).backward()
    assert g.ca_net.fc.weight.grad is not None and g.ca_net.fc.weight.grad.abs().sum() > 0
    assert g.h_net1.fc[0].weight.grad is None


def test_generator_loss_total(tiny_gan):
    g, ds, fake, mu, logvar = tiny_gan
    labels = torch.tensor([0, 1, 0, 1])
    total, parts = generator_loss(ds, fake, mu, logvar, labels, cal_weight=1.0, colour_weight=0.5)
    want = (sum(parts["adv"]) + sum(parts["cal"]) + 2.0 * parts["kl"] + 0.5 * parts["colour"])
    torch.testing.assert_close(total, want)
    assert len(parts["adv"]) == len(parts["cal"]) == 2
    torch.testing.assert_close(parts["adv"][1], generator_adv_loss(ds[1], fake[1], mu))
    torch.testing.assert_close(parts["colour"], colour_consistency_loss(fake[0], fake[1]))
    off, parts_off = generator_loss(ds, fake, mu, logvar, cal_weight=0.0)
    assert parts_off["cal"] == [] and parts_off["colour"] is None
    torch.testing.assert_close(off, sum(parts_off["adv"]) + 2.0 * parts_off["kl"])
    with pytest.raises(ValueError, match="labels"):
        generator_loss(ds, fake, mu, logvar)
    total.backward()
    assert all(p.grad is not None for p in g.parameters())


def test_unconditional_models_skip_the_condition():
    torch.manual_seed(6)
    g = G_NET(branch_num=1, gf_dim=4, z_dim=10, b_condition=False, init_weights=False)
    d = D_NET(64, df_dim=4, b_condition=False, init_weights=False)
    fake, mu, logvar = g(torch.randn(3, 10))
    real = torch.rand_like(fake[0])
    assert isinstance(discriminator_loss(d, real, real, fake[0], None), torch.Tensor)
    total, parts = generator_loss(nn.ModuleList([d]), fake, mu, logvar, cal_weight=0.0)
    assert parts["kl"] is None and total.item() == pytest.approx(parts["adv"][0].item())


# ------------------------------------------------------------------ auxiliary class loss (ours, AC-GAN)


def ce_by_hand(logits, labels):
    """Mean of −log softmax(logits)[label] over the batch, with Python floats."""
    rows = [[float(v) for v in row] for row in logits]
    return sum(math.log(sum(math.exp(v) for v in row)) - row[int(y)] for row, y in zip(rows, labels)) / len(rows)


def test_auxiliary_class_loss_in_d_and_g_matches_hand_cross_entropy(batch):
    real, wrong, fake, mu = batch
    torch.manual_seed(0)
    d = D_NET(64, df_dim=4, embedding_dim=EF, num_classes=5).double().eval()
    y, y_wrong = torch.tensor([0, 3, 4]), torch.tensor([2, 2, 1])
    with torch.no_grad():
        codes = {name: d(x, mu)[1] for name, x in (("real", real), ("wrong", wrong), ("fake", fake))}
    want_real = ce_by_hand(d.classify(codes["real"]).detach(), y)
    want_wrong = ce_by_hand(d.classify(codes["wrong"]).detach(), y_wrong)
    assert auxiliary_class_loss(d, codes["real"], y).item() == pytest.approx(want_real, rel=1e-10)

    # D: the paper's loss plus w·(CE(real, y) + CE(wrong, y_wrong)); the fakes are not classified.
    plain = discriminator_loss(d, real, wrong, fake, mu, 1.0).item()
    got = discriminator_loss(d, real, wrong, fake, mu, 1.0, aux_weight=0.5, labels=y, wrong_labels=y_wrong).item()
    assert got == pytest.approx(plain + 0.5 * (want_real + want_wrong), rel=1e-10)

    # G: the paper's loss plus w·CE(fake, y) on every branch.
    ds = nn.ModuleList([d])
    logvar = torch.zeros_like(mu)
    base, _ = generator_loss(ds, [fake], mu, logvar, cal_weight=0.0)
    total, parts = generator_loss(ds, [fake], mu, logvar, cal_weight=0.0, aux_weight=2.0, class_index=y)
    want_fake = ce_by_hand(d.classify(codes["fake"]).detach(), y)
    assert parts["aux"][0].item() == pytest.approx(want_fake, rel=1e-10)
    assert total.item() == pytest.approx(base.item() + 2.0 * want_fake, rel=1e-10)
    with pytest.raises(ValueError, match="class_index"):
        generator_loss(ds, [fake], mu, logvar, cal_weight=0.0, aux_weight=1.0)
    with pytest.raises(ValueError, match="labels"):
        discriminator_loss(d, real, wrong, fake, mu, aux_weight=1.0)


def test_auxiliary_class_loss_trains_the_class_head_and_reaches_the_generator(tiny_gan):
    g, _, fake, mu, logvar = tiny_gan
    ds = make_discriminators(2, df_dim=4, embedding_dim=EF, init_weights=False, num_classes=3)
    y = torch.tensor([0, 1, 2, 1])
    real = [torch.rand_like(f) * 2 - 1 for f in fake]
    for i, d in enumerate(ds):
        discriminator_loss(d, real[i], real[i].flip(0), fake[i], mu, aux_weight=1.0, labels=y,
                           wrong_labels=y.flip(0)).backward()
        assert d.class_logits.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in g.parameters())
    total, parts = generator_loss(ds, fake, mu, logvar, cal_weight=0.0, aux_weight=1.0, class_index=y)
    assert len(parts["aux"]) == 2
    total.backward()
    assert g.img_net1.img[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ teacher feature loss (ours)


def test_teacher_feature_loss_is_one_minus_cosine_averaged_over_layers():
    """Each layer weighs the same whatever its width: identical features 0, opposite 2, orthogonal 1."""
    a = torch.tensor([[1.0, 0.0, 3.0, 4.0, 0.0]])  # layers of widths 2 and 3
    assert teacher_feature_loss(a, a, (2, 3)).item() == pytest.approx(0.0, abs=1e-7)
    assert teacher_feature_loss(a, -a, (2, 3)).item() == pytest.approx(2.0)
    # layer 1 orthogonal (cos 0), layer 2 identical up to scale (cos 1): (1 + 0) / 2
    b = torch.tensor([[0.0, 5.0, 6.0, 8.0, 0.0]])
    assert teacher_feature_loss(a, b, (2, 3)).item() == pytest.approx(0.5)
    # a batch of two, by hand: layer 1 has cosines 1/√2 and 0, layer 2 cosines 1 and 1
    f = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    want = (((1 - 1 / math.sqrt(2)) + (1 - 0.0)) / 2 + 0.0) / 2
    assert teacher_feature_loss(f, t, (2, 1)).item() == pytest.approx(want)
    with pytest.raises(ValueError, match=r"\(B, 5\)"):
        teacher_feature_loss(a, a[:, :4], (2, 3))


class _LinearTeacher(nn.Module):
    """A stand-in teacher: fixed linear features of the mean colour, so the expected loss is computable."""

    dims = (2, 1)

    def __init__(self):
        super().__init__()
        self.w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [1.0, 1.0, 1.0]])

    def forward(self, images):
        return images.mean(dim=(2, 3)) @ self.w.t()


def test_generator_loss_adds_the_weighted_teacher_term_on_the_last_branch(tiny_gan):
    g, ds, fake, mu, logvar = tiny_gan
    teacher = _LinearTeacher()
    target = torch.randn(fake[-1].shape[0], 3)
    base, _ = generator_loss(ds, fake, mu, logvar, cal_weight=0.0)
    total, parts = generator_loss(ds, fake, mu, logvar, cal_weight=0.0, teacher=teacher, teacher_target=target,
                                  teacher_weight=3.0)
    want = teacher_feature_loss(teacher(fake[-1]), target, teacher.dims)
    assert parts["teacher"].item() == pytest.approx(want.item(), rel=1e-10)
    assert total.item() == pytest.approx(base.item() + 3.0 * want.item(), rel=1e-6)  # float32
    g.zero_grad()
    parts["teacher"].backward()
    assert g.img_net1.img[0].weight.grad is None  # only the last branch is seen
    assert g.img_net2.img[0].weight.grad.abs().sum() > 0 and g.h_net1.fc[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="teacher_target"):
        generator_loss(ds, fake, mu, logvar, cal_weight=0.0, teacher=teacher, teacher_weight=1.0)
