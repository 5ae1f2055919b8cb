"""Restricted pickle I/O for the feature files users hand us (docs/original.md#s1-3).

The authors distribute their image features as pickles: a Python ``list`` of ``numpy.ndarray``
``(10, 1024)`` float32, written by Python 2.7 (so they need ``encoding='latin1'``), and stage D
writes embedding pickles holding one ndarray. ``pickle.load`` on such a file runs whatever
callable the file names, so a downloaded "feature file" could run ``os.system``. This module
only lets a pickle name the handful of globals that numpy arrays and plain containers need:

* numpy: ``_reconstruct`` and ``scalar`` under both ``numpy.core.multiarray`` (numpy 1.x and
  Python 2 writers) and ``numpy._core.multiarray`` (numpy 2.x), ``_frombuffer`` under
  ``numpy.core.numeric`` / ``numpy._core.numeric`` (protocol 5), ``numpy.ndarray`` and
  ``numpy.dtype``;
* builtins: ``list``, ``dict``, ``tuple``, ``set``, ``frozenset``, ``int``, ``float``,
  ``complex``, ``str``, ``bytes``, ``bytearray``, ``bool``, plus ``collections.OrderedDict``;
  Python 2 spellings (``__builtin__.set``, ``__builtin__.unicode``, ...) are translated first;
* ``_codecs.encode``, which Python 3 uses to write ``bytes`` at protocol <= 2, restricted to
  the latin-1 codec that pickle itself uses.

Any other global (``os.system``, ``subprocess.Popen``, ``builtins.eval``, ``numpy.load``, ...) is
refused with :class:`UnsafePickleError` before it is ever imported or called.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import io
import os
import pickle
import pickletools
from pathlib import Path
from typing import Any

import numpy as np

from s2i.files import write_bytes_atomic

try:  # numpy >= 2 (and the forward-compatibility stubs of numpy 1.26)
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy < 1.26
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

__all__ = [
    "PickleFormatError",
    "PickleFileMissingError",
    "UnsafePickleError",
    "load_feature_list",
    "load_pickle",
    "loads_pickle",
    "save_pickle",
]

PathLike = str | os.PathLike

_ALLOWED_SUMMARY = (
    "only numpy arrays and plain containers (list, tuple, dict, set, numbers, strings, bytes) "
    "are allowed in feature pickles"
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list; nothing from it was imported or called.

    Attributes:
        path: the file (or ``source`` label) that was being read.
        global_name: the refused global as ``"module.name"``, with Python 2 spellings translated
            to the Python 3 object they would resolve to (``__builtin__.eval`` -> ``builtins.eval``).
        written_as: the name as spelled in the file, when that differs from ``global_name``.
    """

    def __init__(self, path: PathLike, global_name: str, written_as: str | None = None) -> None:
        self.path = str(path)
        self.global_name = global_name
        self.written_as = written_as if written_as != global_name else None
        spelled = f" (written as '{self.written_as}')" if self.written_as else ""
        super().__init__(
            f"{self.path}: refused to load the global '{global_name}'{spelled}: {_ALLOWED_SUMMARY}. "
            "Loading it could run arbitrary code; if you trust the file, convert it with plain "
            "pickle into numpy arrays first."
        )

    def __reduce__(self) -> tuple[type, tuple[str, str, str | None]]:
        return type(self), (self.path, self.global_name, self.written_as)


class PickleFormatError(ValueError):
    """The file is missing, empty, truncated, not a pickle, or holds the wrong kind of data."""


