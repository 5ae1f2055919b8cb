"""Retrieval metrics for the speech encoder (docs/original.md#s9), as pure numpy functions.

Two families:

* The paper's class-centre metrics (``EvalClass`` in the original ``train_audio_encoder.py``):
  :func:`class_centre_accuracy` ("accu") and :func:`precision_at_k` ("ap50"). They score every
  image feature against the mean speech embedding of each class with an unnormalised dot
  product. Two bugs of the original are fixed (docs/original.md#bug-8): ``k`` is honoured (the original
  always used 50) and labels are remapped with ``np.unique`` (sorted, deterministic) instead of
  Python ``set`` iteration order.
* Class-level cross-modal retrieval, not in the original code but standard for speech-image
  embeddings: speech->image and image->speech Recall@K and mAP, where a retrieved item counts
  as correct when it has the query's class (:func:`recall_at_k`,
  :func:`mean_average_precision`).

:func:`speech_encoder_metrics` computes all of them for paired arrays (row i of the image
features and of the speech embeddings is the same image/caption pair).

Rankings sort by descending score with a stable sort, so ties are broken by the lower gallery
index, deterministically.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import numpy as np

__all__ = [
    "class_centre_accuracy",
    "mean_average_precision",
    "precision_at_k",
    "recall_at_k",
    "similarity_matrix",
    "speech_encoder_metrics",
]

SimilarityKind = Literal["cosine", "dot"]

# Rankings are computed on blocks of query rows holding about this many similarity entries,
# so that a (Q, G) argsort never needs more than a few tens of MB at once.
_BLOCK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------- validation


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """Check that ``x`` is a non-empty, finite, real 2-D array; return it as float64."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dim), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name} contains NaN or infinite values in {bad} of {arr.shape[0]} rows")
    return arr


def _as_labels(labels: np.ndarray, n: int, name: str, rows_of: str) -> np.ndarray:
    """Check that ``labels`` is 1-D with ``n`` entries (one per row of ``rows_of``)."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but {rows_of} has {n} rows")
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    return arr


def _same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} has dimension {a.shape[1]} but {name_b} has dimension {b.shape[1]}; they must match"
        )


def _joint_codes(query_labels: np.ndarray, gallery_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map two label arrays onto shared integer codes 0..C-1 (``np.unique`` order)."""
    numeric_q = query_labels.dtype.kind in "biuf"
    numeric_g = gallery_labels.dtype.kind in "biuf"
    if numeric_q != numeric_g:
        raise ValueError(
            f"query labels ({query_labels.dtype}) and gallery labels ({gallery_labels.dtype}) "
            "must both be numbers or both be strings"
        )
    _, codes = np.unique(np.concatenate([query_labels, gallery_labels]), return_inverse=True)
    codes = codes.reshape(-1)
    return codes[: len(query_labels)], codes[len(query_labels) :]


