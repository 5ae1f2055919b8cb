"""Exact-value tests for s2i.metrics.retrieval (docs/original.md#s9 and class-level Recall@K / mAP)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from s2i.metrics import retrieval
from s2i.metrics.retrieval import (
    class_centre_accuracy,
    mean_average_precision,
    precision_at_k,
    recall_at_k,
    similarity_matrix,
    speech_encoder_metrics,
)
from s2i.metrics.speech_encoder import per_voice_recall, speech_encoder_section

# --------------------------------------------------------------------------- brute-force references


def _brute_centre_scores(image_feats, speech_embs, image_labels, speech_labels):
    """Double loop: classes sorted, centre = mean speech embedding, score = dot product."""
    classes = sorted(set(speech_labels.tolist()))
    centres = []
    for c in classes:
        members = [speech_embs[j] for j in range(len(speech_labels)) if speech_labels[j] == c]
        total = [0.0] * speech_embs.shape[1]
        for m in members:
            for d in range(len(total)):
                total[d] += float(m[d])
        centres.append([t / len(members) for t in total])
    scores = []
    for i in range(len(image_feats)):
        row = []
        for centre in centres:
            row.append(sum(float(image_feats[i][d]) * centre[d] for d in range(len(centre))))
        scores.append(row)
    return classes, scores


def _brute_accuracy(image_feats, speech_embs, image_labels, speech_labels):
    classes, scores = _brute_centre_scores(image_feats, speech_embs, image_labels, speech_labels)
    correct = 0
    for i, row in enumerate(scores):
        best = 0
        for c in range(1, len(row)):
            if row[c] > row[best]:
                best = c
        correct += classes[best] == image_labels[i]
    return 100.0 * correct / len(scores)


def _brute_precision(image_feats, speech_embs, image_labels, speech_labels, k):
    classes, scores = _brute_centre_scores(image_feats, speech_embs, image_labels, speech_labels)
    hits = 0
    for c, label in enumerate(classes):
        ranked = sorted(range(len(scores)), key=lambda i: (-scores[i][c], i))
        for i in ranked[:k]:
            hits += image_labels[i] == label
    return 100.0 * hits / (k * len(classes))


def _brute_recall_and_ap(sim, query_labels, gallery_labels, ks):
    recalls = dict.fromkeys(ks, 0)
    aps = []
    for q in range(sim.shape[0]):
        ranked = sorted(range(sim.shape[1]), key=lambda g: (-sim[q, g], g))
        rel = [gallery_labels[g] == query_labels[q] for g in ranked]
        for k in ks:
            recalls[k] += any(rel[:k])
        if any(rel):
            found, precisions = 0, []
            for rank, r in enumerate(rel, start=1):
                if r:
                    found += 1
                    precisions.append(found / rank)
            aps.append(sum(precisions) / len(precisions))
    return {k: recalls[k] / sim.shape[0] for k in ks}, sum(aps) / len(aps)


def _random_problem(seed: int, n: int = 60, dim: int = 8, classes=(7, 3, 100, 42, 5)):
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array(classes), size=n)
    # Class-dependent means so that the metrics are neither 0 nor 100.
    means = {c: rng.standard_normal(dim) for c in classes}
    image = np.stack([means[c] + 1.5 * rng.standard_normal(dim) for c in labels])
    speech = np.stack([means[c] + 1.5 * rng.standard_normal(dim) for c in labels])
    return image.astype(np.float32), speech.astype(np.float32), labels


def _perfect_problem(n_classes: int = 4, per_class: int = 6, dim: int = 8, seed: int = 0):
    """Speech == image features, classes far apart: every metric should be perfect."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes) * 10 + 3, per_class)
    feats = np.zeros((len(labels), dim))
    for i, c in enumerate(np.repeat(np.arange(n_classes), per_class)):
        feats[i, c] = 10.0
    feats += 0.01 * rng.standard_normal(feats.shape)
    return feats, feats.copy(), labels


# --------------------------------------------------------------------------- recall@K and mAP


def test_identity_similarity_with_distinct_labels() -> None:
    sim = np.eye(5)
    labels = np.arange(5)
    assert recall_at_k(sim, labels, labels, ks=(1, 5, 10)) == {1: 1.0, 5: 1.0, 10: 1.0}
    assert mean_average_precision(sim, labels, labels) == 1.0
    # Reversed ranking: the matching item is always last of 5.
    assert recall_at_k(-sim, labels, labels, ks=(1, 4, 5)) == {1: 0.0, 4: 0.0, 5: 1.0}
    assert mean_average_precision(-sim, labels, labels) == pytest.approx(1 / 5)


