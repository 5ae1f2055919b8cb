"""The file names of generated test-set images, written by stage F's generation and read by its scoring.

A generated image of test item ``key`` (its image path without the extension, e.g. ``001.Black/img_1``),
caption ``caption`` and sample ``sample`` is ``<key with / as __>_sentence<caption>_<sample>.png`` in the
flat per-resolution folders. The key may itself contain ``_sentence``: parsing is greedy, so the last
match wins.
"""

from __future__ import annotations

import re
from pathlib import Path

GENERATED_NAME = re.compile(r"^(?P<key>.+)_sentence(?P<caption>\d+)_(?P<sample>\d+)\.png$")


def flat_key(key: str) -> str:
    """A test item's key as it appears in a flat folder's file names (``/`` becomes ``__``)."""
    return key.replace("/", "__")


def generated_name(key: str, caption: int, sample: int) -> str:
    """The flat-folder file name of sample ``sample`` of caption ``caption`` of test item ``key``."""
    return f"{flat_key(key)}_sentence{caption}_{sample}.png"


def parse_generated_name(name: str | Path) -> tuple[str, int, int] | None:
    """``(flat key, caption, sample)`` of a generated file name, or None when the name is not one."""
    m = GENERATED_NAME.match(Path(name).name)
    if m is None:
        return None
    return m.group("key"), int(m.group("caption")), int(m.group("sample"))
