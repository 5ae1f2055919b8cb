"""StackGAN-v2 generator and discriminators as used by the speech-to-image fork (docs/original.md#s11-3 to #s11-4).

Layer tables, module names and therefore ``state_dict`` keys follow the original StackGAN-v2 code, so
the authors' ``netG_<iter>.pth`` / ``netD<i>.pth`` files (DataParallel state dicts, keys prefixed with
``module.``) load with ``strict=True`` through :func:`load_original_generator` /
:func:`load_original_discriminator`. Differences from the original code, none of which changes a key
or a number:

* constructor arguments instead of the global ``cfg`` (each model keeps them in ``self.args``);
* one :class:`D_NET` parametrised by resolution instead of D_NET64/128/256;
* ``torch.randn_like`` for the conditioning-augmentation noise (docs/original.md#bug-28), so CPU and CUDA work;
* an option to take ``c = μ`` (no sampling) and an option to read the discriminators' pre-sigmoid
  logits, for BCE-with-logits under mixed precision (docs/original.md#s15);
* under ``torch.autocast`` (``--precision bf16``/``fp16``) the conditioning augmentation still computes
  in float32, so μ, logσ², the noise it draws and c are float32 in every precision.

Upsampling is nearest-neighbour, where ``align_corners`` does not apply (PyTorch rejects it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from s2i.precision import fp32_region, upcast

BASE_SIZE = 64
"""Resolution of the first branch; branch i (0-based) generates ``64·2^i`` pixels."""

RESOLUTIONS = (64, 128, 256)


# --------------------------------------------------------------------------------------------------
# Building blocks (the original's helper functions; the Sequential indices fix the state_dict keys)
# --------------------------------------------------------------------------------------------------


def conv3x3(in_planes: int, out_planes: int) -> nn.Conv2d:
    """3×3 convolution, stride 1, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


def up_block(in_planes: int, out_planes: int) -> nn.Sequential:
    """×2 nearest upsampling → conv3x3(in → 2·out) → BN → GLU: ``(B, in, H, W) → (B, out, 2H, 2W)``."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(in_planes, out_planes * 2),
        nn.BatchNorm2d(out_planes * 2),
        nn.GLU(dim=1),
    )


def block3x3_glu(in_planes: int, out_planes: int) -> nn.Sequential:
    """conv3x3(in → 2·out) → BN → GLU (the original's ``Block3x3_relu``; its "relu" is a GLU)."""
    return nn.Sequential(conv3x3(in_planes, out_planes * 2), nn.BatchNorm2d(out_planes * 2), nn.GLU(dim=1))


def block3x3_leaky_relu(in_planes: int, out_planes: int) -> nn.Sequential:
    """conv3x3 → BN → LeakyReLU(0.2) (the original's ``Block3x3_leakRelu``; not in-place, docs/original.md#s11-8)."""
    return nn.Sequential(conv3x3(in_planes, out_planes), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2))


def down_block(in_planes: int, out_planes: int) -> nn.Sequential:
    """Conv(4, stride 2, pad 1, no bias) → BN → LeakyReLU(0.2): halves H and W."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 4, 2, 1, bias=False), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2)
    )


def encode_image_by_16times(ndf: int) -> nn.Sequential:
    """``(B, 3, R, R) → (B, 8·ndf, R/16, R/16)``: four stride-2 convs, BN on all but the first (docs/original.md#s11-4)."""
    return nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 4),
        nn.LeakyReLU(0.2),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 8),
        nn.LeakyReLU(0.2),
    )