HAND_SIM = np.array(
    [
        [0.1, 0.9, 0.5, 0.3],  # q0 (class 0): ranks g1 g2 g3 g0 -> relevant at ranks 1, 4
        [0.8, 0.7, 0.6, 0.1],  # q1 (class 1): ranks g0 g1 g2 g3 -> relevant at rank 3
        [0.2, 0.3, 0.4, 0.5],  # q2 (class 0): ranks g3 g2 g1 g0 -> relevant at ranks 3, 4
        [0.5, 0.5, 0.5, 0.5],  # q3 (class 2): all tied -> stable order g0 g1 g2 g3 -> relevant at rank 4
    ]
)
HAND_QUERY = np.array([0, 1, 0, 2])
HAND_GALLERY = np.array([0, 0, 1, 2])


def test_hand_computed_4x4() -> None:
    # First relevant rank per query: q0 1, q1 3, q2 3, q3 4.
    # R@1 = 1/4 (q0);  R@2 = 1/4;  R@3 = 3/4 (q0, q1, q2);  R@5 = 4/4 (K > G = whole gallery).
    assert recall_at_k(HAND_SIM, HAND_QUERY, HAND_GALLERY, ks=(1, 2, 3, 5)) == {
        1: 0.25,
        2: 0.25,
        3: 0.75,
        5: 1.0,
    }
    # AP(q0) = (1/1 + 2/4) / 2 = 3/4;   AP(q1) = (1/3) / 1 = 1/3;
    # AP(q2) = (1/3 + 2/4) / 2 = 5/12;  AP(q3) = (1/4) / 1 = 1/4;
    # mAP = (9/12 + 4/12 + 5/12 + 3/12) / 4 = 21/48 = 0.4375.
    assert mean_average_precision(HAND_SIM, HAND_QUERY, HAND_GALLERY) == pytest.approx(21 / 48, abs=1e-15)


def test_labels_are_compared_by_value_not_position() -> None:
    # Same 4x4 problem with relabelled classes (0 -> "b", 1 -> "a", 2 -> "z") gives the same numbers.
    names = np.array(["b", "a", "z"])
    assert recall_at_k(HAND_SIM, names[HAND_QUERY], names[HAND_GALLERY], ks=(1, 3)) == {1: 0.25, 3: 0.75}
    assert mean_average_precision(HAND_SIM, names[HAND_QUERY], names[HAND_GALLERY]) == pytest.approx(21 / 48)


