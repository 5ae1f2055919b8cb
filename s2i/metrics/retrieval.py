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
  :func:`mean_average_precision`; from features, without the whole similarity matrix and for any
  subset of the queries at once: :func:`query_ranks`).

:func:`speech_encoder_metrics` computes all of them for paired arrays (row i of the image
features and of the speech embeddings is the same image/caption pair).

Rankings sort by descending score with a stable sort, so ties are broken by the lower gallery
index, deterministically.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "class_centre_accuracy",
    "mean_average_precision",
    "precision_at_k",
    "QueryRanks",
    "query_ranks",
    "recall_at_k",
    "similarity_matrix",
    "speech_encoder_metrics",
]

SimilarityKind = Literal["cosine", "dot"]

# Rankings are computed on blocks of query rows holding about this many similarity entries,
# so that a (Q, G) argsort never needs more than a few tens of MB at once; query_ranks and
# speech_encoder_metrics also compute the similarities themselves a block at a time.
_BLOCK_ELEMENTS = 1 << 22
# The first-hit rank of a query with no relevant item: outside every top K, however large K is.
_NO_HIT = np.iinfo(np.int64).max


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
    return _scaled(a, kind) @ _scaled(b, kind).T


def _scaled(x: np.ndarray, kind: SimilarityKind) -> np.ndarray:
    """Rows of a checked ``(N, D)`` float64 matrix as the similarity ``kind`` compares them."""
    if kind == "cosine":
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if kind != "dot":
        raise ValueError(f"similarity kind must be 'cosine' or 'dot', got {kind!r}")
    return x


