"""StackGAN-v2 losses of the speech-to-image fork (docs/original.md#s11-5), as pure functions.

Notation: ``D`` a :class:`StackGAN.model.D_NET` returning ``([cond, uncond], x_code_flat)``; ``u`` the
weight of the unconditional terms (TRAIN.COEFF.UNCOND_LOSS, 1.0 in the birds config); ``μ, logσ²`` the
generator's CA outputs ``(B, ef)``. BCE is taken on the sigmoid outputs, as the original does; with
``logits=True`` the discriminator skips its sigmoid and BCE-with-logits is used instead, which is the
numerically safe form under mixed precision (docs/original.md#s15) and equal up to rounding.

Mixed precision: the functions that call a discriminator may run under ``torch.autocast`` (the trainer
does with ``--precision bf16``/``fp16``); D's passes then compute in 16 bits, while every loss turns
its 16-bit inputs to float32 and computes with autocast off (``s2i.precision.upcast``, ``fp32_region``).
Without autocast that is a no-op: float32 (and float64) inputs are used as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from s2i.precision import fp32_region, upcast

COLOUR_COVARIANCE_WEIGHT = 5.0
"""Upstream StackGAN-v2 weighs the covariance term of the colour-consistency loss 5× the mean term."""


def _bce(out: torch.Tensor, target: float, logits: bool) -> torch.Tensor:
    """Mean BCE of scores ``out (B,)`` against a constant label (1 real, 0 fake), in float32."""
    with fp32_region():
        out = upcast(out)
        t = torch.full_like(out, target)
        return F.binary_cross_entropy_with_logits(out, t) if logits else F.binary_cross_entropy(out, t)


def discriminator_loss(
    D: nn.Module,
    real: torch.Tensor,
    wrong: torch.Tensor,
    fake: torch.Tensor,
    mu: torch.Tensor | None,
    uncond_weight: float = 1.0,
    *,
    logits: bool = False,
    aux_weight: float = 0.0,
    labels: torch.Tensor | None = None,
    wrong_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss of one discriminator D_i on its resolution (docs/original.md#s11-5).

    ``L_D = BCE(D^c(real, c), 1) + BCE(D^c(wrong, c), 0) + BCE(D^c(fake.detach(), c), 0)
    + u·[BCE(D^u(real), 1) + BCE(D^u(wrong), 1) + BCE(D^u(fake.detach()), 0)]`` with ``c = μ.detach()``:
    no gradient reaches the generator. Wrong images (real images of another class) count as *real* for
    the unconditional head. When ``u <= 0`` or D has no unconditional head, the original's fallback
    ``real + ½(wrong + fake)`` of the conditional terms applies.

    Args:
        D: discriminator for this resolution.
        real, wrong, fake: images ``(B, 3, R, R)``; ``fake`` is detached here.
        mu: the generator's μ ``(B, ef)`` (detached here), or None for an unconditional model.
        uncond_weight: u.
        logits: use the pre-sigmoid scores and BCE-with-logits.
        aux_weight: ours, 0 = off (the paper): add ``aux_weight·[CE(D_cls(real), y) + CE(D_cls(wrong), y_wrong)]``,
            the auxiliary classifier of AC-GAN (Odena et al. 2017) trained on real images only
            (:func:`auxiliary_class_loss`); needs a D built with ``num_classes``.
        labels, wrong_labels: class indices ``(B,)`` in ``[0, num_classes)`` of the real and wrong images.

    Returns:
        Scalar loss.
    """
    c = None if mu is None else mu.detach()
    real_out, real_code = D(real, c, logits=logits)
    wrong_out, wrong_code = D(wrong, c, logits=logits)
    fake_out, _ = D(fake.detach(), c, logits=logits)
    aux = real.new_zeros(())
    if aux_weight > 0:
        if labels is None or wrong_labels is None:
            raise ValueError("discriminator_loss: the auxiliary class loss (aux_weight > 0) needs labels and wrong_labels")
        aux = aux_weight * (auxiliary_class_loss(D, real_code, labels) + auxiliary_class_loss(D, wrong_code, wrong_labels))
    err_real = _bce(real_out[0], 1.0, logits)
    err_wrong = _bce(wrong_out[0], 0.0, logits)
    err_fake = _bce(fake_out[0], 0.0, logits)
    if len(real_out) > 1 and uncond_weight > 0:
        err_real = err_real + uncond_weight * _bce(real_out[1], 1.0, logits)
        err_wrong = err_wrong + uncond_weight * _bce(wrong_out[1], 1.0, logits)
        err_fake = err_fake + uncond_weight * _bce(fake_out[1], 0.0, logits)
        return err_real + err_wrong + err_fake + aux
    return err_real + 0.5 * (err_wrong + err_fake) + aux


