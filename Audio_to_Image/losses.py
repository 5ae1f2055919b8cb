"""Teacher–student losses of the speech encoder (SPEC §6), as pure functions.

Notation as in the SPEC: ``a (B, D)`` speech embeddings (student), ``v (B, D)`` image features of the
paired images (teacher, no gradient), ``y (B,)`` class labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def joint_embedding_loss(
    v: torch.Tensor, a: torch.Tensor, y: torch.Tensor, c_diff: float = 1.0, c_same: float = 1.0
) -> torch.Tensor:
    """Joint embedding loss (JEL, SPEC §6.1).

    ``S = v aᵀ`` and ``M[i, j] = S[i, j] − S[j, j]``: each speech sample j anchors its own column, so
    its matched image j is compared with every other image i (the original's per-column broadcasting).
    Pairs of different classes pay ``max(0, 1 + M)``; pairs of the same class, the diagonal included,
    pay ``max(0, M)``. The sum is weighted by ``c_diff``/``c_same`` and divided by ``B²``.
    """
    b = v.shape[0]
    s = v @ a.t()  # (B, B)
    m = s - torch.diagonal(s).unsqueeze(0)
    same = y.unsqueeze(1) == y.unsqueeze(0)
    hinge = torch.where(same, c_same * F.relu(m), c_diff * F.relu(1.0 + m))
    return hinge.sum() / (b * b)


@torch.no_grad()
def batch_accuracy(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """In-batch image→speech retrieval accuracy in percent, ``mean_i [argmax_j ⟨v_i, a_j⟩ == i]`` (logging only)."""
    s = v @ a.t()
    return (s.argmax(dim=1) == torch.arange(s.shape[0], device=s.device)).float().mean() * 100.0


def normalised_l1_loss(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``mean |a/‖a‖_F − v/‖v‖_F|`` with Frobenius norms of the whole batch matrices (SPEC §6.2)."""
    return (a / a.norm() - v / v.norm()).abs().mean()


def distillation_loss(a: torch.Tensor, v: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL(softmax(v/T) ‖ softmax(a)) summed and divided by ``B·D`` (SPEC §6.3).

    The temperature softens the teacher only, and there is no T² factor; this is what the original's
    ``F.kl_div(log_softmax(a), softmax(v/T))`` with the old ``'mean'`` reduction computed (§14 #7).
    """
    log_p = F.log_softmax(v / temperature, dim=1)
    log_q = F.log_softmax(a, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum() / a.numel()


@dataclass(frozen=True)
class LossWeights:
    """Which terms are on and their weights (``--jel_flag --loss_diff --loss_same``, …)."""

    jel: bool = False
    loss_diff: float = 1.0
    loss_same: float = 1.0
    l1: bool = False
    lambda_l1: float = 1.0
    distill: bool = False
    lambda_distill: float = 1.0
    distill_T: float = 2.0


def encoder_loss(a: torch.Tensor, v: torch.Tensor, y: torch.Tensor, w: LossWeights) -> tuple[torch.Tensor, dict]:
    """``L = L_JEL + λ_L1·L_L1 + λ_dis·L_dis`` (SPEC §6.4); disabled terms are 0.

    Returns:
        (total loss, dict of detached terms ``jel``, ``l1``, ``distill`` and the batch ``accu``).
    """
    zero = a.new_zeros(())
    jel = joint_embedding_loss(v, a, y, w.loss_diff, w.loss_same) if w.jel else zero
    l1 = normalised_l1_loss(a, v) if w.l1 else zero
    dis = distillation_loss(a, v, w.distill_T) if w.distill else zero
    total = jel + w.lambda_l1 * l1 + w.lambda_distill * dis
    terms = {"jel": jel.detach(), "l1": l1.detach(), "distill": dis.detach(), "accu": batch_accuracy(v, a)}
    return total, terms