def _query_blocks(n_query: int, n_gallery: int) -> Iterator[slice]:
    """Consecutive blocks of query rows holding about ``_BLOCK_ELEMENTS`` similarities each."""
    rows = max(1, _BLOCK_ELEMENTS // n_gallery)
    for start in range(0, n_query, rows):
        yield slice(start, min(start + rows, n_query))


def _matrix_blocks(sim: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, sim[rows])`` block by block of a whole similarity matrix."""
    for rows in _query_blocks(*sim.shape):
        yield rows, sim[rows]


def _product_blocks(a: np.ndarray, b: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, a[rows] @ b.T)``: the rows of a similarity matrix, computed a block at a time, so the whole
    ``(Q, G)`` matrix is never held (``a`` and ``b`` already scaled by :func:`_scaled`)."""
    for rows in _query_blocks(a.shape[0], b.shape[0]):
        with np.errstate(over="ignore", invalid="ignore"):  # reported below, with what to do
            block = a[rows] @ b.T
        if not np.isfinite(block).all():
            raise ValueError(f"the similarities of queries {rows.start}..{rows.stop - 1} overflow to infinity; "
                             "scale the features down")
        yield rows, block


def _checked_retrieval_inputs(
    sim: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sim = _as_matrix(sim, "sim")
    query_labels = _as_labels(query_labels, sim.shape[0], "query_labels", "sim")
    gallery_labels = _as_labels(gallery_labels, sim.shape[1], "gallery_labels", "sim (columns)")
    q_codes, g_codes = _joint_codes(query_labels, gallery_labels)
    return sim, q_codes, g_codes


def _ranked_relevance(blocks: Iterable[tuple[slice, np.ndarray]], q_codes: np.ndarray,
                      g_codes: np.ndarray) -> Iterator[np.ndarray]:
    """Yield, block by block of queries, ``rel[q, r]`` = the rank-r gallery item has q's class.

    Ranks come from a stable argsort of ``-sim`` (descending score, ties to the lower index).
    """
    for rows, sim in blocks:
        order = np.argsort(-sim, axis=1, kind="stable")
        yield g_codes[order] == q_codes[rows, None]


def _recall_and_map(
    blocks: Iterable[tuple[slice, np.ndarray]], q_codes: np.ndarray, g_codes: np.ndarray, ks: list[int]
) -> tuple[dict[int, float], float | None]:
    """Recall@K for every K and mAP from one ranking pass (inputs already validated).

    Args:
        blocks: ``(rows, sim[rows])`` covering every query row once, in order (:func:`_matrix_blocks`,
            :func:`_product_blocks`).
        q_codes, g_codes: ``(Q,)`` and ``(G,)`` class codes (:func:`_joint_codes`).

    Returns:
        ``({K: recall}, mAP)``; mAP is None when no query has a relevant item.
    """
    hits = dict.fromkeys(ks, 0)
    ap_sum = 0.0
    n_scored = 0
    for rel in _ranked_relevance(blocks, q_codes, g_codes):
        first_hit, ap = _first_hit_and_ap(rel)
        scored = ~np.isnan(ap)
        for k in ks:
            hits[k] += int((first_hit < k).sum())
        ap_sum += float(ap[scored].sum())
        n_scored += int(scored.sum())
    recalls = {k: hits[k] / len(q_codes) for k in ks}
    return recalls, (ap_sum / n_scored if n_scored else None)


def _first_hit_and_ap(rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a ranked relevance block ``(B, G)``: the 0-based rank of the first relevant item
    (:data:`_NO_HIT` when there is none) and the average precision (NaN when there is none)."""
    n_rel = rel.sum(axis=1)
    has_rel = n_rel > 0
    first_hit = np.where(has_rel, rel.argmax(axis=1), _NO_HIT)
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    precision_at_hits = np.where(rel, np.cumsum(rel, axis=1) / ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 where there is nothing to find
        ap = np.where(has_rel, precision_at_hits / n_rel, np.nan)
    return first_hit, ap


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
    return _recall_and_map(_matrix_blocks(sim), q_codes, g_codes, ks)[0]


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
    mean_ap = _recall_and_map(_matrix_blocks(sim), q_codes, g_codes, [1])[1]
    if mean_ap is None:
        raise ValueError("mean_average_precision: no query has a gallery item of its class")
    return mean_ap


@dataclass(frozen=True)
class QueryRanks:
    """Where each query found its class in its ranking of the gallery: all that Recall@K and mAP of any
    subset of the queries need (a voice group, one voice), so the gallery is ranked once for all of them.

    Args:
        first_hit: ``(Q,)`` 0-based rank of the first gallery item of the query's class (a huge number
            when the gallery has none).
        ap: ``(Q,)`` the query's average precision (NaN when the gallery has no item of its class).
    """

    first_hit: np.ndarray
    ap: np.ndarray

    def subset(self, mask: np.ndarray | slice) -> QueryRanks:
        """The queries ``mask`` selects (a boolean mask, an index array or a slice)."""
        return QueryRanks(self.first_hit[mask], self.ap[mask])

    def recall(self, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
        """:func:`recall_at_k` of these queries: ``{K: share with an item of their class in the top K}``."""
        ks = [_check_k(k, "each K in ks") for k in _as_sequence(ks)]
        return {k: int((self.first_hit < k).sum()) / len(self.first_hit) for k in ks}

    def mean_ap(self) -> float | None:
        """:func:`mean_average_precision` of these queries; None when none of them has a relevant item."""
        scored = ~np.isnan(self.ap)
        return float(self.ap[scored].sum()) / int(scored.sum()) if scored.any() else None


def query_ranks(
    queries: np.ndarray,
    gallery: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    similarity: SimilarityKind = "cosine",
) -> QueryRanks:
    """Ranks the gallery for every query, from their features, without the whole ``(Q, G)`` similarity matrix.

    ``query_ranks(...).recall(ks)`` and ``.mean_ap()`` are :func:`recall_at_k` and
    :func:`mean_average_precision` of ``similarity_matrix(queries, gallery, similarity)``, and any
    :meth:`QueryRanks.subset` of the queries gives those of the subset, without ranking again. (Up to
    rounding: mAP is summed in another order, and a block's matrix product may differ from the whole
    product in the last bits, about 1e-13 at D = 1360, so two similarities that tie to within that
    may be ordered the other way.) The similarities are made a block of queries at a time, so the memory is
    ``O(G · block)`` instead of ``O(Q · G)`` (29,330 CUB test captions × 2,933 images would be 688 MB of
    float64). The time is ``O(Q · G · (D + log G))``, which Recall@K over all pairs needs.

    Args:
        queries: ``(Q, D)``; ``gallery``: ``(G, D)``.
        query_labels: ``(Q,)``; ``gallery_labels``: ``(G,)``.
        similarity: ``"cosine"`` or ``"dot"`` (:func:`similarity_matrix`).

    Raises:
        ValueError: bad shapes, NaN, or similarities that overflow.
    """
    a = _as_matrix(queries, "queries")
    b = _as_matrix(gallery, "gallery")
    _same_dim(a, b, "queries", "gallery")
    query_labels = _as_labels(query_labels, a.shape[0], "query_labels", "queries")
    gallery_labels = _as_labels(gallery_labels, b.shape[0], "gallery_labels", "gallery")
    q_codes, g_codes = _joint_codes(query_labels, gallery_labels)
    blocks = _product_blocks(_scaled(a, similarity), _scaled(b, similarity))
    first_hits, aps = zip(*(_first_hit_and_ap(rel) for rel in _ranked_relevance(blocks, q_codes, g_codes)))
    return QueryRanks(np.concatenate(first_hits), np.concatenate(aps))


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
    # Both directions rank N x N similarities, computed a block of queries at a time (as query_ranks).
    a, v = _scaled(a, similarity), _scaled(v, similarity)
    codes = np.unique(labels, return_inverse=True)[1].reshape(-1)
    for prefix, (queries, gallery) in (("s2i", (a, v)), ("i2s", (v, a))):
        recalls, mean_ap = _recall_and_map(_product_blocks(queries, gallery), codes, codes, ks)
        for kk, recall in recalls.items():
            results[f"{prefix}_R{kk}"] = recall
        results[f"{prefix}_mAP"] = mean_ap  # never None: each query's own pair is relevant
    return results
