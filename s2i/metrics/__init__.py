"""Metrics: one home for every number the project reports.

* :mod:`s2i.metrics.retrieval`: speech-encoder retrieval metrics (docs/original.md#s9).
* :mod:`s2i.metrics.fid`: Fréchet Inception Distance as TTUR computes it (docs/original.md#s12).
* :mod:`s2i.metrics.inception_score`: Inception Score as StackGAN-inception-model computes it (docs/original.md#s12).
* :mod:`s2i.metrics.speech_encoder`: the retrieval metrics of stage D's test embeddings, per TTS voice.
* :mod:`s2i.metrics.attributes`: colour and shape accuracy of generated shapes images.

Two registries, both ``name -> (module, function)``, whose modules are imported on first use so
``import s2i.metrics`` stays cheap:

* :data:`EVALUATION_METRICS`: stage F's metrics (stylegan2-ada's ``metric_main`` registry). Each takes one
  :class:`s2i.metrics.context.EvaluationContext` and returns ``{metrics.json key: section}``;
  ``evaluate.py`` runs the chosen ones in this order and times each under its name.
* :data:`METRICS`: the standalone functions behind them, on arrays, files or folders, for use without
  an evaluation folder (a notebook, a test, another tool).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s2i.metrics.context import EvaluationContext

__all__ = ["EVALUATION_METRICS", "METRICS", "evaluation_metric", "get_metric"]

# name -> (module, function); the order is the order of metrics.json.
EVALUATION_METRICS: dict[str, tuple[str, str]] = {
    "speech_encoder": ("s2i.metrics.speech_encoder", "score_speech_encoder"),
    "attributes": ("s2i.metrics.attributes", "score_attributes"),
    "fid": ("s2i.metrics.fid", "score_fid"),
    "inception_score": ("s2i.metrics.inception_score", "score_inception"),
}

# name -> (module, function)
METRICS: dict[str, tuple[str, str]] = {
    "fid": ("s2i.metrics.fid", "fid_between"),
    "frechet_distance": ("s2i.metrics.fid", "frechet_distance"),
    "is": ("s2i.metrics.inception_score", "folder_inception_score"),
    "inception_score": ("s2i.metrics.inception_score", "inception_score"),
    "speech_encoder": ("s2i.metrics.retrieval", "speech_encoder_metrics"),
}


def _lookup(registry: dict[str, tuple[str, str]], name: str, what: str) -> Callable:
    if name not in registry:
        raise KeyError(f"unknown {what} {name!r}; known: {', '.join(sorted(registry))}")
    module, function = registry[name]
    return getattr(importlib.import_module(module), function)


def evaluation_metric(name: str) -> Callable[[EvaluationContext], dict[str, Any]]:
    """Stage F's metric registered under ``name`` in :data:`EVALUATION_METRICS`."""
    return _lookup(EVALUATION_METRICS, name, "evaluation metric")


def get_metric(name: str) -> Callable:
    """The function registered under ``name`` in :data:`METRICS`."""
    return _lookup(METRICS, name, "metric")
