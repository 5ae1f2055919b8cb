"""Teacher–student losses of the speech encoder (docs/original.md#s6), as pure functions.

Notation as in docs/original.md#s6: ``a (B, D)`` speech embeddings (student), ``v (B, D)`` image features of the
paired images (teacher, no gradient), ``y (B,)`` class labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def joint_embedding_loss(
    v: torch.Tensor, a: torch.Tensor, y: torch.Tensor, c_diff: float = 1.0, c_same: float = 1.0
) -> torch.Tensor:
    """Joint embedding loss (JEL, docs/original.md#s6-1).

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
    """``mean |a/‖a‖_F − v/‖v‖_F|`` with Frobenius norms of the whole batch matrices (docs/original.md#s6-2)."""
    return (a / a.norm() - v / v.norm()).abs().mean()


def distillation_loss(a: torch.Tensor, v: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL(softmax(v/T) ‖ softmax(a)) summed and divided by ``B·D`` (docs/original.md#s6-3).

    The temperature softens the teacher only, and there is no T² factor; this is what the original's
    ``F.kl_div(log_softmax(a), softmax(v/T))`` with the old ``'mean'`` reduction computed (§14 #7).
    """
    log_p = F.log_softmax(v / temperature, dim=1)
    log_q = F.log_softmax(a, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum() / a.numel()


def class_prototypes(features: list, labels, num_classes: int | None = None) -> torch.Tensor:
    """Unit-length mean teacher feature of each class, ``(K, D)``: the targets of :func:`prototype_loss`.

    Args:
        features: per image, its teacher views ``(V, D)`` (or one ``(D,)`` vector).
        labels: ``(N,)`` class of each image, 0-based.
        num_classes: K (default ``max(labels) + 1``); a class without images gets a zero row.
    """
    y = torch.as_tensor(labels, dtype=torch.long)
    d = int(torch.as_tensor(features[0]).shape[-1])
    k = int(num_classes if num_classes is not None else int(y.max()) + 1)
    sums = torch.zeros(k, d, dtype=torch.float64)
    for f, c in zip(features, y.tolist()):
        sums[c] += torch.as_tensor(f, dtype=torch.float64).reshape(-1, d).mean(0)
    return F.normalize(sums, dim=1).float()


def prototype_loss(a: torch.Tensor, y: torch.Tensor, prototypes: torch.Tensor, temperature: float = 0.1
                   ) -> torch.Tensor:
    """Cross-entropy of each speech embedding over the classes' teacher prototypes (not in the paper).

    ``logits[i, c] = cos(a_i, p_c) / τ`` and ``L = CE(logits, y)``, mean over the batch: a softmax over
    class centres of the *image* features, so the student still learns the teacher's space, but every
    sample is pushed towards its class and away from all others at once, not only from the classes that
    happen to share its batch as in the JEL. It speeds up learning on small CPU budgets (the shapes demo).

    Args:
        a: ``(B, D)`` speech embeddings; ``y (B,)`` labels in ``[0, K)``.
        prototypes: ``(K, D)`` from :func:`class_prototypes`.
    """
    logits = F.normalize(a, dim=1) @ prototypes.t() / temperature
    return F.cross_entropy(logits, y)


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
    proto: bool = False
    lambda_proto: float = 1.0
    proto_T: float = 0.1


def encoder_loss(a: torch.Tensor, v: torch.Tensor, y: torch.Tensor, w: LossWeights,
                 prototypes: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """``L = L_JEL + λ_L1·L_L1 + λ_dis·L_dis`` (docs/original.md#s6-4), plus ``λ_proto·L_proto`` when ``w.proto``
    (:func:`prototype_loss`, ours, off by default); disabled terms are 0.

    Returns:
        (total loss, dict of detached terms ``jel``, ``l1``, ``distill`` (``proto`` when on) and the batch ``accu``).
    """
    zero = a.new_zeros(())
    jel = joint_embedding_loss(v, a, y, w.loss_diff, w.loss_same) if w.jel else zero
    l1 = normalised_l1_loss(a, v) if w.l1 else zero
    dis = distillation_loss(a, v, w.distill_T) if w.distill else zero
    total = jel + w.lambda_l1 * l1 + w.lambda_distill * dis
    terms = {"jel": jel.detach(), "l1": l1.detach(), "distill": dis.detach(), "accu": batch_accuracy(v, a)}
    if w.proto:
        if prototypes is None:
            raise ValueError("the prototype loss is on but no class prototypes were given")
        proto = prototype_loss(a, y, prototypes.to(a.device, a.dtype), w.proto_T)
        total = total + w.lambda_proto * proto
        terms["proto"] = proto.detach()
    return total, terms