class PickleFileMissingError(PickleFormatError, FileNotFoundError):
    """The pickle file does not exist (also a :class:`FileNotFoundError`)."""


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for ``_codecs.encode`` that only runs the codec pickle writes (latin-1).

    ``pickle`` stores ``bytes`` at protocol <= 2 as ``_codecs.encode(str, 'latin1')``; any other
    codec name would let a file look up arbitrary codec modules, so it is refused.
    """
    if not isinstance(obj, str):
        raise pickle.UnpicklingError(f"_codecs.encode expects a str, got {type(obj).__name__}")
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed (only latin1)")
    return obj.encode("latin-1", errors)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED_GLOBALS[(_module, "_reconstruct")] = _np_multiarray._reconstruct
    _ALLOWED_GLOBALS[(_module, "scalar")] = _np_multiarray.scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED_GLOBALS[(_module, "_frombuffer")] = _np_numeric._frombuffer
for _builtin in (list, dict, tuple, set, frozenset, int, float, complex, str, bytes, bytearray, bool):
    _ALLOWED_GLOBALS[("builtins", _builtin.__name__)] = _builtin


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` resolves only the allow-listed globals."""

    def __init__(self, file: io.BufferedIOBase, *, encoding: str, source: str) -> None:
        super().__init__(file, fix_imports=True, encoding=encoding, errors="strict")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        # Python 2 names (__builtin__.unicode, ...) map to their Python 3 homes, as the base
        # class would do; the result still has to pass the allow-list below.
        if key in _compat_pickle.NAME_MAPPING:
            key = _compat_pickle.NAME_MAPPING[key]
        elif module in _compat_pickle.IMPORT_MAPPING:
            key = (_compat_pickle.IMPORT_MAPPING[module], name)
        try:
            return _ALLOWED_GLOBALS[key]
        except KeyError:
            raise UnsafePickleError(self._source, ".".join(key), f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in feature pickles")


def loads_pickle(data: bytes, *, encoding: str = "latin1", source: str = "<bytes>") -> Any:
    """Unpickle ``data`` allowing only numpy arrays and plain containers.

    Args:
        data: the pickle bytes.
        encoding: how Python 2 ``str`` objects are decoded; ``'latin1'`` is what numpy arrays
            pickled by Python 2 need.
        source: a label (usually the file name) used in error messages.

    Raises:
        UnsafePickleError: the pickle names a global outside the allow-list.
        PickleFormatError: the data is empty, truncated or not a pickle.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"loads_pickle expects bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise PickleFormatError(f"{source}: the file is empty, expected a pickle")
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding, source=source).load()
    except UnsafePickleError:
        raise
    except (EOFError, pickle.UnpicklingError) as exc:
        raise PickleFormatError(
            f"{source}: not a readable pickle (truncated, corrupted or not a pickle at all): {exc}"
        ) from exc
    except (ValueError, TypeError, AttributeError, IndexError, KeyError, UnicodeDecodeError) as exc:
        raise PickleFormatError(f"{source}: malformed pickle data: {type(exc).__name__}: {exc}") from exc


def load_pickle(path: PathLike, *, encoding: str = "latin1") -> Any:
    """Read a pickle file allowing only numpy arrays and plain containers.

    Args:
        path: the pickle file.
        encoding: decoding of Python 2 ``str`` objects (``'latin1'`` for Python 2 numpy pickles).

    Returns:
        The unpickled object (e.g. a list of ``(10, 1024)`` float32 arrays).

    Raises:
        PickleFileMissingError: the file does not exist.
        PickleFormatError: the path is a folder, or the file is empty, truncated or not a pickle.
        UnsafePickleError: the pickle names a global outside the allow-list.
    """
    path = Path(path)
    if not path.exists():
        raise PickleFileMissingError(f"{path}: no such pickle file")
    if path.is_dir():
        raise PickleFormatError(f"{path}: is a directory, expected a pickle file")
    data = path.read_bytes()
    return loads_pickle(data, encoding=encoding, source=str(path))


def _numpy1_global_names(data: bytes) -> bytes:
    """Rewrite ``GLOBAL 'numpy._core.* name'`` opcodes as ``numpy.core.*`` in a protocol <= 2 stream.

    numpy 2 records its internals under ``numpy._core``, which numpy < 1.26 (and so every
    Python 2 tool) cannot import; ``numpy.core.multiarray._reconstruct`` loads everywhere. Only
    GLOBAL opcode arguments are touched, never array payloads; protocol <= 2 has no frames
    and memo indices do not depend on byte offsets, so changing lengths is safe.
    """
    out = bytearray()
    copied_to = 0
    for opcode, arg, pos in pickletools.genops(data):
        if opcode.name == "GLOBAL" and arg.startswith("numpy._core."):
            module, name = arg.split(" ", 1)
            end = pos + 1 + len(module) + 1 + len(name) + 1
            out += data[copied_to:pos]
            out += b"c" + ("numpy.core." + module[len("numpy._core.") :]).encode("ascii") + b"\n"
            out += name.encode("ascii") + b"\n"
            copied_to = end
    out += data[copied_to:]
    return bytes(out)


def save_pickle(obj: Any, path: PathLike, protocol: int = 2) -> Path:
    """Write ``obj`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    Protocol 2 (the default) keeps the file readable by the Python 2 tools of the original code;
    at protocol <= 2 numpy 2's ``numpy._core`` global names are written as ``numpy.core`` so
    that older numpy versions can read the file too. A killed writer never leaves a
    half-written file at ``path``.

    Args:
        obj: what to pickle (normally a list of ndarrays or one ndarray).
        path: destination file; its folder must exist.
        protocol: pickle protocol.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist")
    data = pickle.dumps(obj, protocol=protocol)
    if protocol <= 2:
        data = _numpy1_global_names(data)
    write_bytes_atomic(path, data, make_parents=False)
    return path


def _describe(obj: Any) -> str:
    if isinstance(obj, np.ndarray):
        return f"ndarray of shape {obj.shape} and dtype {obj.dtype}"
    return type(obj).__name__


def _as_float32_2d(item: Any, index: int, source: str) -> np.ndarray:
    if not isinstance(item, np.ndarray):
        raise PickleFormatError(f"{source}: item {index} is a {_describe(item)}, expected a 2-D numpy array")
    if item.ndim != 2:
        raise PickleFormatError(f"{source}: item {index} has shape {item.shape}, expected 2-D (views, dim)")
    if not (np.issubdtype(item.dtype, np.floating) or np.issubdtype(item.dtype, np.integer)):
        raise PickleFormatError(f"{source}: item {index} has dtype {item.dtype}, expected a float array")
    return np.ascontiguousarray(item, dtype=np.float32)


def load_feature_list(
    path: PathLike,
    *,
    expected_len: int | None = None,
    expected_views: int | None = None,
    expected_dim: int | None = None,
) -> list[np.ndarray]:
    """Load a teacher-feature pickle (docs/original.md#s1-3) and check its shape.

    Accepts a list/tuple of 2-D arrays (the authors' format: N arrays of ``(10, 1024)``) or one
    3-D array ``(N, V, D)``.

    Args:
        path: the pickle file.
        expected_len: number of images N the caller's manifest has, if known.
        expected_views: views per image V (10 for the authors' features), if known.
        expected_dim: feature size D (1024 for GoogLeNet), if known.

    Returns:
        A list of N contiguous float32 arrays of shape ``(V, D)``.

    Raises:
        PickleFormatError: wrong container, ragged shapes, or an expectation that does not hold;
            the message says what was expected, what was found and in which file.
        UnsafePickleError: the pickle names a global outside the allow-list.
    """
    source = str(path)
    obj = load_pickle(path)
    if isinstance(obj, np.ndarray):
        if obj.ndim != 3:
            raise PickleFormatError(
                f"{source}: holds an ndarray of shape {obj.shape}, expected a list of (views, dim) "
                "arrays or one (images, views, dim) array"
            )
        items: list[Any] = list(obj)
    elif isinstance(obj, list | tuple):
        items = list(obj)
    else:
        raise PickleFormatError(
            f"{source}: holds a {_describe(obj)}, expected a list of (views, dim) arrays "
            "or one (images, views, dim) array"
        )
    if not items:
        raise PickleFormatError(f"{source}: holds no feature arrays (empty list)")
    feats = [_as_float32_2d(item, i, source) for i, item in enumerate(items)]

    if expected_len is not None and len(feats) != expected_len:
        raise PickleFormatError(f"{source}: {len(feats)} rows but the manifest has {expected_len} images")
    first_shape = feats[0].shape
    for i, feat in enumerate(feats):
        if feat.shape != first_shape:
            raise PickleFormatError(
                f"{source}: item {i} has shape {feat.shape} but item 0 has {first_shape}; "
                "every image needs the same (views, dim)"
            )
    views, dim = first_shape
    if expected_views is not None and views != expected_views:
        raise PickleFormatError(f"{source}: {views} views per image, expected {expected_views}")
    if expected_dim is not None and dim != expected_dim:
        raise PickleFormatError(f"{source}: feature dimension {dim}, expected {expected_dim}")
    return feats
