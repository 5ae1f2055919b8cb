"""Run folders that explain themselves: resolved config, log, JSONL metrics, checkpoints.

Only the main process writes. A folder that already holds a run is never reused silently: the caller
either resumes it or gets an error that says how to.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

RUN_MARKERS = ("latest.pth", "config.yaml")


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked (it holds another run, or is not writable)."""


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


class RunFolder:
    """One folder per run. ``writer`` is False on every rank but 0, which then writes nothing."""

    def __init__(self, path: str | Path, *, resume: bool, writer: bool = True, name: str = "run") -> None:
        self.path = Path(path)
        self.writer = writer
        if writer:
            taken = [m for m in RUN_MARKERS if (self.path / m).exists()]
            if taken and not resume:
                raise RunFolderError(
                    f"{self.path} already holds a run ({', '.join(taken)}); pass --resume "
                    f"{self.path / 'latest.pth'} to continue it, or choose another --output_dir"
                )
            self.path.mkdir(parents=True, exist_ok=True)
        self.logger = self._make_logger(name)

    def _make_logger(self, name: str) -> logging.Logger:
        logger = logging.getLogger(f"s2i.{name}.{id(self)}")
        logger.handlers.clear()
        logger.propagate = False
        logger.setLevel(logging.INFO if self.writer else logging.WARNING)
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        logger.addHandler(console)
        if self.writer:
            fh = logging.FileHandler(self.path / "log.txt")
            fh.setFormatter(fmt)
            logger.addHandler(fh)
        return logger

    def close(self) -> None:
        for h in list(self.logger.handlers):
            h.close()
            self.logger.removeHandler(h)

    def write_yaml(self, name: str, data: dict[str, Any]) -> None:
        if self.writer:
            self._atomic_text(name, yaml.safe_dump(_jsonable(data), sort_keys=False))

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        if self.writer:
            self._atomic_text(name, json.dumps(_jsonable(data), indent=2) + "\n")

    def append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        """One JSON object per line; the line is written whole with one ``write`` call."""
        if not self.writer:
            return
        record = {"time": round(time.time(), 3), **_jsonable(record)}
        with open(self.path / name, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _atomic_text(self, name: str, text: str) -> None:
        target = self.path / name
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Reads a JSONL file, skipping a last line cut short by a killed process."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def tensorboard_writer(path: str | Path, enabled: bool):
    """A SummaryWriter when tensorboard is installed and ``enabled``, else None (it is optional)."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is an optional extra
        return None
    return SummaryWriter(str(path))
