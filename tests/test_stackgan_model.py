"""StackGAN-v2 generator and discriminators (docs/original.md#s11-3, §11.4, §16): sizes, keys, shapes, init, loading."""

import math

import pytest
import torch
import torch.nn as nn

from s2i.checkpoints import CheckpointError
from StackGAN.model import (
    D_NET,
    G_NET,
    build_generator_from_state_dict,
    infer_discriminator_args,
    infer_generator_args,
    load_original_discriminator,
    load_original_generator,
    make_discriminators,
    weights_init,
)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def g3() -> G_NET:
    """The paper's generator; PyTorch's default init keeps construction fast (init is tested separately)."""
    torch.manual_seed(0)
    return G_NET(branch_num=3, init_weights=False)


# ----------------------------------------------------------------------------------------- sizes


def test_generator_parameter_counts_match_spec(g3):
    parts = {k: n_params(getattr(g3, k)) for k in
             ("ca_net", "h_net1", "h_net2", "h_net3", "img_net1", "img_net2", "img_net3")}
    print(f"\nG_NET parameters: {n_params(g3):,} {parts}")
    assert n_params(g3) == 21_239_696
    assert parts == {
        "ca_net": 524_800, "h_net1": 20_074_240, "h_net2": 480_384, "h_net3": 157_248,
        "img_net1": 1_728, "img_net2": 864, "img_net3": 432,
    }


@pytest.mark.parametrize("resolution, count", [(64, 5_723_906), (128, 18_834_178), (256, 71_269_122)])
def test_discriminator_parameter_counts_match_spec(resolution, count):
    d = D_NET(resolution, init_weights=False)
    print(f"\nD_NET({resolution}) parameters: {n_params(d):,}")
    assert n_params(d) == count


# ------------------------------------------------------------------------------------------ keys


def conv(prefix):
    return {f"{prefix}.weight"}


