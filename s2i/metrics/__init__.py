"""Metrics: one home for every number the project reports.

* :mod:`s2i.metrics.retrieval`: speech-encoder retrieval metrics (shared/SPEC.md §9).
* :mod:`s2i.metrics.fid`: Fréchet Inception Distance as TTUR computes it (SPEC §12).
* :mod:`s2i.metrics.inception_score`: Inception Score as StackGAN-inception-model computes it (SPEC §12).

:data:`METRICS` maps a metric's name to its top-level function. The submodules are imported on
first use, so ``import s2i.metrics`` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["METRICS", "get_metric"]

# name -> (module, function)
METRICS: dict[str, tuple[str, str]] = {
    "fid": ("s2i.metrics.fid", "fid_between"),
    "frechet_distance": ("s2i.metrics.fid", "frechet_distance"),
    "is": ("s2i.metrics.inception_score", "folder_inception_score"),
    "inception_score": ("s2i.metrics.inception_score", "inception_score"),
    "speech_encoder": ("s2i.metrics.retrieval", "speech_encoder_metrics"),
}


def get_metric(name: str) -> Callable:
    """The function registered under ``name`` in :data:`METRICS`."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    module, function = METRICS[name]
    return getattr(importlib.import_module(module), function)
