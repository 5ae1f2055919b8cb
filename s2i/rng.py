"""The global random states (torch, numpy, Python) as one checkpoint entry, and back.

Both trainers store :func:`rng_state` in every checkpoint so that a resumed run draws exactly what the
uninterrupted run would have drawn. The entry holds tensors, lists and numbers only, so
``torch.load(..., weights_only=True)`` reads it.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """The current torch (CPU), numpy and Python random states, in checkpoint form."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [int(version), list(internal), gauss_py],
    }


def set_rng_state(state: dict[str, Any] | None) -> None:
    """Restores what :func:`rng_state` returned; an empty or missing entry (an old checkpoint) leaves the
    states as they are."""
    if not state:
        return
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_py = state["python"]
    random.setstate((version, tuple(internal), gauss_py))