def auxiliary_class_loss(D: nn.Module, x_code: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of D's class head on image codes (AC-GAN, Odena et al. 2017; ours, not in the paper).

    Args:
        D: a discriminator built with ``num_classes`` (its :meth:`~StackGAN.model.D_NET.classify`).
        x_code: D's flat image codes ``(B, N)``.
        labels: class indices ``(B,)``.

    Returns:
        Scalar mean cross-entropy.
    """
    class_logits = D.classify(x_code)
    with fp32_region():
        return F.cross_entropy(upcast(class_logits), labels.to(x_code.device))


def generator_adv_loss(
    D: nn.Module,
    fake: torch.Tensor,
    mu: torch.Tensor | None,
    uncond_weight: float = 1.0,
    *,
    logits: bool = False,
    return_code: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Adversarial loss of the generator on one branch (docs/original.md#s11-5).

    ``BCE(D^c(fake, μ), 1) + u·BCE(D^u(fake), 1)``. μ is *not* detached, so gradients reach the CA net
    through the discriminator's conditioning as well as through the image.

    Args:
        D: discriminator for this branch's resolution.
        fake: generated images ``(B, 3, R, R)``.
        mu: μ ``(B, ef)``, or None for an unconditional model.
        uncond_weight: u.
        logits: use the pre-sigmoid scores and BCE-with-logits.
        return_code: also return D's ``x_code_flat (B, N)`` of the fakes, for :func:`class_aware_loss`
            without a second forward pass.

    Returns:
        Scalar loss, or ``(loss, x_code_flat)``.
    """
    out, x_code = D(fake, mu, logits=logits)
    err = _bce(out[0], 1.0, logits)
    if len(out) > 1 and uncond_weight > 0:
        err = err + uncond_weight * _bce(out[1], 1.0, logits)
    return (err, x_code) if return_code else err


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) of the CA net, ``−½·mean(1 + logσ² − μ² − exp(logσ²))`` (docs/original.md#s11-5).

    The mean runs over all ``B × ef`` elements, as the original's ``KL_loss`` (not a sum over ef).
    """
    with fp32_region():
        mu, logvar = upcast(mu), upcast(logvar)
        return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


def class_aware_loss(x_code: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The fork's class-aware loss ("CAL", docs/original.md#s11-5): same-class fakes should look alike to D.

    With ``X = x_code (B, N)`` (D's unconditioned codes of the fake images), ``G = X Xᵀ`` and
    P the same-class pairs ``(i, j), i ≠ j``: ``max(0, mean(G) − mean(G[P])) / N``, and 0 when P is
    empty. ``mean(G)`` includes the diagonal, as in the original. A bool mask replaces the original's
    uint8 mask and CPU list comprehension (docs/original.md#bug-22); there is no host synchronisation.

    Args:
        x_code: ``(B, N)``.
        labels: class labels ``(B,)``.

    Returns:
        Scalar loss.
    """
    b, n = x_code.shape
    with fp32_region():
        x_code = upcast(x_code)
        labels = labels.to(x_code.device)
        g = x_code @ x_code.t()
        eye = torch.eye(b, dtype=torch.bool, device=x_code.device)
        pairs = (labels[:, None] == labels[None, :]) & ~eye
        count = pairs.sum()
        pair_mean = torch.where(pairs, g, torch.zeros_like(g)).sum() / count.clamp(min=1)
        loss = F.relu(g.mean() - pair_mean) / n
        return torch.where(count > 0, loss, torch.zeros_like(loss))


def faithful_cal_weight(cal_loss_coeff: float) -> float:
    """The weight the original actually gives the class-aware loss for a TRAIN.COEFF.CAL_LOSS value.

    The original only tests ``CAL_LOSS > 0`` and never multiplies by it (docs/original.md#bug-22): the birds
    config's 50.0 means weight 1.0.
    """
    return 1.0 if cal_loss_coeff > 0 else 0.0


def compute_mean_covariance(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image channel means ``(B, C, 1, 1)`` and channel covariances ``(B, C, C)`` over the pixels.

    The covariance divides by the pixel count (not count − 1), as upstream StackGAN-v2.
    """
    b, ch, h, w = img.shape
    mu = img.mean(dim=(2, 3), keepdim=True)
    centred = (img - mu).reshape(b, ch, h * w)
    return mu, centred @ centred.transpose(1, 2) / (h * w)


def colour_consistency_loss(img_small: torch.Tensor, img_large: torch.Tensor) -> torch.Tensor:
    """Upstream StackGAN-v2's colour-consistency loss between consecutive scales (docs/original.md#s11-5).

    ``MSE(μ_large, μ_small) + 5·MSE(Σ_large, Σ_small)``, where μ and Σ are the per-image channel mean and
    covariance of the pixels (:func:`compute_mean_covariance`) and MSE averages over all elements. As
    upstream, the smaller image is detached: the loss pulls the larger image's colour statistics towards
    the smaller one's. The original multiplies it by TRAIN.COEFF.COLOR_LOSS, 0 in this project's
    configs, so it is off by default.

    Args:
        img_small: images of branch i ``(B, 3, R, R)``.
        img_large: images of branch i+1 ``(B, 3, 2R, 2R)``.
    """
    with fp32_region():
        mu_s, cov_s = compute_mean_covariance(upcast(img_small.detach()))
        mu_l, cov_l = compute_mean_covariance(upcast(img_large))
        return F.mse_loss(mu_l, mu_s) + COLOUR_COVARIANCE_WEIGHT * F.mse_loss(cov_l, cov_s)


def teacher_feature_loss(fake_feats: torch.Tensor, target_feats: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Teacher loss (ours, not in the paper): the generated image should look, to the frozen image teacher of
    stage B, like the real image its caption describes.

    ``L = mean_l mean_b [1 − cos(f_l(fake_b), f_l(real_b))]`` over the teacher's pooled layers l (each
    layer weighs the same whatever its width, so the 80 channels of stage 4 count as much as the 1280 of
    the head). The features are globally pooled, so the loss asks for the right colour, shape and size but
    not the real image's position, which a caption does not always say. It is a perceptual loss in the
    sense of Johnson et al. 2016, on pooled features; AttnGAN's DAMSM loss (Xu et al. 2018) is the
    text-to-image relative that compares with the caption instead of the image.

    Args:
        fake_feats: teacher features of the generated images ``(B, Σ dims)`` (with gradient).
        target_feats: teacher features of the real images of their captions ``(B, Σ dims)``.
        dims: channel count of each layer, in order (``Lite0Perception.dims``).

    Returns:
        Scalar loss in [0, 2].
    """
    if fake_feats.shape != target_feats.shape or fake_feats.shape[-1] != sum(dims):
        raise ValueError(f"teacher_feature_loss: fake {tuple(fake_feats.shape)} and target "
                         f"{tuple(target_feats.shape)} features must both be (B, {sum(dims)})")
    with fp32_region():
        fake_feats = upcast(fake_feats)
        target = target_feats.to(fake_feats)
        terms = [1 - F.cosine_similarity(f, t, dim=1, eps=1e-8).mean()
                 for f, t in zip(fake_feats.split(list(dims), dim=1), target.split(list(dims), dim=1))]
        return torch.stack(terms).mean()


def generator_loss(
    netsD,
    fake_imgs: list[torch.Tensor],
    mu: torch.Tensor | None,
    logvar: torch.Tensor | None,
    labels: torch.Tensor | None = None,
    *,
    uncond_weight: float = 1.0,
    kl_weight: float = 2.0,
    cal_weight: float = 1.0,
    colour_weight: float = 0.0,
    aux_weight: float = 0.0,
    class_index: torch.Tensor | None = None,
    logits: bool = False,
    teacher: nn.Module | None = None,
    teacher_target: torch.Tensor | None = None,
    teacher_weight: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """The generator's total loss (docs/original.md#s11-5).

    ``L_G = Σ_i [adv_i + cal_weight·CAL_i] + kl_weight·KL + colour_weight·Σ_i colour(fake_i, fake_{i+1})``
    with ``adv_i`` from :func:`generator_adv_loss` and ``CAL_i`` from :func:`class_aware_loss` on the same
    discriminator pass. The faithful values are ``kl_weight=2``, ``uncond_weight=1``, ``colour_weight=0``
    and ``cal_weight=1`` whenever the config's CAL_LOSS is positive (its 50.0 is only a switch; see
    :func:`faithful_cal_weight`); ``cal_weight=0`` turns the class-aware loss off. KL is skipped for an
    unconditional model (``mu`` None).

    Args:
        netsD: one discriminator per branch.
        fake_imgs: the generator's images, one per branch.
        mu, logvar: CA outputs ``(B, ef)``, or None.
        labels: class labels ``(B,)``; required when ``cal_weight > 0``.
        aux_weight: ours, 0 = off: add ``aux_weight·Σ_i CE(D_i,cls(fake_i), y)``, so the fakes are drawn to be
            classified as the class of their caption (AC-GAN's generator term).
        class_index: class indices ``(B,)`` in ``[0, num_classes)``; required when ``aux_weight > 0``.
        teacher: ours, with ``teacher_weight > 0``: a frozen feature network (``s2i.features.teachers.Lite0Perception``)
            applied to the last branch's images for :func:`teacher_feature_loss`.
        teacher_target: the teacher's features of each caption's real image ``(B, Σ teacher.dims)``.
        teacher_weight: weight of the teacher loss; 0 = off (the paper).

    Returns:
        ``(total, parts)`` with ``parts = {'adv': [per branch], 'cal': [per branch, unweighted],
        'aux': [per branch, unweighted], 'kl': unweighted KL or None, 'colour': unweighted sum or None,
        'teacher': unweighted teacher loss or None}``.
    """
    if cal_weight > 0 and labels is None:
        raise ValueError("generator_loss: the class-aware loss (cal_weight > 0) needs the class labels")
    if aux_weight > 0 and class_index is None:
        raise ValueError("generator_loss: the auxiliary class loss (aux_weight > 0) needs class_index")
    if teacher_weight > 0 and (teacher is None or teacher_target is None):
        raise ValueError("generator_loss: the teacher loss (teacher_weight > 0) needs teacher and teacher_target")
    total = fake_imgs[0].new_zeros((), dtype=torch.promote_types(fake_imgs[0].dtype, torch.float32))
    parts: dict = {"adv": [], "cal": [], "aux": [], "kl": None, "colour": None, "teacher": None}
    for D, fake in zip(netsD, fake_imgs):
        adv, x_code = generator_adv_loss(D, fake, mu, uncond_weight, logits=logits, return_code=True)
        parts["adv"].append(adv)
        total = total + adv
        if cal_weight > 0:
            cal = class_aware_loss(x_code, labels)
            parts["cal"].append(cal)
            total = total + cal_weight * cal
        if aux_weight > 0:
            aux = auxiliary_class_loss(D, x_code, class_index)
            parts["aux"].append(aux)
            total = total + aux_weight * aux
    if mu is not None and logvar is not None:
        parts["kl"] = kl_loss(mu, logvar)
        total = total + kl_weight * parts["kl"]
    if colour_weight > 0 and len(fake_imgs) > 1:
        colour = sum(colour_consistency_loss(s, big) for s, big in zip(fake_imgs[:-1], fake_imgs[1:]))
        parts["colour"] = colour
        total = total + colour_weight * colour
    if teacher_weight > 0:
        parts["teacher"] = teacher_feature_loss(teacher(fake_imgs[-1]), teacher_target, teacher.dims)
        total = total + teacher_weight * parts["teacher"]
    return total, parts
