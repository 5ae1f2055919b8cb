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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from s2i.files import write_json_atomic, write_text_atomic


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
    """One folder per run. ``writer`` is False on every rank but 0, which then writes nothing.

    ``checkpoint`` is where the run keeps the checkpoint that ``--resume`` continues from; it and
    ``config.yaml`` (written when a run starts) mark a folder as taken.
    """

    def __init__(self, path: str | Path, *, resume: bool, writer: bool = True, name: str = "run",
                 checkpoint: str = "latest.pth") -> None:
        self.path = Path(path)
        self.writer = writer
        if writer:
            taken = [m for m in (checkpoint, "config.yaml") if (self.path / m).exists()]
            if taken and not resume:
                if (self.path / checkpoint).exists():
                    how = f"pass --resume {self.path / checkpoint} to continue it"
                else:
                    how = (f"it has no {checkpoint} to --resume from yet (it is still running, or was stopped "
                           f"before its first checkpoint): delete {self.path} to start it again")
                raise RunFolderError(f"{self.path} already holds a run ({', '.join(taken)}); {how}, or choose "
                                     "another --output_dir")
            self.path.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_temp_files(self.path) if writer else []
        self.logger = self._make_logger(name)
        if removed:
            self.logger.info(f"removed {len(removed)} temporary file(s) left by a killed run: "
                             + ", ".join(str(p.relative_to(self.path)) for p in removed[:5])
                             + (" ..." if len(removed) > 5 else ""))

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
            write_text_atomic(self.path / name, yaml.safe_dump(_jsonable(data), sort_keys=False))

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        if self.writer:
            write_json_atomic(self.path / name, _jsonable(data))

    def append_jsonl(self, name: str, record: dict[str, Any]) -> None:
        """One JSON object per line; the line is written whole with one ``write`` call."""
        if not self.writer:
            return
        record = {"time": round(time.time(), 3), **_jsonable(record)}
        with open(self.path / name, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def trim_jsonl(self, name: str, keep: Callable[[dict[str, Any]], bool]) -> int:
        """Rewrites a JSONL log with only the records ``keep`` accepts; returns how many lines went.

        A resumed run calls it with "at or before the checkpoint" so the steps or epochs it does again
        are not logged twice; a last line cut short by a killed process goes too (appending after it
        would glue the next record onto it).
        """
        path = self.path / name
        if not self.writer or not path.is_file():
            return 0
        lines = path.read_text().splitlines()
        kept = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and keep(record):
                kept.append(line)
        if len(kept) != len(lines):
            write_text_atomic(path, "".join(line + "\n" for line in kept))
        return len(lines) - len(kept)



def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Deletes the ``.<name>[.<random>].<pid>.tmp`` files under ``folder`` whose process is gone.

    Every atomic writer of a run folder (checkpoints, links, YAML/JSON, PNG grids) names its temporary
    file this way; a process killed between the write and the rename leaves one behind. Files of a
    living process are kept (it may be renaming them right now); ones without a pid have no owner left.
    """
    removed = []
    for path in sorted(Path(folder).rglob(".*.tmp")):
        parts = path.name.split(".")
        pid = parts[-2] if len(parts) >= 4 else ""
        if pid.isdigit() and (int(pid) == os.getpid() or pid_alive(int(pid))):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


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