def test_query_without_relevant_items() -> None:
    # q1's class (9) is not in the gallery: a miss for recall, skipped by mAP.
    sim = np.array([[0.9, 0.1], [0.5, 0.4]])
    assert recall_at_k(sim, np.array([0, 9]), np.array([0, 1]), ks=(1, 2)) == {1: 0.5, 2: 0.5}
    assert mean_average_precision(sim, np.array([0, 9]), np.array([0, 1])) == 1.0
    with pytest.raises(ValueError, match="no query has a gallery item of its class"):
        mean_average_precision(sim, np.array([8, 9]), np.array([0, 1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_and_map_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sim = rng.integers(0, 4, size=(13, 17)).astype(np.float64)  # many ties on purpose
    query_labels = rng.integers(0, 4, size=13)
    gallery_labels = rng.integers(0, 4, size=17)
    ks = (1, 2, 5, 10, 30)
    expected_recall, expected_map = _brute_recall_and_ap(sim, query_labels, gallery_labels, ks)
    assert recall_at_k(sim, query_labels, gallery_labels, ks) == expected_recall
    assert mean_average_precision(sim, query_labels, gallery_labels) == pytest.approx(expected_map, abs=1e-12)


def test_blocked_ranking_gives_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    sim = rng.standard_normal((23, 11))
    ql, gl = rng.integers(0, 3, 23), rng.integers(0, 3, 11)
    full_recall, full_map = recall_at_k(sim, ql, gl), mean_average_precision(sim, ql, gl)
    monkeypatch.setattr(retrieval, "_BLOCK_ELEMENTS", 20)  # one or two queries per block
    assert recall_at_k(sim, ql, gl) == full_recall
    assert mean_average_precision(sim, ql, gl) == pytest.approx(full_map, abs=1e-15)


# --------------------------------------------------------------------------- without the whole similarity matrix


def _tied_problem(seed: int):
    """Integer features with repeated gallery rows: many exact ties of dot products (which are exact sums of
    small integers, so every way of computing them gives the same numbers)."""
    rng = np.random.default_rng(seed)
    gallery = rng.integers(-2, 3, size=(9, 4)).astype(np.float64)
    gallery = np.concatenate([gallery, gallery[:5]])  # rows 9..13 repeat rows 0..4
    queries = rng.integers(-2, 3, size=(23, 4)).astype(np.float64)
    return queries, gallery, rng.integers(0, 3, 23), rng.integers(0, 3, 14)


@pytest.mark.parametrize("block", [None, 20, 1])
@pytest.mark.parametrize("kind", ["cosine", "dot"])
def test_query_ranks_equal_the_matrix_path(monkeypatch: pytest.MonkeyPatch, block, kind) -> None:
    if block is not None:
        monkeypatch.setattr(retrieval, "_BLOCK_ELEMENTS", block)  # many blocks, down to one query each
    # Equal up to rounding: a block of rows is another matrix product, whose sums may differ from the whole
    # product's in the last bits (about 1e-13 at D = 1360), so only similarities that tie to within rounding
    # (and were ordered by rounding before too) could be ranked differently. Random features have no such ties;
    # the integer problem's dot products tie exactly, and are exact either way.
    image, speech, labels = _random_problem(4, n=61, dim=64)
    problems = [(speech, image, labels, labels)] + ([_tied_problem(5)] if kind == "dot" else [])
    for queries, gallery, ql, gl in problems:
        sim = similarity_matrix(queries, gallery, kind)
        ranks = retrieval.query_ranks(queries, gallery, ql, gl, kind)
        assert ranks.recall((1, 2, 5, 50)) == recall_at_k(sim, ql, gl, (1, 2, 5, 50))
        assert ranks.mean_ap() == pytest.approx(mean_average_precision(sim, ql, gl), rel=1e-14)
        # A subset of the queries is the same as ranking that subset alone.
        odd = np.arange(len(ql)) % 2 == 1
        assert ranks.subset(odd).recall((1, 3)) == recall_at_k(sim[odd], ql[odd], gl, (1, 3))
        assert ranks.subset(odd).mean_ap() == pytest.approx(mean_average_precision(sim[odd], ql[odd], gl), rel=1e-14)


def test_query_ranks_errors_and_queries_without_their_class() -> None:
    image, speech, labels = _random_problem(0, n=12)
    with pytest.raises(ValueError, match="queries has dimension 8 but gallery has dimension 7"):
        retrieval.query_ranks(speech, image[:, :7], labels, labels)
    with pytest.raises(ValueError, match="query_labels has 11 entries but queries has 12 rows"):
        retrieval.query_ranks(speech, image, labels[:11], labels)
    with pytest.raises(ValueError, match="overflow"):
        retrieval.query_ranks(np.full((2, 2), 1e200), np.full((2, 2), 1e200), [0, 1], [0, 1], similarity="dot")
    ranks = retrieval.query_ranks(speech, image, labels + 1000, labels)
    assert ranks.recall((1, 50)) == {1: 0.0, 50: 0.0} and ranks.mean_ap() is None


def test_recall_with_k_beyond_the_gallery_counts_a_query_without_its_class_as_a_miss() -> None:
    # Query 0 (class 5) has no item of its class among the 2; query 1 finds its class at rank 2.
    sim, ql, gl = np.array([[1.0, 0.5], [1.0, 0.5]]), np.array([5, 1]), np.array([0, 1])
    assert recall_at_k(sim, ql, gl, ks=(1, 2, 5)) == {1: 0.0, 2: 0.5, 5: 0.5}
    assert retrieval.query_ranks(np.eye(2), np.eye(2) * [1.0, 0.5], ql, gl, "dot").recall((5,)) == {5: 0.5}


@pytest.mark.parametrize("block", [None, 20])
def test_speech_encoder_metrics_equal_the_matrix_path(monkeypatch: pytest.MonkeyPatch, block) -> None:
    """Both directions as they were computed before (one matrix, transposed for i2s), block by block or not."""
    if block is not None:
        monkeypatch.setattr(retrieval, "_BLOCK_ELEMENTS", block)
    image, speech, labels = _random_problem(6, n=41)
    for kind in ("cosine", "dot"):
        m = speech_encoder_metrics(image, speech, labels, k=5, ks=(1, 3), similarity=kind)
        s2i = similarity_matrix(speech, image, kind)
        for prefix, sim in (("s2i", s2i), ("i2s", np.ascontiguousarray(s2i.T))):
            assert (m[f"{prefix}_R1"], m[f"{prefix}_R3"]) == tuple(recall_at_k(sim, labels, labels, (1, 3)).values())
            assert m[f"{prefix}_mAP"] == mean_average_precision(sim, labels, labels)


@pytest.mark.parametrize("block", [None, 20])
def test_speech_encoder_section_and_per_voice_recall_equal_the_matrix_path(monkeypatch, block) -> None:
    """Stage F's retrieval metrics as they were computed before: one (Q, N) matrix per voice group and voice."""
    if block is not None:
        monkeypatch.setattr(retrieval, "_BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(7)
    n, c, d = 15, 4, 6
    labels = np.arange(n) % 3
    feats = rng.standard_normal((n, d)) + labels[:, None]
    emb = rng.standard_normal((n, c, d)) + labels[:, None, None]
    voices = [[["a", "b", "held"][int(v)] for v in rng.integers(3, size=c)] for _ in range(n)]
    held = np.array([v == "held" for caps in voices for v in caps])
    groups = {"all": np.ones(n * c, dtype=bool), "seen voices": ~held, "held-out voices": held}
    speech, cap_labels = emb.reshape(n * c, d), np.repeat(labels, c)
    section = speech_encoder_section(emb, feats, labels, groups, k=5)
    for name, mask in groups.items():
        sim = similarity_matrix(speech[mask], feats, "cosine")
        before = {"accu": class_centre_accuracy(feats, speech[mask], labels, cap_labels[mask]),
                  "ap5": precision_at_k(feats, speech[mask], labels, cap_labels[mask], 5),
                  **{f"s2i_R{k}": v for k, v in recall_at_k(sim, cap_labels[mask], labels, (1, 5, 10)).items()},
                  "s2i_mAP": mean_average_precision(sim, cap_labels[mask], labels), "queries": int(mask.sum())}
        assert section[name] == pytest.approx(before, rel=1e-14), name
    rows = per_voice_recall(emb, feats, labels, voices, {"held"})
    assert [r["voice"] for r in rows] == ["held", "a", "b"]
    for row in rows:
        mask = np.array([v == row["voice"] for caps in voices for v in caps])
        sim = similarity_matrix(speech[mask], feats, "cosine")
        assert row["s2i_R1"] == recall_at_k(sim, cap_labels[mask], labels, (1,))[1]
        assert row["captions"] == int(mask.sum())


# --------------------------------------------------------------------------- similarity


def test_similarity_matrix_cosine_and_dot() -> None:
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    b = np.array([[1.0, 0.0], [10.0, 10.0], [0.0, -2.0]])
    np.testing.assert_allclose(similarity_matrix(a, b, "dot"), [[1.0, 10.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(
        similarity_matrix(a, b, "cosine"), [[1.0, 1 / math.sqrt(2), 0.0], [0.0, 0.0, 0.0]], atol=1e-15
    )
    assert similarity_matrix(a, b).shape == (2, 3)  # cosine by default
    with pytest.raises(ValueError, match="'cosine' or 'dot'"):
        similarity_matrix(a, b, "euclid")


def test_cosine_and_dot_rank_differently() -> None:
    # Query [1, 0]: cosine prefers gallery 0 (class 0), dot prefers the long vector (class 1).
    image = np.array([[1.0, 0.0], [10.0, 10.0]])
    speech = np.array([[1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1])
    cos = speech_encoder_metrics(image, speech, labels, k=1, ks=(1,), similarity="cosine")
    dot = speech_encoder_metrics(image, speech, labels, k=1, ks=(1,), similarity="dot")
    # s2i, speech 0 = [1, 0]: cosine 1 vs 0.707 -> image 0 (hit); dot 1 vs 10 -> image 1 (miss).
    # s2i, speech 1 = [0, 1]: cosine 0 vs 0.707 -> image 1 (hit); dot 0 vs 10 -> image 1 (hit).
    assert cos["s2i_R1"] == 1.0 and dot["s2i_R1"] == 0.5


# --------------------------------------------------------------------------- class-centre metrics


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_class_centre_accuracy_matches_brute_force(seed: int) -> None:
    image, speech, labels = _random_problem(seed)
    expected = _brute_accuracy(image, speech, labels, labels)
    assert 0.0 < expected < 100.0  # the test would be weak otherwise
    assert class_centre_accuracy(image, speech, labels, labels) == pytest.approx(expected, abs=1e-12)


def test_class_centre_accuracy_with_separate_speech_set() -> None:
    image, _, image_labels = _random_problem(5, n=40)
    _, speech, speech_labels = _random_problem(6, n=70)
    expected = _brute_accuracy(image, speech, image_labels, speech_labels)
    assert class_centre_accuracy(image, speech, image_labels, speech_labels) == pytest.approx(
        expected, abs=1e-12
    )


@pytest.mark.parametrize("seed, k", [(0, 1), (1, 5), (2, 10), (3, 20), (4, 60)])
def test_precision_at_k_matches_brute_force(seed: int, k: int) -> None:
    image, speech, labels = _random_problem(seed)
    expected = _brute_precision(image, speech, labels, labels, k)
    assert precision_at_k(image, speech, labels, labels, k=k) == pytest.approx(expected, abs=1e-12)


def test_precision_at_k_with_distractor_image_classes() -> None:
    # Images of class 999 have no speech centre: they only ever count as misses.
    image, speech, labels = _random_problem(7, n=50)
    image_labels = labels.copy()
    image_labels[:10] = 999
    expected = _brute_precision(image, speech, image_labels, labels, 8)
    assert precision_at_k(image, speech, image_labels, labels, k=8) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match=r"classes with no speech embedding: \[999\]"):
        class_centre_accuracy(image, speech, image_labels, labels)


def test_perfect_embedding_scores_100() -> None:
    image, speech, labels = _perfect_problem(n_classes=4, per_class=6)
    assert class_centre_accuracy(image, speech, labels, labels) == 100.0
    for k in (1, 5, 6):  # every class has 6 >= k images
        assert precision_at_k(image, speech, labels, labels, k=k) == 100.0


def test_k_is_honoured() -> None:
    # The original always used 50 (docs/original.md#bug-8). With 4 perfect classes of 6 images each,
    # class c can hit at most 6 of its top k: k = 7 gives 6/7, k = 12 gives 6/12, k = 24 gives 6/24.
    image, speech, labels = _perfect_problem(n_classes=4, per_class=6)
    assert precision_at_k(image, speech, labels, labels, k=7) == pytest.approx(100 * 6 / 7)
    assert precision_at_k(image, speech, labels, labels, k=12) == pytest.approx(50.0)
    assert precision_at_k(image, speech, labels, labels, k=24) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="k=25 but there are only 24 images"):
        precision_at_k(image, speech, labels, labels, k=25)
    m = speech_encoder_metrics(image, speech, labels, k=7)
    assert "ap7" in m and "ap50" not in m and m["ap7"] == pytest.approx(100 * 6 / 7)


def test_label_remapping() -> None:
    labels = np.array([7, 3, 7, 100])
    # Image i sits on axis code(i) with np.unique order 3 -> 0, 7 -> 1, 100 -> 2.
    image = np.array([[0.0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    speech = image.copy()
    assert class_centre_accuracy(image, speech, labels, labels) == 100.0
    assert precision_at_k(image, speech, labels, labels, k=1) == 100.0
    # Class 7 has 2 images, classes 3 and 100 have 1: hits at k = 2 are 1 + 2 + 1 of 2 * 3.
    assert precision_at_k(image, speech, labels, labels, k=2) == pytest.approx(100 * 4 / 6)
    # Same answers for the dense codes and for string labels.
    for other in (np.array([1, 0, 1, 2]), np.array(["7", "3", "7", "100"])):
        assert class_centre_accuracy(image, speech, other, other) == 100.0
        assert precision_at_k(image, speech, other, other, k=2) == pytest.approx(100 * 4 / 6)


def test_argmax_ties_go_to_the_first_class() -> None:
    # Both centres score 0 for the image; class 3 sorts before class 8, so it is predicted.
    image = np.array([[0.0, 0.0]])
    speech = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert class_centre_accuracy(image, speech, np.array([3]), np.array([3, 8])) == 100.0
    assert class_centre_accuracy(image, speech, np.array([8]), np.array([3, 8])) == 0.0


# --------------------------------------------------------------------------- entry point


def test_speech_encoder_metrics_keys_and_perfect_values() -> None:
    image, speech, labels = _perfect_problem(n_classes=5, per_class=10)
    m = speech_encoder_metrics(image, speech, labels, k=10)
    assert list(m) == [
        "accu",
        "ap10",
        "s2i_R1",
        "s2i_R5",
        "s2i_R10",
        "s2i_mAP",
        "i2s_R1",
        "i2s_R5",
        "i2s_R10",
        "i2s_mAP",
    ]
    assert m["accu"] == 100.0 and m["ap10"] == 100.0
    for key in m:
        if key.startswith(("s2i", "i2s")):
            assert m[key] == pytest.approx(1.0), key
    assert all(isinstance(v, float) for v in m.values())


def test_speech_encoder_metrics_directions_match_the_building_blocks() -> None:
    image, speech, labels = _random_problem(11, n=40)
    m = speech_encoder_metrics(image, speech, labels, k=5, ks=(1, 3))
    s2i = similarity_matrix(speech, image)
    i2s = similarity_matrix(image, speech)
    r_s2i, map_s2i = _brute_recall_and_ap(s2i, labels, labels, (1, 3))
    r_i2s, map_i2s = _brute_recall_and_ap(i2s, labels, labels, (1, 3))
    assert (m["s2i_R1"], m["s2i_R3"]) == (r_s2i[1], r_s2i[3])
    assert (m["i2s_R1"], m["i2s_R3"]) == (r_i2s[1], r_i2s[3])
    assert m["s2i_mAP"] == pytest.approx(map_s2i, abs=1e-12)
    assert m["i2s_mAP"] == pytest.approx(map_i2s, abs=1e-12)
    assert m["accu"] == pytest.approx(_brute_accuracy(image, speech, labels, labels), abs=1e-12)
    assert m["ap5"] == pytest.approx(_brute_precision(image, speech, labels, labels, 5), abs=1e-12)
    assert (m["s2i_R1"], m["s2i_mAP"]) != (m["i2s_R1"], m["i2s_mAP"])  # the two directions differ here


# --------------------------------------------------------------------------- validation


def test_validation_errors() -> None:
    image, speech, labels = _random_problem(0, n=12)
    with pytest.raises(ValueError, match="image_feats has 12 rows but speech_embs has 11"):
        speech_encoder_metrics(image, speech[:11], labels)
    with pytest.raises(ValueError, match="dimension 8 but speech_embs has dimension 7"):
        speech_encoder_metrics(image, speech[:, :7], labels, k=2)
    with pytest.raises(ValueError, match="labels has 11 entries but image_feats has 12 rows"):
        speech_encoder_metrics(image, speech, labels[:11], k=2)
    with pytest.raises(ValueError, match="empty"):
        class_centre_accuracy(image[:0], speech, labels[:0], labels)
    with pytest.raises(ValueError, match="2-D"):
        class_centre_accuracy(image[0], speech, labels[:1], labels)
    bad = image.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="image_feats contains NaN or infinite values in 1 of 12 rows"):
        class_centre_accuracy(bad, speech, labels, labels)
    with pytest.raises(ValueError, match="speech_embs contains NaN"):
        precision_at_k(image, bad * 0 + np.inf, labels, labels, k=2)
    with pytest.raises(ValueError, match="sim contains NaN"):
        recall_at_k(np.array([[np.nan]]), np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="query_labels has 2 entries but sim has 1 rows"):
        recall_at_k(np.ones((1, 3)), np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"gallery_labels has 2 entries but sim \(columns\) has 3 rows"):
        mean_average_precision(np.ones((1, 3)), np.array([0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="labels contains NaN"):
        class_centre_accuracy(image, speech, labels.astype(float) * np.nan, labels.astype(float))
    with pytest.raises(ValueError, match="both be numbers or both be strings"):
        recall_at_k(np.ones((1, 1)), np.array([1]), np.array(["1"]))
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            precision_at_k(image, speech, labels, labels, k=k)
    with pytest.raises(ValueError, match="positive integer"):
        recall_at_k(np.ones((2, 2)), np.array([0, 1]), np.array([0, 1]), ks=(1, 0))
    with pytest.raises(ValueError, match="at least one"):
        recall_at_k(np.ones((2, 2)), np.array([0, 1]), np.array([0, 1]), ks=())