def weights_init(m: nn.Module) -> None:
    """The original's initialisation, for ``model.apply(weights_init)`` (docs/original.md#s11-4).

    Conv and Linear weights orthogonal with gain 1; Linear biases 0; BatchNorm weights ~ N(1, 0.02),
    biases 0. Conv biases (only the logit heads of the discriminators have one) keep PyTorch's default.
    """
    if isinstance(m, nn.modules.conv._ConvNd):
        nn.init.orthogonal_(m.weight, 1.0)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight, 1.0)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _check_input(name: str, x: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    """Raises a readable error when ``x`` does not have ``shape`` (None = any size)."""
    ok = x.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, x.shape))
    if not ok:
        want = "(" + ", ".join("B" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected a tensor of shape {want}, found {tuple(x.shape)}")


# --------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------


class ResBlock(nn.Module):
    """``x + BN(conv3x3(GLU(BN(conv3x3(x)))))``, no activation after the sum. Shape-preserving."""

    def __init__(self, channel_num: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channel_num, channel_num * 2),
            nn.BatchNorm2d(channel_num * 2),
            nn.GLU(dim=1),
            conv3x3(channel_num, channel_num),
            nn.BatchNorm2d(channel_num),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + x


class CANet(nn.Module):
    """Conditioning augmentation (the original's ``CA_NET``, docs/original.md#s11-3).

    ``GLU(Linear(t_dim → 4·ef))`` gives ``2·ef`` values: ``μ = x[:, :ef]``, ``logσ² = x[:, ef:]``, and
    ``c = μ + ε·exp(½ logσ²)`` with ε ~ N(0, I). Always in float32, also under autocast: a 16-bit logσ²
    would put its rounding into exp and into the KL term, for a layer that costs nothing.

    Args:
        text_dim: size of the conditioning embedding (the speech embedding, 1024 in the paper).
        embedding_dim: ef, the size of c.
    """

    def __init__(self, text_dim: int, embedding_dim: int) -> None:
        super().__init__()
        self.ef_dim = embedding_dim
        self.fc = nn.Linear(text_dim, embedding_dim * 4, bias=True)

    def encode(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``emb (B, t_dim) → μ (B, ef), logσ² (B, ef)``, float32."""
        with fp32_region():
            x = F.glu(self.fc(upcast(emb)), 1)
        return x[:, : self.ef_dim], x[:, self.ef_dim :]

    def forward(
        self, emb: torch.Tensor, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``emb (B, t_dim) → (c, μ, logσ²)``, each ``(B, ef)``.

        The original samples in eval mode too (docs/original.md#s11-7); ``sample=False`` returns ``c = μ``.
        """
        mu, logvar = self.encode(emb)
        if not sample:
            return mu, mu, logvar
        with fp32_region():
            std = torch.exp(0.5 * logvar)
            return mu + torch.randn_like(std) * std, mu, logvar


class InitStageG(nn.Module):
    """First stage (the original's ``INIT_STAGE_G``): code → ``(B, ngf/16, 64, 64)``.

    ``Linear(in → ngf·4·4·2, no bias) → BN1d → GLU → view (B, ngf, 4, 4)`` then four up-blocks halving the
    channels: with ngf = 16·gf = 1024, 1024 → 512 → 256 → 128 → 64.

    Args:
        ngf: channels of the 4×4 map (16·gf_dim).
        in_dim: size of the input code, ``ef + z_dim`` (conditional) or ``z_dim``.
    """

    def __init__(self, ngf: int, in_dim: int) -> None:
        super().__init__()
        self.gf_dim = ngf
        self.fc = nn.Sequential(
            nn.Linear(in_dim, ngf * 4 * 4 * 2, bias=False), nn.BatchNorm1d(ngf * 4 * 4 * 2), nn.GLU(dim=1)
        )
        self.upsample1 = up_block(ngf, ngf // 2)
        self.upsample2 = up_block(ngf // 2, ngf // 4)
        self.upsample3 = up_block(ngf // 4, ngf // 8)
        self.upsample4 = up_block(ngf // 8, ngf // 16)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """``code (B, in_dim) → h (B, ngf/16, 64, 64)``."""
        h = self.fc(code).view(-1, self.gf_dim, 4, 4)
        return self.upsample4(self.upsample3(self.upsample2(self.upsample1(h))))


class NextStageG(nn.Module):
    """Refinement stage (the original's ``NEXT_STAGE_G``): ``(B, ngf, S, S) → (B, ngf/2, 2S, 2S)``.

    c is tiled to ``(B, ef, S, S)`` and concatenated in front of h, then jointConv (conv3x3 → BN → GLU to
    ngf channels), ``r_num`` residual blocks and one up-block.

    Args:
        ngf: channels of the incoming hidden map.
        ef_dim: size of the code tiled over the map (ef, or z_dim in the unconditional variant).
        r_num: number of residual blocks.
    """

    def __init__(self, ngf: int, ef_dim: int, r_num: int = 2) -> None:
        super().__init__()
        self.ef_dim = ef_dim
        self.jointConv = block3x3_glu(ngf + ef_dim, ngf)
        self.residual = nn.Sequential(*[ResBlock(ngf) for _ in range(r_num)])
        self.upsample = up_block(ngf, ngf // 2)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``h (B, ngf, S, S), c (B, ef) → (B, ngf/2, 2S, 2S)``."""
        s = h.shape[2]
        c_map = c[:, :, None, None].expand(-1, -1, s, s)
        return self.upsample(self.residual(self.jointConv(torch.cat((c_map, h), 1))))


class GetImageG(nn.Module):
    """conv3x3(ngf → 3, no bias) → tanh: a hidden map to an RGB image in [−1, 1] (``GET_IMAGE_G``)."""

    def __init__(self, ngf: int) -> None:
        super().__init__()
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.img(h)


class G_NET(nn.Module):  # the original's name, which users know from its checkpoints
    """The StackGAN-v2 tree generator (docs/original.md#s11-3): 64, 128 and 256 px images from one noise + embedding.

    Modules (and state_dict keys) ``ca_net``, ``h_net1``, ``img_net1``, ``h_net2``, ``img_net2``,
    ``h_net3``, ``img_net3``, as in the original. With the paper's settings it has 21,239,696 parameters.

    Args:
        branch_num: number of branches, 1–3 (64, 128, 256 px).
        gf_dim: base channel count gf; the first stage starts from 16·gf channels at 4×4.
        z_dim: noise size.
        embedding_dim: ef, size of the conditioning code c.
        text_dim: size of the input embedding (the original's TEXT.DIMENSION; any value, e.g. 1280).
        r_num: residual blocks per refinement stage.
        b_condition: conditional model (CA net, c fed to every stage). ``False`` is the unconditional
            upstream variant: no CA net, the first stage sees z alone and later stages tile z.
        embedding_norm: ours, off by default: standardise each embedding dimension with the training
            set's mean and std (buffers ``emb_mean``/``emb_std``, set by :meth:`set_embedding_statistics`)
            before the CA net. Speech embeddings are small (per-dimension std ≈ 0.02 on shapes), so the CA
            net's unit-variance noise drowns them for thousands of steps; standardised, the generator
            follows its condition from the start. The buffers travel in the checkpoint.
        init_weights: apply :func:`weights_init` (skip it when weights will be loaded anyway; not an
            architecture argument, so it is not stored in ``args``).
    """

    def __init__(
        self,
        branch_num: int = 3,
        gf_dim: int = 64,
        z_dim: int = 100,
        embedding_dim: int = 128,
        text_dim: int = 1024,
        r_num: int = 2,
        b_condition: bool = True,
        embedding_norm: bool = False,
        *,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        if branch_num not in (1, 2, 3):
            raise ValueError(f"branch_num must be 1, 2 or 3 (64/128/256 px), found {branch_num}")
        if gf_dim % 4:
            raise ValueError(f"gf_dim must be divisible by 4, found {gf_dim}")
        self.args = {
            "branch_num": branch_num,
            "gf_dim": gf_dim,
            "z_dim": z_dim,
            "embedding_dim": embedding_dim,
            "text_dim": text_dim,
            "r_num": r_num,
            "b_condition": b_condition,
            "embedding_norm": embedding_norm,
        }
        self.embedding_norm = embedding_norm and b_condition
        if self.embedding_norm:
            self.register_buffer("emb_mean", torch.zeros(text_dim))
            self.register_buffer("emb_std", torch.ones(text_dim))
        self.branch_num = branch_num
        self.z_dim = z_dim
        self.text_dim = text_dim
        self.b_condition = b_condition
        # Unconditional: the original reuses z as the code tiled over the later stages.
        code_dim = embedding_dim if b_condition else z_dim
        if b_condition:
            self.ca_net = CANet(text_dim, embedding_dim)
        self.h_net1 = InitStageG(gf_dim * 16, z_dim + embedding_dim if b_condition else z_dim)
        self.img_net1 = GetImageG(gf_dim)
        if branch_num > 1:
            self.h_net2 = NextStageG(gf_dim, code_dim, r_num)
            self.img_net2 = GetImageG(gf_dim // 2)
        if branch_num > 2:
            self.h_net3 = NextStageG(gf_dim // 2, code_dim, r_num)
            self.img_net3 = GetImageG(gf_dim // 4)
        if init_weights:
            self.apply(weights_init)

    @torch.no_grad()
    def set_embedding_statistics(self, embeddings: torch.Tensor) -> None:
        """Sets the standardisation of ``embedding_norm`` from training embeddings ``(..., text_dim)``."""
        if not self.embedding_norm:
            raise ValueError("set_embedding_statistics needs a G_NET built with embedding_norm=True")
        flat = embeddings.reshape(-1, self.text_dim).double()
        self.emb_mean.copy_(flat.mean(0))
        self.emb_std.copy_(flat.std(0).clamp_min(1e-6))

    def forward(
        self, z: torch.Tensor, emb: torch.Tensor | None = None, *, use_mu: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """Generates one image per branch.

        Args:
            z: noise ``(B, z_dim)``.
            emb: conditioning embedding ``(B, text_dim)``; required when ``b_condition``, ignored otherwise.
            use_mu: take ``c = μ`` instead of sampling (deterministic generation). The original always
                samples, also in eval mode.

        Returns:
            ``([img64, img128, img256][:branch_num], μ, logσ²)``; images ``(B, 3, R, R)`` in [−1, 1];
            μ and logσ² ``(B, ef)``, or None for the unconditional model.
        """
        _check_input("G_NET noise z", z, (None, self.z_dim))
        if self.b_condition:
            if emb is None:
                raise ValueError("G_NET(b_condition=True) needs an embedding: call G(z, emb)")
            _check_input("G_NET embedding", emb, (z.shape[0], self.text_dim))
            if self.embedding_norm:
                emb = (emb - self.emb_mean) / self.emb_std
            c, mu, logvar = self.ca_net(emb, sample=not use_mu)
            h = self.h_net1(torch.cat((c, z), 1))
        else:
            c, mu, logvar = z, None, None
            h = self.h_net1(z)
        fake_imgs = [self.img_net1(h)]
        if self.branch_num > 1:
            h = self.h_net2(h, c)
            fake_imgs.append(self.img_net2(h))
        if self.branch_num > 2:
            h = self.h_net3(h, c)
            fake_imgs.append(self.img_net3(h))
        return fake_imgs, mu, logvar


# --------------------------------------------------------------------------------------------------
# Discriminators
# --------------------------------------------------------------------------------------------------


class D_NET(nn.Module):  # named after the original's D_NET64/128/256
    """One discriminator for 64, 128 or 256 px (the original's D_NET64 / D_NET128 / D_NET256, docs/original.md#s11-4).

    The image is encoded to ``x (B, 8·ndf, 4, 4)``: ``img_code_s16`` (÷16), then for 128 px
    ``img_code_s32`` (down to 16·ndf) and ``img_code_s32_1`` (back to 8·ndf), and for 256 px
    ``img_code_s32``, ``img_code_s64`` (32·ndf), ``img_code_s64_1`` (16·ndf), ``img_code_s64_2`` (8·ndf).
    Heads: conditional = ``logits(jointConv(cat(tile(c), x)))``, unconditional = ``uncond_logits(x)``, each
    a 4×4 stride-4 conv with bias and a sigmoid. Parameters (paper settings): 5,723,906 / 18,834,178 /
    71,269,122.

    Args:
        resolution: 64, 128 or 256.
        df_dim: base channel count ndf.
        embedding_dim: ef, size of the conditioning code (μ of the generator's CA net).
        b_condition: conditional model with the two heads; ``False`` keeps only ``logits`` on x.
        num_classes: ours, 0 (off) by default: also a linear class head on the image code
            (``class_logits``, see :meth:`classify`) for the auxiliary classification loss of AC-GAN
            (Odena et al. 2017). With 0 the module and its state_dict are the original's.
        init_weights: apply :func:`weights_init` (not stored in ``args``).
    """

    def __init__(
        self,
        resolution: int,
        df_dim: int = 64,
        embedding_dim: int = 128,
        b_condition: bool = True,
        num_classes: int = 0,
        *,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        if resolution not in RESOLUTIONS:
            raise ValueError(f"D_NET resolution must be one of {RESOLUTIONS}, found {resolution}")
        self.args = {
            "resolution": resolution,
            "df_dim": df_dim,
            "embedding_dim": embedding_dim,
            "b_condition": b_condition,
        }
        if num_classes < 0:
            raise ValueError(f"D_NET num_classes must be 0 (no class head) or positive, found {num_classes}")
        if num_classes:
            self.args["num_classes"] = num_classes  # absent when 0, so the original's D_args stay as they were
        self.num_classes = num_classes
        self.resolution = resolution
        self.ef_dim = embedding_dim
        self.b_condition = b_condition
        ndf = df_dim
        self.img_code_s16 = encode_image_by_16times(ndf)
        if resolution == 128:
            self.img_code_s32 = down_block(ndf * 8, ndf * 16)
            self.img_code_s32_1 = block3x3_leaky_relu(ndf * 16, ndf * 8)
        elif resolution == 256:
            self.img_code_s32 = down_block(ndf * 8, ndf * 16)
            self.img_code_s64 = down_block(ndf * 16, ndf * 32)
            self.img_code_s64_1 = block3x3_leaky_relu(ndf * 32, ndf * 16)
            self.img_code_s64_2 = block3x3_leaky_relu(ndf * 16, ndf * 8)
        self.logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())
        if b_condition:
            self.jointConv = block3x3_leaky_relu(ndf * 8 + embedding_dim, ndf * 8)
            self.uncond_logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())
        if num_classes:
            self.class_logits = nn.Linear(ndf * 8 * 4 * 4, num_classes)
        if init_weights:
            self.apply(weights_init)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, R, R) → x_code (B, 8·ndf, 4, 4)``, the unconditioned image code."""
        h = self.img_code_s16(x)
        if self.resolution == 128:
            h = self.img_code_s32_1(self.img_code_s32(h))
        elif self.resolution == 256:
            h = self.img_code_s64_2(self.img_code_s64_1(self.img_code_s64(self.img_code_s32(h))))
        return h

    def classify(self, x_code_flat: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` from the flat image code ``(B, 8·ndf·16)`` that forward returns."""
        if not self.num_classes:
            raise ValueError("D_NET.classify needs a discriminator built with num_classes > 0")
        return self.class_logits(x_code_flat)

    @staticmethod
    def _head(head: nn.Sequential, h: torch.Tensor, logits: bool) -> torch.Tensor:
        out = head[0](h) if logits else head(h)
        return out.view(-1)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor | None = None, *, logits: bool = False
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Scores images, with and without the condition.

        Args:
            x: images ``(B, 3, R, R)``.
            c: conditioning code ``(B, ef)`` (the generator's μ). Without it the "conditional" head scores
                x alone, as in the original.
            logits: return pre-sigmoid scores (for BCE-with-logits under AMP); the default returns the
                original's sigmoid probabilities.

        Returns:
            ``([cond (B,), uncond (B,)], x_code_flat (B, 8·ndf·16))``; only ``[cond]`` when
            ``b_condition=False``. ``x_code_flat`` is the unconditioned image code the fork returns for the
            class-aware loss (docs/original.md#s11-4).
        """
        r = self.resolution
        _check_input(f"D_NET({r}) images", x, (None, 3, r, r))
        x_code = self.encode(x)
        if self.b_condition and c is not None:
            _check_input(f"D_NET({r}) condition", c, (x.shape[0], self.ef_dim))
            s = x_code.shape[2]
            c_map = c[:, :, None, None].expand(-1, -1, s, s)
            h_c = self.jointConv(torch.cat((c_map, x_code), 1))
        else:
            h_c = x_code
        outputs = [self._head(self.logits, h_c, logits)]
        if self.b_condition:
            outputs.append(self._head(self.uncond_logits, x_code, logits))
        return outputs, x_code.reshape(x_code.shape[0], -1)


def make_discriminators(
    branch_num: int,
    df_dim: int = 64,
    embedding_dim: int = 128,
    b_condition: bool = True,
    *,
    init_weights: bool = True,
    num_classes: int = 0,
) -> nn.ModuleList:
    """One :class:`D_NET` per branch, in order 64, 128, 256 px (``netsD[i]`` sees branch i's images)."""
    if branch_num not in (1, 2, 3):
        raise ValueError(f"branch_num must be 1, 2 or 3, found {branch_num}")
    return nn.ModuleList(
        D_NET(BASE_SIZE * 2**i, df_dim, embedding_dim, b_condition, num_classes, init_weights=init_weights)
        for i in range(branch_num)
    )


# --------------------------------------------------------------------------------------------------
# Adapters for the original key layout (docs/original.md#s15: raw state dicts with ``module.`` prefixes)
# --------------------------------------------------------------------------------------------------


def _state_dict_from(state_dict_or_path, map_location) -> tuple[dict[str, torch.Tensor], str]:
    from s2i.checkpoints import extract_state_dict, load_checkpoint

    if isinstance(state_dict_or_path, (str, Path)):
        where = str(state_dict_or_path)
        ckpt = load_checkpoint(state_dict_or_path, map_location=map_location)
    elif isinstance(state_dict_or_path, Mapping):
        where, ckpt = "<state dict>", dict(state_dict_or_path)
    else:
        raise TypeError(f"expected a path or a state dict, found {type(state_dict_or_path).__name__}")
    state = extract_state_dict(ckpt, where)
    return _add_missing_bn_counters(state), where


def _add_missing_bn_counters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adds ``num_batches_tracked`` (0) to BatchNorm entries that lack it.

    Checkpoints written by PyTorch ≤ 0.4.0 have no such buffer; PyTorch itself fills it in for state
    dicts without version metadata, but our strict pre-check would otherwise report it as missing.
    """
    out = dict(state)
    for k, v in state.items():
        if k.endswith(".running_var"):
            counter = k[: -len("running_var")] + "num_batches_tracked"
            if counter not in out:
                out[counter] = torch.zeros((), dtype=torch.long, device=v.device)
    return out


def infer_generator_args(state: Mapping[str, torch.Tensor]) -> dict:
    """:class:`G_NET` constructor arguments read off the shapes of a state dict in the original layout.

    Keys without the ``module.`` prefix. ``text_dim``/``embedding_dim`` cannot be read from an
    unconditional model and keep their defaults there.
    """
    if "h_net1.fc.0.weight" not in state:
        raise ValueError("not a StackGAN-v2 generator state dict: no 'h_net1.fc.0.weight'")
    fc = state["h_net1.fc.0.weight"]  # (16·gf · 4·4 · 2, in_dim)
    gf_dim = int(fc.shape[0]) // (16 * 4 * 4 * 2)
    in_dim = int(fc.shape[1])
    b_condition = "ca_net.fc.weight" in state
    args: dict = {"gf_dim": gf_dim, "b_condition": b_condition}
    if b_condition:
        ca = state["ca_net.fc.weight"]  # (4·ef, text_dim)
        args["embedding_dim"] = int(ca.shape[0]) // 4
        args["text_dim"] = int(ca.shape[1])
        args["z_dim"] = in_dim - args["embedding_dim"]
    else:
        args["z_dim"] = in_dim
    args["branch_num"] = sum(f"img_net{i}.img.0.weight" in state for i in (1, 2, 3))
    args["embedding_norm"] = "emb_mean" in state  # our buffers: a netG_<N>.pth of a run with embedding_norm
    residuals = {k.split(".")[2] for k in state if k.startswith("h_net2.residual.")}
    if residuals:
        args["r_num"] = len(residuals)
    return args


def build_generator_from_state_dict(
    state: Mapping[str, torch.Tensor], where: str = "<state dict>", **overrides
) -> G_NET:
    """Builds a :class:`G_NET` that fits ``state`` (original key layout, no ``module.``) and loads it strictly.

    ``overrides`` (e.g. ``branch_num=3``) replace inferred arguments; the strict load then checks them.
    """
    from s2i.checkpoints import CheckpointError, load_weights

    try:
        args = infer_generator_args(state)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    args.update({k: v for k, v in overrides.items() if v is not None})
    model = G_NET(**args, init_weights=False)
    load_weights(model, dict(state), where)
    return model


def load_original_generator(
    state_dict_or_path,
    *,
    branch_num: int | None = None,
    text_dim: int | None = None,
    gf_dim: int | None = None,
    map_location: str | torch.device = "cpu",
    **overrides,
) -> G_NET:
    """Loads the authors' ``netG_<iter>.pth`` (or any state dict in the original layout) into a :class:`G_NET`.

    Accepts a path or a state dict, with or without the DataParallel ``module.`` prefix (also our
    one-dict checkpoints with a ``model`` entry). Architecture arguments not given are inferred from the
    shapes; the load is strict. Returns the model in train mode (call ``.eval()`` for generation, which
    uses the BN running statistics); a file is loaded onto ``map_location``.
    """
    state, where = _state_dict_from(state_dict_or_path, map_location)
    return build_generator_from_state_dict(
        state, where, branch_num=branch_num, text_dim=text_dim, gf_dim=gf_dim, **overrides
    )


def infer_discriminator_args(state: Mapping[str, torch.Tensor]) -> dict:
    """:class:`D_NET` constructor arguments read off a state dict in the original layout (no ``module.``)."""
    if "img_code_s16.0.weight" not in state:
        raise ValueError("not a StackGAN-v2 discriminator state dict: no 'img_code_s16.0.weight'")
    df_dim = int(state["img_code_s16.0.weight"].shape[0])
    resolution = 256 if "img_code_s64.0.weight" in state else 128 if "img_code_s32.0.weight" in state else 64
    args: dict = {"resolution": resolution, "df_dim": df_dim, "b_condition": "jointConv.0.weight" in state}
    if args["b_condition"]:
        args["embedding_dim"] = int(state["jointConv.0.weight"].shape[1]) - 8 * df_dim
    return args


def load_original_discriminator(
    state_dict_or_path, *, map_location: str | torch.device = "cpu", **overrides
) -> D_NET:
    """Loads the authors' ``netD<i>.pth`` (or a state dict in the original layout) into a :class:`D_NET`."""
    from s2i.checkpoints import CheckpointError, load_weights

    state, where = _state_dict_from(state_dict_or_path, map_location)
    try:
        args = infer_discriminator_args(state)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    args.update({k: v for k, v in overrides.items() if v is not None})
    model = D_NET(**args, init_weights=False)
    load_weights(model, state, where)
    return model
