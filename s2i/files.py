"""Files written so that a killed process never leaves half of one, file digests, and portable paths.

Every writer of the project goes through :func:`atomic_write`: the data goes to a temporary file in the
target's folder, is flushed to disk, and is then renamed over the target, so a reader sees the old file
or the new one and never a mix. The temporary file is named ``.<name>.<random>.<pid>.tmp``; one left
behind by a killed process is recognised by its dead pid and removed when a run folder is opened again
(:func:`s2i.runs.remove_stale_temp_files`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once: reading it means setting it, and a set-and-restore on every write would race with files that
# other threads (the TTS pool) open meanwhile.
_UMASK = _read_umask()


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, make_parents: bool = True,
                 keep_permissions: bool = True, durable: bool = True,
                 encoding: str | None = None) -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on a clean exit of the ``with`` block renames it over ``path``.

    Args:
        path: the file to (re)write.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8 unless ``encoding`` says otherwise).
        make_parents: create the target's folder first (else a missing folder is an error).
        keep_permissions: a file that already exists keeps its permission bits (a new one gets what
            ``open`` would give it under the umask).
        durable: flush the data and the rename to disk (fsync), so they survive a power cut too. A killed
            process needs only the rename; caches and pictures that can be made again skip the fsyncs.

    Anything the block does after writing (journaling the file, checking it) happens before the rename;
    an exception anywhere in the block removes the temporary file and leaves ``path`` as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes whole files: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{os.getpid()}.tmp", dir=path.parent)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None) as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if keep_permissions and path.exists():
            shutil.copymode(path, tmp)
        else:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a new file gets what open() would give
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(folder: str | Path) -> None:
    """Makes a rename durable across a power cut too (a killed process needs no more than the rename)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes, **kwargs: Any) -> Path:
    """``data`` to ``path`` through :func:`atomic_write`; returns ``path``."""
    with atomic_write(path, "wb", **kwargs) as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str, **kwargs: Any) -> Path:
    """UTF-8 ``text`` to ``path`` through :func:`atomic_write`; returns ``path``."""
    with atomic_write(path, "w", **kwargs) as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 2, **kwargs: Any) -> Path:
    """``obj`` as JSON (UTF-8, non-ASCII kept, key order kept, a final newline) through :func:`atomic_write`."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", **kwargs)


def file_digest(path: str | Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read in chunks (``algorithm``: any name ``hashlib.new`` takes)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def portable_path(path: str | Path, root: str | Path | None = None) -> str:
    """How a path is written into a manifest: ``./relative/path`` when it lies inside ``root`` (default: the
    working directory, the repository root as the original expects), else absolute.

    The plain absolute paths are compared first, so a path reached through a symbolic link inside ``root``
    stays relative; then the resolved ones, so an absolute path through another name of ``root`` does too.
    """
    root = root if root is not None else os.getcwd()
    for a, b in ((os.path.abspath(root), os.path.abspath(path)),
                 (os.path.realpath(root), os.path.realpath(path))):
        try:
            inside = os.path.commonpath([a, b]) == a
        except ValueError:  # different drives on Windows
            inside = False
        if inside:
            rel = os.path.relpath(b, a)
            return "." if rel == "." else "./" + Path(rel).as_posix()
    return os.path.abspath(path)