def bn(prefix):
    return {f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def up_block(prefix):  # Upsample, conv3x3, BN, GLU
    return conv(f"{prefix}.1") | bn(f"{prefix}.2")


def next_stage(prefix, r_num=2):
    keys = conv(f"{prefix}.jointConv.0") | bn(f"{prefix}.jointConv.1") | up_block(f"{prefix}.upsample")
    for r in range(r_num):
        b = f"{prefix}.residual.{r}.block"
        keys |= conv(f"{b}.0") | bn(f"{b}.1") | conv(f"{b}.3") | bn(f"{b}.4")
    return keys


def original_generator_keys(branch_num):
    """The state_dict keys of the original StackGAN-v2 G_NET, written out from its module layout."""
    keys = {"ca_net.fc.weight", "ca_net.fc.bias"} | conv("h_net1.fc.0") | bn("h_net1.fc.1")
    for i in range(1, 5):
        keys |= up_block(f"h_net1.upsample{i}")
    keys |= conv("img_net1.img.0")
    for i in range(2, branch_num + 1):
        keys |= next_stage(f"h_net{i}") | conv(f"img_net{i}.img.0")
    return keys


def original_discriminator_keys(resolution):
    s16 = conv("img_code_s16.0")
    for conv_i, bn_i in ((2, 3), (5, 6), (8, 9)):
        s16 |= conv(f"img_code_s16.{conv_i}") | bn(f"img_code_s16.{bn_i}")
    body = {
        64: [],
        128: ["img_code_s32", "img_code_s32_1"],
        256: ["img_code_s32", "img_code_s64", "img_code_s64_1", "img_code_s64_2"],
    }[resolution]
    keys = set(s16)
    for name in body + ["jointConv"]:
        keys |= conv(f"{name}.0") | bn(f"{name}.1")
    for head in ("logits", "uncond_logits"):
        keys |= {f"{head}.0.weight", f"{head}.0.bias"}
    return keys


def test_generator_keys_are_the_original_layout(g3):
    keys = set(g3.state_dict())
    assert keys == original_generator_keys(3)
    per_prefix = {}
    for k in keys:
        per_prefix[k.split(".")[0]] = per_prefix.get(k.split(".")[0], 0) + 1
    assert per_prefix == {"ca_net": 2, "h_net1": 30, "img_net1": 1, "h_net2": 36, "img_net2": 1,
                          "h_net3": 36, "img_net3": 1}
    for k in ("ca_net.fc.weight", "h_net1.fc.0.weight", "h_net1.fc.1.running_var",
              "h_net1.upsample1.1.weight", "h_net1.upsample1.2.weight", "img_net1.img.0.weight",
              "h_net2.jointConv.0.weight", "h_net2.jointConv.1.bias", "h_net2.residual.0.block.0.weight",
              "h_net2.residual.0.block.1.weight", "h_net2.residual.1.block.3.weight",
              "h_net2.residual.1.block.4.running_mean", "h_net2.upsample.1.weight", "h_net3.upsample.2.bias"):
        assert k in keys, k
    sd = g3.state_dict()
    assert sd["ca_net.fc.weight"].shape == (512, 1024)
    assert sd["h_net1.fc.0.weight"].shape == (32768, 228)
    assert sd["h_net2.jointConv.0.weight"].shape == (128, 192, 3, 3)
    assert sd["h_net3.jointConv.0.weight"].shape == (64, 160, 3, 3)
    assert sd["img_net3.img.0.weight"].shape == (3, 16, 3, 3)


@pytest.mark.parametrize("branch_num", [1, 2])
def test_fewer_branches_drop_the_later_stages(branch_num):
    g = G_NET(branch_num=branch_num, gf_dim=8, init_weights=False)
    assert set(g.state_dict()) == original_generator_keys(branch_num)


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_discriminator_keys_are_the_original_layout(resolution):
    d = D_NET(resolution, df_dim=4, init_weights=False)
    assert set(d.state_dict()) == original_discriminator_keys(resolution)
    assert d.logits[0].bias is not None and d.uncond_logits[0].bias is not None
    assert not any(m.inplace for m in d.modules() if isinstance(m, nn.LeakyReLU))


# ---------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("branch_num", [1, 2, 3])
def test_generator_output_shapes(branch_num, g3):
    g = g3 if branch_num == 3 else G_NET(branch_num=branch_num, init_weights=False)
    g.train()
    imgs, mu, logvar = g(torch.randn(2, 100), torch.randn(2, 1024))
    assert [tuple(x.shape) for x in imgs] == [(2, 3, 64 * 2**i, 64 * 2**i) for i in range(branch_num)]
    assert mu.shape == logvar.shape == (2, 128)
    assert all(x.abs().max() <= 1 for x in imgs)


def test_generator_batch_of_one_in_eval_mode(g3):
    g3.eval()
    with torch.no_grad():
        imgs, mu, _ = g3(torch.randn(1, 100), torch.randn(1, 1024))
    assert [tuple(x.shape) for x in imgs] == [(1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256)]
    assert mu.shape == (1, 128)


def test_generator_takes_any_embedding_size():
    g = G_NET(branch_num=2, gf_dim=8, text_dim=1280, init_weights=False)
    imgs, mu, _ = g(torch.randn(2, 100), torch.randn(2, 1280))
    assert g.ca_net.fc.weight.shape == (512, 1280)
    assert [tuple(x.shape) for x in imgs] == [(2, 3, 64, 64), (2, 3, 128, 128)]
    assert g.args == {"branch_num": 2, "gf_dim": 8, "z_dim": 100, "embedding_dim": 128, "text_dim": 1280,
                      "r_num": 2, "b_condition": True, "embedding_norm": False}
    with pytest.raises(ValueError, match=r"\(2, 1280\).*\(2, 1024\)"):
        g(torch.randn(2, 100), torch.randn(2, 1024))
    with pytest.raises(ValueError, match="needs an embedding"):
        g(torch.randn(2, 100))


def test_unconditional_generator_feeds_z_alone():
    g = G_NET(branch_num=2, gf_dim=8, b_condition=False, init_weights=False)
    assert not hasattr(g, "ca_net")
    assert g.h_net1.fc[0].weight.shape == (8 * 16 * 32, 100)
    assert g.h_net2.jointConv[0].weight.shape[1] == 8 + 100  # z is tiled over the next stage
    imgs, mu, logvar = g(torch.randn(2, 100))
    assert mu is None and logvar is None
    assert [tuple(x.shape) for x in imgs] == [(2, 3, 64, 64), (2, 3, 128, 128)]


def test_ca_samples_in_eval_unless_asked_for_mu():
    g = G_NET(branch_num=1, gf_dim=4, init_weights=False).eval()
    emb = torch.randn(3, 1024)
    mu, logvar = g.ca_net.encode(emb)
    torch.manual_seed(5)
    c, mu2, logvar2 = g.ca_net(emb)
    torch.manual_seed(5)
    eps = torch.randn(3, 128)
    assert torch.equal(mu, mu2) and torch.equal(logvar, logvar2)
    torch.testing.assert_close(c, mu + eps * torch.exp(0.5 * logvar))
    # mu is the first half of GLU(fc(emb)), logvar the second half
    x = g.ca_net.fc(emb)
    glu = x[:, :256] * torch.sigmoid(x[:, 256:])
    torch.testing.assert_close(mu, glu[:, :128])
    torch.testing.assert_close(logvar, glu[:, 128:])
    z = torch.randn(3, 100)
    with torch.no_grad():
        a, b = g(z, emb)[0][0], g(z, emb)[0][0]
        m1, m2 = g(z, emb, use_mu=True)[0][0], g(z, emb, use_mu=True)[0][0]
    assert not torch.equal(a, b)
    assert torch.equal(m1, m2)


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_discriminator_output_shapes_and_code_size(resolution):
    d = D_NET(resolution, init_weights=False)
    x = torch.randn(2, 3, resolution, resolution)
    (cond, uncond), code = d(x, torch.randn(2, 128))
    assert cond.shape == uncond.shape == (2,)
    assert code.shape == (2, 8192)
    assert ((cond > 0) & (cond < 1)).all()
    d.eval()
    c = torch.randn(2, 128)
    with torch.no_grad():
        probs, code1 = d(x, c)
        raw, code2 = d(x, c, logits=True)
    torch.testing.assert_close(torch.sigmoid(raw[0]), probs[0])
    torch.testing.assert_close(torch.sigmoid(raw[1]), probs[1])
    assert torch.equal(code1, code2)
    with pytest.raises(ValueError, match=f"D_NET\\({resolution}\\) images"):
        d(torch.randn(2, 3, 32, 32), c)


def test_discriminator_variants():
    d = D_NET(64, df_dim=4, embedding_dim=6).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        # Without c the conditional head scores the image code alone, as in the original.
        (no_c, uncond), code = d(x)
        assert torch.equal(no_c, d.logits(code.view(2, 32, 4, 4)).view(-1))
        assert torch.equal(uncond, d.uncond_logits(code.view(2, 32, 4, 4)).view(-1))
    plain = D_NET(64, df_dim=4, b_condition=False)
    assert not hasattr(plain, "jointConv") and not hasattr(plain, "uncond_logits")
    outs, code = plain(x, torch.randn(2, 128))
    assert len(outs) == 1 and outs[0].shape == (2,) and code.shape == (2, 512)
    with pytest.raises(ValueError, match="resolution"):
        D_NET(96)


def test_make_discriminators_in_resolution_order():
    ds = make_discriminators(3, df_dim=4, embedding_dim=6, init_weights=False)
    assert isinstance(ds, nn.ModuleList)
    assert [d.resolution for d in ds] == [64, 128, 256]
    assert ds[2].args == {"resolution": 256, "df_dim": 4, "embedding_dim": 6, "b_condition": True}
    assert len(make_discriminators(1)) == 1


# ------------------------------------------------------------------------------------------ init


def assert_orthogonal(w: torch.Tensor):
    m = w.reshape(w.shape[0], -1).double()
    gram = m @ m.t() if m.shape[0] <= m.shape[1] else m.t() @ m
    torch.testing.assert_close(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-4, rtol=0)


def assert_original_init(model: nn.Module):
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert_orthogonal(m.weight.detach())
        if isinstance(m, nn.Linear) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0, name
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.count_nonzero(m.bias) == 0, name
        if isinstance(m, nn.Conv2d) and m.bias is not None:  # logit heads: PyTorch's default U(±1/√fan_in)
            bound = 1 / math.sqrt(m.weight[0].numel())
            assert torch.count_nonzero(m.bias) > 0 and m.bias.abs().max() <= bound, name
    bn_w = torch.cat([m.weight.detach() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)])
    assert abs(bn_w.mean().item() - 1.0) < 0.005
    assert 0.017 < bn_w.std().item() < 0.023


