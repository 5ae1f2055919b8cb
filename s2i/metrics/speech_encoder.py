"""Stage F's speech-encoder metrics: how well the test captions' embeddings find their images, per voice.

Reference: the paper's class-centre accuracy and P@50 (``EvalClass`` in the original
``train_audio_encoder.py``, docs/original.md#s9) and class-level speech→image Recall@K and mAP, all from
:mod:`s2i.metrics.retrieval`. The embeddings are the ones stage D saved
(``<data_root>/test/audio_features_<tag>.pickle``, ``(N, captions, D)``); the gallery is view 0 of stage
B's teacher features of the test images.

Voices: a caption whose TTS voice never spoke a training caption is *held out*; every number is given for
all test captions, the seen voices and the held-out voices, and Recall@1 per voice, so a model that only
understands its training speakers shows it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from s2i.data.safe_pickle import load_feature_list, load_pickle
from s2i.metrics.context import EvaluationContext, EvaluationError
from s2i.metrics.retrieval import QueryRanks, class_centre_accuracy, precision_at_k, query_ranks

__all__ = [
    "caption_ranks", "first_views", "load_speech_embeddings", "per_voice_recall", "retrieval_metrics",
    "score_speech_encoder", "speech_encoder_section",
]


def retrieval_metrics(speech: np.ndarray, caption_labels: np.ndarray, image_feats: np.ndarray,
                      image_labels: np.ndarray, k: int = 50, *, ranks: QueryRanks | None = None) -> dict[str, float]:
    """Speech-encoder metrics of a set of caption embeddings against every test image.

    Args:
        speech: ``(Q, D)`` caption embeddings; ``caption_labels (Q,)`` their classes.
        image_feats: ``(N, D)`` teacher features of the test images (one view each); ``image_labels (N,)``.
        k: the cut-off of the paper's precision (``ap50``).
        ranks: these captions' rankings of the images (:func:`caption_ranks`, or a subset of it), when
            already made; None ranks them here.
    Returns:
        ``accu`` and ``ap{k}`` (the paper's class-centre metrics in percent, k capped at N),
        ``s2i_R1/5/10`` and ``s2i_mAP`` (speech query → image gallery, class level, cosine), ``queries``.
    """
    if ranks is None:
        ranks = query_ranks(speech, image_feats, caption_labels, image_labels, "cosine")
    if len(ranks.first_hit) != len(speech):
        raise ValueError(f"ranks of {len(ranks.first_hit)} captions given for {len(speech)} captions")
    # The class-centre metrics need a speech centre for every image class; a small group (one voice) may
    # miss a class, and then they are not defined.
    complete = set(np.unique(image_labels)) <= set(np.unique(caption_labels))
    out = {
        "accu": class_centre_accuracy(image_feats, speech, image_labels, caption_labels) if complete else math.nan,
        f"ap{k}": (precision_at_k(image_feats, speech, image_labels, caption_labels, min(k, len(image_feats)))
                   if complete else math.nan),
    }
    out.update({f"s2i_R{kk}": float(v) for kk, v in ranks.recall((1, 5, 10)).items()})
    mean_ap = ranks.mean_ap()
    if mean_ap is None:
        raise ValueError("mean_average_precision: no query has a gallery item of its class")
    out["s2i_mAP"] = mean_ap
    out["queries"] = int(len(speech))
    return out


def caption_ranks(emb: np.ndarray, image_feats: np.ndarray, labels: np.ndarray) -> QueryRanks:
    """Every test caption's ranking of the test images (cosine), made once for every voice group and voice.

    Args:
        emb: ``(N, C, D)`` caption embeddings; ``image_feats``: ``(N, D)``; ``labels``: ``(N,)``.
    Returns:
        :class:`~s2i.metrics.retrieval.QueryRanks` of the ``N·C`` captions, image by image, caption by caption.
    """
    n, c, _ = emb.shape
    return query_ranks(emb.reshape(n * c, -1), image_feats, np.repeat(labels, c), labels, "cosine")


def load_speech_embeddings(path: Path, n_items: int) -> np.ndarray:
    """Stage D's ``audio_features_<tag>.pickle`` as ``(N, C, D)``, checked against the manifest."""
    emb = np.asarray(load_pickle(path), dtype=np.float64)
    if emb.ndim != 3 or emb.shape[0] != n_items:
        raise EvaluationError(f"{path}: expected speech embeddings of shape (N={n_items}, captions, D), "
                              f"found {emb.shape}")
    return emb


def speech_encoder_section(emb: np.ndarray, image_feats: np.ndarray, labels: np.ndarray,
                           groups: dict[str, np.ndarray], k: int = 50, *,
                           ranks: QueryRanks | None = None) -> dict[str, dict[str, float]]:
    """:func:`retrieval_metrics` of every caption's embedding, per voice group, from one ranking of the images
    by every caption (``ranks``: :func:`caption_ranks`, made here when None)."""
    n, c, _ = emb.shape
    speech = emb.reshape(n * c, -1)
    cap_labels = np.repeat(labels, c)
    for mask in groups.values():
        if mask.shape[0] != n * c:
            raise EvaluationError(f"voice records cover {mask.shape[0]} captions, the embeddings {n * c}")
    ranks = ranks if ranks is not None else caption_ranks(emb, image_feats, labels)
    out = {}
    for name, mask in groups.items():
        if mask.any():
            # The "all" group needs no copy of the embeddings (a boolean index always copies).
            sel = slice(None) if mask.all() else mask
            out[name] = retrieval_metrics(speech[sel], cap_labels[sel], image_feats, labels, k,
                                          ranks=ranks.subset(sel))
    return out


def per_voice_recall(emb: np.ndarray, image_feats: np.ndarray, labels: np.ndarray,
                     voices: list[list[str | None]], held_out: set[str], *,
                     ranks: QueryRanks | None = None) -> list[dict[str, Any]]:
    """Speech→image Recall@1 of the captions of each TTS voice, one row per voice (held-out ones first), from
    one ranking of the images by every caption (``ranks``: :func:`caption_ranks`, made here when None)."""
    ranks = ranks if ranks is not None else caption_ranks(emb, image_feats, labels)
    flat = np.array([v for caps in voices for v in caps], dtype=object)
    if len(flat) != len(ranks.first_hit):
        raise EvaluationError(f"voice records cover {len(flat)} captions, the embeddings {len(ranks.first_hit)}")
    rows = []
    for voice in sorted({v for v in flat if v}, key=lambda v: (v not in held_out, v)):
        mask = flat == voice
        rows.append({"voice": voice, "held out": "yes" if voice in held_out else "", "captions": int(mask.sum()),
                     "s2i_R1": float(ranks.subset(mask).recall((1,))[1])})
    return rows


def first_views(features: list[np.ndarray]) -> np.ndarray:
    """View 0 (the centre crop) of every image's teacher features, ``(N, D)``."""
    return np.stack([np.asarray(f, dtype=np.float64).reshape(-1, f.shape[-1])[0] for f in features])


def score_speech_encoder(ctx: EvaluationContext) -> dict[str, Any]:
    """The registered ``speech_encoder`` metric.

    Returns:
        ``speech_encoder`` (group → :func:`retrieval_metrics`) and, when the test manifest records
        voices, ``speech_encoder_by_voice`` (:func:`per_voice_recall`).
    """
    manifest = ctx.manifest
    emb = load_speech_embeddings(ctx.data_root / "test" / f"audio_features_{ctx.settings.audio_switch}.pickle",
                                 len(manifest))
    feats = first_views(load_feature_list(manifest.image_feature_path, expected_len=len(manifest)))
    if feats.shape[1] != emb.shape[2]:
        raise EvaluationError(f"speech embeddings are {emb.shape[2]}-d but the teacher features "
                              f"{manifest.image_feature_path} are {feats.shape[1]}-d")
    # Every caption ranks the images once; each voice group and each voice is a subset of those rankings.
    ranks = caption_ranks(emb, feats, manifest.labels)
    out: dict[str, Any] = {"speech_encoder": speech_encoder_section(emb, feats, manifest.labels, ctx.groups,
                                                                    ranks=ranks)}
    if ctx.voices["seen"] or ctx.voices["held_out"]:
        out["speech_encoder_by_voice"] = per_voice_recall(emb, feats, manifest.labels, ctx.caption_voices,
                                                          set(ctx.voices["held_out"]), ranks=ranks)
    ctx.log(f"speech encoder: s2i R@1 {out['speech_encoder']['all']['s2i_R1']:.3f} over "
            f"{out['speech_encoder']['all']['queries']} test captions")
    return out