def _check_k(k: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    return int(k)


def _as_sequence(ks: Iterable[int]) -> list[int]:
    ks = list(ks) if not isinstance(ks, int | np.integer) else [ks]
    if not ks:
        raise ValueError("ks must name at least one cut-off K")
    return ks


# --------------------------------------------------------------------------- similarity and ranking


def similarity_matrix(a: np.ndarray, b: np.ndarray, kind: SimilarityKind = "cosine") -> np.ndarray:
    """Pairwise similarity between the rows of ``a`` and ``b``.

    Args:
        a: ``(Q, D)`` queries.
        b: ``(G, D)`` gallery.
        kind: ``"cosine"`` (rows scaled to unit L2 norm; an all-zero row has similarity 0 to
            everything) or ``"dot"`` (raw inner product).

    Returns:
        ``(Q, G)`` float64 matrix, ``S[q, g] = sim(a[q], b[g])``.
    """
    a = _as_matrix(a, "a")
    b = _as_matrix(b, "b")
    _same_dim(a, b, "a", "b")
    if kind == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    elif kind != "dot":
        raise ValueError(f"similarity kind must be 'cosine' or 'dot', got {kind!r}")
    return a @ b.T


def _checked_retrieval_inputs(
    sim: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sim = _as_matrix(sim, "sim")
    query_labels = _as_labels(query_labels, sim.shape[0], "query_labels", "sim")
    gallery_labels = _as_labels(gallery_labels, sim.shape[1], "gallery_labels", "sim (columns)")
    q_codes, g_codes = _joint_codes(query_labels, gallery_labels)
    return sim, q_codes, g_codes


def _ranked_relevance(sim: np.ndarray, q_codes: np.ndarray, g_codes: np.ndarray) -> Iterator[np.ndarray]:
    """Yield, block by block of queries, ``rel[q, r]`` = the rank-r gallery item has q's class.

    Ranks come from a stable argsort of ``-sim`` (descending score, ties to the lower index).
    """
    n_query, n_gallery = sim.shape
    rows = max(1, _BLOCK_ELEMENTS // n_gallery)
    for start in range(0, n_query, rows):
        order = np.argsort(-sim[start : start + rows], axis=1, kind="stable")
        yield g_codes[order] == q_codes[start : start + rows, None]


def _recall_and_map(
    sim: np.ndarray, q_codes: np.ndarray, g_codes: np.ndarray, ks: list[int]
) -> tuple[dict[int, float], float | None]:
    """Recall@K for every K and mAP from one ranking pass (inputs already validated).

    Returns:
        ``({K: recall}, mAP)``; mAP is None when no query has a relevant item.
    """
    n_query, n_gallery = sim.shape
    ranks = np.arange(1, n_gallery + 1, dtype=np.float64)
    hits = dict.fromkeys(ks, 0)
    ap_sum = 0.0
    n_scored = 0
    for rel in _ranked_relevance(sim, q_codes, g_codes):
        n_rel = rel.sum(axis=1)
        has_rel = n_rel > 0
        first_hit = np.where(has_rel, rel.argmax(axis=1), n_gallery)
        for k in ks:
            hits[k] += int((first_hit < k).sum())
        precision_at_hits = np.where(rel, np.cumsum(rel, axis=1) / ranks, 0.0).sum(axis=1)
        ap_sum += float((precision_at_hits[has_rel] / n_rel[has_rel]).sum())
        n_scored += int(has_rel.sum())
    recalls = {k: hits[k] / n_query for k in ks}
    return recalls, (ap_sum / n_scored if n_scored else None)


def recall_at_k(
    sim: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[int, float]:
    """Class-level Recall@K: the fraction of queries with an item of their class in the top K.

    A query whose class does not occur in the gallery counts as a miss. ``K`` larger than the
    gallery means the whole gallery.

    Args:
        sim: ``(Q, G)`` similarities, higher = more similar.
        query_labels: ``(Q,)`` class of each query.
        gallery_labels: ``(G,)`` class of each gallery item.
        ks: the cut-offs K.

    Returns:
        ``{K: recall}`` with recalls as fractions in [0, 1], in the order of ``ks``.
    """
    sim, q_codes, g_codes = _checked_retrieval_inputs(sim, query_labels, gallery_labels)
    ks = [_check_k(k, "each K in ks") for k in _as_sequence(ks)]
    return _recall_and_map(sim, q_codes, g_codes, ks)[0]


def mean_average_precision(sim: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray) -> float:
    """Class-level mean average precision over the full ranking.

    For a query with R relevant gallery items (same class) at ranks r_1 < ... < r_R (1-based),
    ``AP = (1/R) * sum_j j / r_j`` (precision at each relevant rank, averaged). mAP is the mean
    AP over the queries with at least one relevant item; the others are skipped.

    Args:
        sim: ``(Q, G)`` similarities, higher = more similar.
        query_labels: ``(Q,)`` class of each query.
        gallery_labels: ``(G,)`` class of each gallery item.

    Returns:
        mAP as a fraction in [0, 1].

    Raises:
        ValueError: bad shapes, NaN, or no query has any relevant item.
    """
    sim, q_codes, g_codes = _checked_retrieval_inputs(sim, query_labels, gallery_labels)
    mean_ap = _recall_and_map(sim, q_codes, g_codes, [1])[1]
    if mean_ap is None:
        raise ValueError("mean_average_precision: no query has a gallery item of its class")
    return mean_ap


# --------------------------------------------------------------------------- class-centre metrics


def _class_centre_scores(
    image_feats: np.ndarray,
    speech_embs: np.ndarray,
    image_labels: np.ndarray,
    speech_labels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of every image against every speech class centre (docs/original.md#s9 steps 1-3).

    Returns:
        ``scores`` ``(N, C)`` = ``V · μᵀ`` with ``μ_c`` the mean speech embedding of class c
        (classes in ``np.unique(speech_labels)`` order), and ``image_codes`` ``(N,)``: each
        image's class index in 0..C-1, or -1 when no speech embedding has that class.
    """
    v = _as_matrix(image_feats, "image_feats")
    a = _as_matrix(speech_embs, "speech_embs")
    _same_dim(v, a, "image_feats", "speech_embs")
    image_labels = _as_labels(image_labels, v.shape[0], "image_labels", "image_feats")
    speech_labels = _as_labels(speech_labels, a.shape[0], "speech_labels", "speech_embs")
    if (image_labels.dtype.kind in "biuf") != (speech_labels.dtype.kind in "biuf"):
        raise ValueError(
            f"image_labels ({image_labels.dtype}) and speech_labels ({speech_labels.dtype}) "
            "must both be numbers or both be strings"
        )

    classes, speech_codes = np.unique(speech_labels, return_inverse=True)
    speech_codes = speech_codes.reshape(-1)
    one_hot = speech_codes[None, :] == np.arange(len(classes))[:, None]  # (C, M)
    centres = (one_hot @ a) / one_hot.sum(axis=1, keepdims=True)  # (C, D)

    pos = np.clip(np.searchsorted(classes, image_labels), 0, len(classes) - 1)
    image_codes = np.where(classes[pos] == image_labels, pos, -1)
    return v @ centres.T, image_codes


def class_centre_accuracy(
    image_feats: np.ndarray,
    speech_embs: np.ndarray,
    image_labels: np.ndarray,
    speech_labels: np.ndarray,
) -> float:
    """The paper's "accu": classify each image by its nearest speech class centre (docs/original.md#s9-4).

    ``μ_c`` = mean of the speech embeddings of class c, ``S = V · μᵀ`` (unnormalised dot
    product), ``accu = 100 · mean_i [argmax_c S[i, c] == y_i]``. Ties go to the class that
    sorts first. In the paper's protocol N == M and both label arrays are the same vector.

    Args:
        image_feats: ``(N, D)`` image features V (one view per image).
        speech_embs: ``(M, D)`` speech embeddings.
        image_labels: ``(N,)`` class of each image (any sortable labels, e.g. CUB class ids).
        speech_labels: ``(M,)`` class of each speech embedding.

    Returns:
        Accuracy in percent, in [0, 100].

    Raises:
        ValueError: bad shapes or NaN, or an image class with no speech embedding (such an
            image could never be classified correctly).
    """
    scores, image_codes = _class_centre_scores(image_feats, speech_embs, image_labels, speech_labels)
    if (image_codes < 0).any():
        missing = np.unique(np.asarray(image_labels)[image_codes < 0])
        raise ValueError(
            f"image_labels has classes with no speech embedding: {missing[:10].tolist()}"
            f"{' ...' if len(missing) > 10 else ''} ({len(missing)} classes); every image class needs "
            "a speech class centre"
        )
    return 100.0 * float(np.mean(scores.argmax(axis=1) == image_codes))


def precision_at_k(
    image_feats: np.ndarray,
    speech_embs: np.ndarray,
    image_labels: np.ndarray,
    speech_labels: np.ndarray,
    k: int = 50,
) -> float:
    """The paper's "ap50" for ``k = 50``: mean precision@k of image retrieval by class centre.

    For each speech class c (C classes), rank the images by ``S[:, c] = V · μ_c`` and count the
    images of class c among the top k; ``100 · Σ_c hits_c / (k · C)`` (docs/original.md#s9-5).

    This is mean **precision@k**, not average precision, despite the name in the original logs.
    A class with fewer than k images can hit at most that many, so the value is capped below
    100 whenever some class has fewer than k images (CUB test classes have about 60).

    Args:
        image_feats: ``(N, D)`` image features.
        speech_embs: ``(M, D)`` speech embeddings.
        image_labels: ``(N,)`` class of each image; images of classes without speech are
            distractors that never count as hits.
        speech_labels: ``(M,)`` class of each speech embedding; defines the C classes.
        k: images retrieved per class; must be at most N.

    Returns:
        Precision in percent, in [0, 100].
    """
    k = _check_k(k)
    scores, image_codes = _class_centre_scores(image_feats, speech_embs, image_labels, speech_labels)
    n_images, n_classes = scores.shape
    if k > n_images:
        raise ValueError(f"k={k} but there are only {n_images} images; use k <= {n_images}")
    top = np.argsort(-scores, axis=0, kind="stable")[:k]  # (k, C) image indices per class
    hits = int((image_codes[top] == np.arange(n_classes)[None, :]).sum())
    return 100.0 * hits / (k * n_classes)


# --------------------------------------------------------------------------- entry point


def speech_encoder_metrics(
    image_feats: np.ndarray,
    speech_embs: np.ndarray,
    labels: np.ndarray,
    k: int = 50,
    ks: Sequence[int] = (1, 5, 10),
    similarity: SimilarityKind = "cosine",
) -> dict[str, float]:
    """All speech-encoder metrics for paired image features and speech embeddings.

    Row i of ``image_feats`` and of ``speech_embs`` is the same image/caption pair with class
    ``labels[i]`` (docs/original.md#s9: one random view and one random caption per test image).

    Args:
        image_feats: ``(N, D)`` image features.
        speech_embs: ``(N, D)`` speech embeddings.
        labels: ``(N,)`` class of each pair.
        k: the cut-off of the class-centre precision (``ap{k}``; the paper uses 50).
        ks: the Recall@K cut-offs of the class-level retrieval.
        similarity: ``"cosine"`` or ``"dot"`` for the class-level retrieval; ``accu`` and
            ``ap{k}`` always use the paper's unnormalised dot product with class centres.

    Returns:
        A flat dict: ``accu`` and ``ap{k}`` in percent (as the paper reports them), and
        ``s2i_R{K}``, ``s2i_mAP``, ``i2s_R{K}``, ``i2s_mAP`` as fractions in [0, 1]. ``s2i``
        ranks the N images for each speech query, ``i2s`` the N speech embeddings for each
        image query; a retrieved item is correct when it has the query's class.
    """
    v = _as_matrix(image_feats, "image_feats")
    a = _as_matrix(speech_embs, "speech_embs")
    if v.shape[0] != a.shape[0]:
        raise ValueError(
            f"image_feats has {v.shape[0]} rows but speech_embs has {a.shape[0]}; "
            "row i of both must be the same image/caption pair"
        )
    _same_dim(v, a, "image_feats", "speech_embs")
    labels = _as_labels(labels, v.shape[0], "labels", "image_feats")
    k = _check_k(k)
    ks = [_check_k(kk, "each K in ks") for kk in _as_sequence(ks)]

    results: dict[str, float] = {
        "accu": class_centre_accuracy(v, a, labels, labels),
        f"ap{k}": precision_at_k(v, a, labels, labels, k=k),
    }
    s2i = similarity_matrix(a, v, similarity)  # (N speech queries, N images)
    i2s = np.ascontiguousarray(s2i.T)  # both kinds are symmetric: sim(v_i, a_j) = s2i[j, i]
    codes = np.unique(labels, return_inverse=True)[1].reshape(-1)
    for prefix, sim in (("s2i", s2i), ("i2s", i2s)):
        recalls, mean_ap = _recall_and_map(sim, codes, codes, ks)
        for kk, recall in recalls.items():
            results[f"{prefix}_R{kk}"] = recall
        results[f"{prefix}_mAP"] = mean_ap  # never None: each query's own pair is relevant
    return results