def test_generator_init_matches_original():
    torch.manual_seed(1)
    assert_original_init(G_NET(branch_num=3, gf_dim=16))


def test_discriminator_init_matches_original():
    torch.manual_seed(2)
    assert_original_init(D_NET(128, df_dim=16))


def test_weights_init_is_usable_with_apply():
    torch.manual_seed(3)
    d = D_NET(64, df_dim=8, init_weights=False)
    default_bias = d.logits[0].bias.detach().clone()
    d.apply(weights_init)
    assert_original_init(d)
    assert torch.equal(d.logits[0].bias, default_bias)


# ----------------------------------------------------------------------------------- checkpoints


def perturb_buffers(model: nn.Module):
    """Non-trivial BN running statistics, so a load that dropped them would show in eval outputs."""
    g = torch.Generator().manual_seed(9)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(7)


def test_authors_generator_checkpoint_round_trip(g3, tmp_path):
    perturb_buffers(g3)
    path = tmp_path / "netG_220000.pth"
    torch.save({f"module.{k}": v for k, v in g3.state_dict().items()}, path)  # a DataParallel state dict
    loaded = load_original_generator(path)
    assert loaded.args == g3.args
    g3.eval()
    loaded.eval()
    z, emb = torch.randn(2, 100), torch.randn(2, 1024)
    with torch.no_grad():
        want, mu_w, _ = g3(z, emb, use_mu=True)
        got, mu_g, _ = loaded(z, emb, use_mu=True)
        torch.manual_seed(11)
        want_s = g3(z, emb)[0]
        torch.manual_seed(11)
        got_s = loaded(z, emb)[0]
    assert torch.equal(mu_w, mu_g)
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert all(torch.equal(a, b) for a, b in zip(want_s, got_s))


def test_generator_builder_infers_the_architecture():
    small = G_NET(branch_num=2, gf_dim=8, z_dim=20, embedding_dim=6, text_dim=1280, r_num=1, init_weights=False)
    sd = small.state_dict()
    assert infer_generator_args(sd) == small.args
    rebuilt = build_generator_from_state_dict(sd)
    assert rebuilt.args == small.args
    # Checkpoints from PyTorch <= 0.4.0 lack the BN counters; prefixed in-memory dicts load too.
    old = {f"module.{k}": v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert load_original_generator(old).args == small.args
    uncond = G_NET(branch_num=3, gf_dim=8, b_condition=False, init_weights=False)
    assert load_original_generator(uncond.state_dict()).args == uncond.args


def test_generator_load_is_strict():
    sd = G_NET(branch_num=2, gf_dim=8, init_weights=False).state_dict()
    with pytest.raises(CheckpointError, match="unexpected"):
        load_original_generator({**sd, "h_net2.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="missing"):
        load_original_generator(sd, branch_num=3)
    with pytest.raises(CheckpointError, match="shape"):
        load_original_generator(sd, text_dim=1280)
    with pytest.raises(CheckpointError, match="not a StackGAN-v2 generator"):
        load_original_generator({"a.weight": torch.zeros(1)})


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_authors_discriminator_checkpoint_round_trip(resolution, tmp_path):
    d = D_NET(resolution, df_dim=4, embedding_dim=6, init_weights=False)
    perturb_buffers(d)
    assert infer_discriminator_args(d.state_dict()) == d.args
    path = tmp_path / "netD0.pth"
    torch.save({f"module.{k}": v for k, v in d.state_dict().items()}, path)
    loaded = load_original_discriminator(path).eval()
    d.eval()
    x, c = torch.randn(2, 3, resolution, resolution), torch.randn(2, 6)
    with torch.no_grad():
        (a1, a2), ca = d(x, c)
        (b1, b2), cb = loaded(x, c)
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and torch.equal(ca, cb)


def test_embedding_norm_standardises_inside_g_and_is_off_by_default():
    from StackGAN.model import G_NET

    assert not any(k.startswith("emb_") for k in G_NET(branch_num=1, gf_dim=8, text_dim=6).state_dict())
    torch.manual_seed(0)
    g_norm = G_NET(branch_num=1, gf_dim=8, text_dim=6, embedding_norm=True).eval()
    g_plain = G_NET(branch_num=1, gf_dim=8, text_dim=6).eval()
    g_plain.load_state_dict({k: v for k, v in g_norm.state_dict().items() if not k.startswith("emb_")})
    train_embs = torch.randn(50, 3, 6) * 0.02 + 0.5
    g_norm.set_embedding_statistics(train_embs)
    flat = train_embs.reshape(-1, 6).double()
    torch.testing.assert_close(g_norm.emb_mean, flat.mean(0).float())
    z, x = torch.randn(4, 100), torch.randn(4, 6)
    with torch.no_grad():
        a = g_norm(z, g_norm.emb_mean + g_norm.emb_std * x, use_mu=True)[0][0]
        b = g_plain(z, x, use_mu=True)[0][0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert g_norm.args["embedding_norm"] is True
    rebuilt = G_NET(**g_norm.args, init_weights=False)
    rebuilt.load_state_dict(g_norm.state_dict(), strict=True)  # the statistics travel in the state dict
    torch.testing.assert_close(rebuilt.emb_std, g_norm.emb_std)
    with pytest.raises(ValueError, match="embedding_norm=True"):
        g_plain.set_embedding_statistics(train_embs)


def test_discriminator_class_head_is_optional_and_keeps_the_original_keys():
    plain = D_NET(64, df_dim=4, embedding_dim=6)
    with_head = D_NET(64, df_dim=4, embedding_dim=6, num_classes=7)
    extra = set(with_head.state_dict()) - set(plain.state_dict())
    assert extra == {"class_logits.weight", "class_logits.bias"}
    assert "num_classes" not in plain.args and with_head.args["num_classes"] == 7
    _, code = with_head(torch.rand(2, 3, 64, 64) * 2 - 1, torch.randn(2, 6))
    assert with_head.classify(code).shape == (2, 7)
    # Rebuilt from its recorded arguments, it loads its own state dict strictly.
    D_NET(**with_head.args).load_state_dict(with_head.state_dict(), strict=True)
    with pytest.raises(ValueError, match="num_classes"):
        plain.classify(code)
    with pytest.raises(ValueError, match="num_classes"):
        D_NET(64, num_classes=-1)
