"""Tests for s2i.data.safe_pickle: round trips, Python 2 / numpy 1.x streams, refusal of unsafe globals."""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from s2i.data.safe_pickle import (
    PickleFileMissingError,
    PickleFormatError,
    UnsafePickleError,
    load_feature_list,
    load_pickle,
    loads_pickle,
    save_pickle,
)

PROTOCOLS = [2, pickle.HIGHEST_PROTOCOL]


def _features(n: int = 3, views: int = 10, dim: int = 16, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((views, dim)).astype(np.float32) for _ in range(n)]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_round_trip_list_of_float32_arrays(tmp_path: Path, protocol: int) -> None:
    feats = _features()
    path = save_pickle(feats, tmp_path / "feats.pickle", protocol=protocol)
    loaded = load_pickle(path)
    assert isinstance(loaded, list) and len(loaded) == len(feats)
    for a, b in zip(loaded, feats):
        assert a.dtype == np.float32 and a.shape == (10, 16)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_round_trip_plain_containers_and_numpy_scalars(protocol: int) -> None:
    obj = {
        "list": [1, 2.5, -3, None, True, False],
        "tuple": (1, "two", b"\x00\xffthree", bytearray(b"ab")),
        "set": {1, 2, 3},
        "frozenset": frozenset({"a", "b"}),
        "complex": 1 + 2j,
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "scalar": np.float32(1.5),
        "int64": np.int64(-7),
        "lens": np.array([[3, 2048], [64, 100]], dtype=np.int64),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "big_int": 2**70,
    }
    loaded = loads_pickle(pickle.dumps(obj, protocol=protocol))
    assert loaded.keys() == obj.keys()
    for key in ("list", "tuple", "set", "frozenset", "complex", "scalar", "int64", "big_int"):
        assert loaded[key] == obj[key], key
        assert type(loaded[key]) is type(obj[key]), key
    assert isinstance(loaded["ordered"], collections.OrderedDict)
    assert list(loaded["ordered"].items()) == [("b", 1), ("a", 2)]
    np.testing.assert_array_equal(loaded["lens"], obj["lens"])
    assert loaded["lens"].dtype == np.int64
    np.testing.assert_array_equal(loaded["fortran"], obj["fortran"])


def test_single_ndarray_embedding_pickle(tmp_path: Path) -> None:
    emb = np.random.default_rng(1).standard_normal((4, 10, 8)).astype(np.float32)
    loaded = load_pickle(save_pickle(emb, tmp_path / "audio_features_x.pickle"))
    assert isinstance(loaded, np.ndarray) and loaded.shape == (4, 10, 8) and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, emb)


def test_python2_style_protocol2_dump_loads_with_latin1() -> None:
    # Python 3 at protocol 2 writes bytes through _codecs.encode(str, 'latin1'), the closest a
    # Python 3 writer gets to what Python 2 + numpy wrote.
    feats = _features(n=2, views=10, dim=4)
    loaded = loads_pickle(pickle.dumps(feats, protocol=2), encoding="latin1")
    for a, b in zip(loaded, feats):
        np.testing.assert_array_equal(a, b)


def _py2_numpy_array_stream(arr: np.ndarray) -> bytes:
    """A protocol-2 stream shaped like Python 2.7 + numpy 1.x output: ``[arr]``.

    Python 2 writes its byte strings (the dtype code, the array buffer) as SHORT_BINSTRING
    (opcode ``U``), which Python 3 can only decode as text, hence ``encoding='latin1'``.
    """
    assert arr.dtype == np.float32 and arr.ndim == 2 and arr.nbytes < 256

    def short_binstring(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    rows, cols = arr.shape
    return (
        b"\x80\x02]q\x00"
        b"cnumpy.core.multiarray\n_reconstruct\nq\x01"
        b"cnumpy\nndarray\nq\x02K\x00\x85q\x03" + short_binstring(b"b") + b"\x87q\x04Rq\x05"
        b"(K\x01K" + bytes([rows]) + b"K" + bytes([cols]) + b"\x86q\x06"
        b"cnumpy\ndtype\nq\x07" + short_binstring(b"f4") + b"K\x00K\x01\x87q\x08Rq\x09"
        b"(K\x03" + short_binstring(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x0abq\x0b"
        b"\x89" + short_binstring(arr.tobytes()) + b"tq\x0cbq\x0da."
    )


def test_hand_written_python2_numpy_stream(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.float32).reshape(2, 3) * 1.25
    data = _py2_numpy_array_stream(arr)
    path = tmp_path / "py2.pickle"
    path.write_bytes(data)
    loaded = load_feature_list(path, expected_len=1, expected_views=2, expected_dim=3)
    np.testing.assert_array_equal(loaded[0], arr)
    # The same stream without latin1 cannot be decoded: a format error that names the source.
    with pytest.raises(PickleFormatError, match="py2.pickle"):
        loads_pickle(data, encoding="ascii", source=str(path))


def test_python2_builtin_names_are_translated() -> None:
    # Python 2 pickles spell builtins as __builtin__.*; here set([1, 2]) at protocol 2.
    data = b"\x80\x02c__builtin__\nset\nq\x00]q\x01(K\x01K\x02e\x85q\x02Rq\x03."
    assert loads_pickle(data) == {1, 2}


def test_numpy1_module_name_still_loads() -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    data = pickle.dumps([arr, np.float32(2.5)], protocol=2)
    # At protocol 2 a global is the GLOBAL opcode: b"c" + module + b"\n" + name + b"\n", in ASCII.
    new_names = [b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy._core.multiarray\nscalar\n"]
    if not all(name in data for name in new_names):  # pragma: no cover - numpy < 2 writes numpy.core
        pytest.skip("this numpy already writes numpy.core names")
    old = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"numpy._core" not in old and b"cnumpy.core.multiarray\n_reconstruct\n" in old
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DeprecationWarning from numpy.core either
        loaded = loads_pickle(old)
    np.testing.assert_array_equal(loaded[0], arr)
    assert loaded[1] == np.float32(2.5) and isinstance(loaded[1], np.float32)


def test_save_pickle_protocol2_writes_numpy1_names(tmp_path: Path) -> None:
    feats = _features(n=2, dim=4)
    path = save_pickle(feats, tmp_path / "f.pickle")
    data = path.read_bytes()
    assert data[:2] == b"\x80\x02"
    assert b"numpy._core" not in data
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data
    # Readable by plain pickle too (numpy 2 keeps numpy.core.multiarray._reconstruct for this).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = pickle.loads(data, encoding="latin1")
    for a, b in zip(plain, feats):
        np.testing.assert_array_equal(a, b)


def test_save_pickle_rewrite_leaves_payload_bytes_alone(tmp_path: Path) -> None:
    # A bytes payload that contains the text being rewritten must come back unchanged.
    payload = b"cnumpy._core.multiarray\n_reconstruct\n"
    obj = [payload, "numpy._core.multiarray", np.frombuffer(payload[:36], dtype=np.uint8)]
    loaded = load_pickle(save_pickle(obj, tmp_path / "p.pickle"))
    assert loaded[0] == payload and loaded[1] == obj[1]
    np.testing.assert_array_equal(loaded[2], obj[2])


def test_save_pickle_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "f.pickle"
    save_pickle([np.zeros((2, 2), np.float32)], path)
    save_pickle([np.ones((2, 2), np.float32)], path)  # overwrite
    np.testing.assert_array_equal(load_pickle(path)[0], np.ones((2, 2), np.float32))
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_pickle([lambda: None], path)
    # The failed write left the previous file intact and no temporary file behind.
    np.testing.assert_array_equal(load_pickle(path)[0], np.ones((2, 2), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pickle"]


def test_save_pickle_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_pickle([1], tmp_path / "nope" / "f.pickle")


# --------------------------------------------------------------------------- refusal


class _OsSystem:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class _Popen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.marker)],))


class _NumpyLoad:
    def __reduce__(self):
        return (np.load, ("/dev/null",))


class _Import:
    def __reduce__(self):
        return (__import__, ("os",))


class _Getattr:
    def __reduce__(self):
        return (getattr, ("text", "upper"))


def _payloads(marker: Path) -> dict[str, tuple[object, str]]:
    """name -> (object to pickle, the refused global, translated to its Python 3 name)."""
    return {
        "os.system": (_OsSystem(marker), f"{os.system.__module__}.system"),
        "eval": (_Eval(marker), "builtins.eval"),
        "subprocess.Popen": (_Popen(marker), "subprocess.Popen"),
        "numpy.load": (_NumpyLoad(), "numpy.load"),
        "__import__": (_Import(), "builtins.__import__"),
        "getattr": (_Getattr(), "builtins.getattr"),
    }


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize(
    "name", ["os.system", "eval", "subprocess.Popen", "numpy.load", "__import__", "getattr"]
)
def test_malicious_pickles_are_refused(tmp_path: Path, name: str, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload, refused = _payloads(marker)[name]
    # Hide the payload inside an otherwise valid feature list.
    data = pickle.dumps(_features(n=2, dim=4) + [payload], protocol=protocol)
    path = tmp_path / "evil.pickle"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError) as info:
        load_pickle(path)
    err = info.value
    # At protocol < 3 Python 3 writes Python 2 names (builtins -> __builtin__, subprocess ->
    # commands); the error reports the Python 3 object and the spelling found in the file.
    assert err.global_name == refused
    if err.written_as is not None:
        assert protocol < 3 and err.written_as in str(err)
    assert err.path == str(path)
    msg = str(err)
    assert refused in msg and str(path) in msg
    assert "only numpy arrays and plain containers" in msg
    assert isinstance(err, pickle.UnpicklingError)
    with pytest.raises(UnsafePickleError):
        load_feature_list(path)
    assert not marker.exists()


def test_os_system_payload_is_live_under_plain_pickle(tmp_path: Path) -> None:
    # Guard against a vacuous refusal test: the same bytes really do run under pickle.loads.
    live = tmp_path / "live"
    data = pickle.dumps(_OsSystem(live), protocol=2)
    pickle.loads(data)
    assert live.exists()
    safe = tmp_path / "safe"
    with pytest.raises(UnsafePickleError):
        loads_pickle(pickle.dumps(_OsSystem(safe), protocol=2))
    assert not safe.exists()


@pytest.mark.parametrize(
    "data, refused",
    [
        # Classic protocol-0 exploits: GLOBAL + REDUCE, and the INST opcode.
        (b"cos\nsystem\n(S'touch {m}'\ntR.", "os.system"),
        (b"cposix\nsystem\n(S'touch {m}'\ntR.", "posix.system"),
        (b"(S'touch {m}'\nios\nsystem\n.", "os.system"),
        (b"csubprocess\ncall\n((S'touch'\nS'{m}'\nltR.", "subprocess.call"),
        # getattr(builtins-ish, ...) chains and the Python 2 spelling of builtins.
        (b"c__builtin__\ngetattr\n(c__builtin__\nlist\nS'__class__'\ntR.", "builtins.getattr"),
        (b"c__builtin__\neval\n(S'1'\ntR.", "builtins.eval"),
        (b"cbuiltins\nexec\n(S'1'\ntR.", "builtins.exec"),
        # A module that merely looks like numpy.
        (b"cnumpy.testing\nsuppress_warnings\n)R.", "numpy.testing.suppress_warnings"),
        (b"cnumpy._core.multiarray\nfromfile\n(S'/etc/passwd'\ntR.", "numpy._core.multiarray.fromfile"),
    ],
)
def test_hand_crafted_exploit_streams_are_refused(tmp_path: Path, data: bytes, refused: str) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError) as info:
        loads_pickle(data.replace(b"{m}", str(marker).encode()), source="crafted.pkl")
    assert info.value.global_name == refused
    assert "crafted.pkl" in str(info.value)
    assert not marker.exists()


def test_codecs_encode_only_runs_latin1() -> None:
    ok = b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00abX\x06\x00\x00\x00latin1\x86R."
    assert loads_pickle(ok) == b"ab"
    bad = ok.replace(b"X\x06\x00\x00\x00latin1", b"X\x05\x00\x00\x00rot13")
    with pytest.raises(PickleFormatError, match="only latin1"):
        loads_pickle(bad)


def test_persistent_ids_are_refused() -> None:
    with pytest.raises(PickleFormatError, match="persistent"):
        loads_pickle(b"\x80\x02X\x01\x00\x00\x00xQ.")


def test_unsafe_error_survives_pickling() -> None:
    err = UnsafePickleError("/a/b.pickle", "builtins.eval", "__builtin__.eval")
    assert "'builtins.eval' (written as '__builtin__.eval')" in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.global_name, copy.written_as, str(copy)) == (
        err.path,
        err.global_name,
        err.written_as,
        str(err),
    )


# --------------------------------------------------------------------------- format errors


def test_truncated_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.pickle"
    data = pickle.dumps(_features(), protocol=2)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PickleFormatError, match="cut.pickle") as info:
        load_pickle(path)
    assert "truncated" in str(info.value) or "malformed" in str(info.value)


@pytest.mark.parametrize("cut", [1, 2, 10, 100, -1])
def test_any_truncation_is_a_format_error(cut: int) -> None:
    data = pickle.dumps(_features(n=2, dim=4), protocol=2)
    with pytest.raises(PickleFormatError, match="x.pkl"):
        loads_pickle(data[:cut], source="x.pkl")


def test_text_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not features\n1 2 3\n")
    with pytest.raises(PickleFormatError, match="notes.txt.*not a readable pickle"):
        load_pickle(path)


def test_empty_file_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.pickle"
    path.write_bytes(b"")
    with pytest.raises(PickleFormatError, match="empty.pickle: the file is empty"):
        load_pickle(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pickle"
    with pytest.raises(PickleFormatError, match="missing.pickle: no such pickle file") as info:
        load_pickle(missing)
    assert isinstance(info.value, PickleFileMissingError)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(PickleFormatError, match="is a directory"):
        load_pickle(tmp_path)


# --------------------------------------------------------------------------- load_feature_list


@pytest.mark.parametrize("container", ["list", "tuple", "array3d"])
def test_load_feature_list_accepts_list_tuple_and_3d(tmp_path: Path, container: str) -> None:
    feats = _features(n=4, views=10, dim=8)
    obj = {"list": feats, "tuple": tuple(feats), "array3d": np.stack(feats)}[container]
    path = save_pickle(obj, tmp_path / "f.pickle")
    loaded = load_feature_list(path, expected_len=4, expected_views=10, expected_dim=8)
    assert isinstance(loaded, list) and len(loaded) == 4
    for a, b in zip(loaded, feats):
        assert a.dtype == np.float32 and a.shape == (10, 8) and a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)


def test_load_feature_list_casts_to_float32(tmp_path: Path) -> None:
    feats = [f.astype(np.float64) for f in _features(n=2, dim=4)]
    loaded = load_feature_list(save_pickle(feats, tmp_path / "f.pickle"))
    assert all(a.dtype == np.float32 for a in loaded)
    np.testing.assert_allclose(loaded[0], feats[0], rtol=1e-6)


def test_load_feature_list_row_count_mismatch(tmp_path: Path) -> None:
    path = save_pickle(_features(n=118, views=2, dim=3), tmp_path / "image_features.pickle")
    with pytest.raises(PickleFormatError) as info:
        load_feature_list(path, expected_len=120)
    assert str(info.value) == f"{path}: 118 rows but the manifest has 120 images"


def test_load_feature_list_views_and_dim_mismatch(tmp_path: Path) -> None:
    path = save_pickle(_features(n=2, views=10, dim=16), tmp_path / "f.pickle")
    with pytest.raises(PickleFormatError, match=r"f\.pickle: 10 views per image, expected 9"):
        load_feature_list(path, expected_views=9)
    with pytest.raises(PickleFormatError, match=r"f\.pickle: feature dimension 16, expected 1024"):
        load_feature_list(path, expected_dim=1024)


@pytest.mark.parametrize(
    "obj, message",
    [
        (
            [np.zeros((10, 4), np.float32), np.zeros((10, 5), np.float32)],
            r"item 1 has shape \(10, 5\) but item 0 has \(10, 4\)",
        ),
        ([np.zeros((10, 4), np.float32), np.zeros(4, np.float32)], r"item 1 has shape \(4,\), expected 2-D"),
        ([np.zeros((10, 4), np.float32), "oops"], "item 1 is a str, expected a 2-D numpy array"),
        ([np.array([["a"]])], "item 0 has dtype <U1, expected a float array"),
        (np.zeros((10, 4), np.float32), r"ndarray of shape \(10, 4\), expected a list"),
        ({"a": 1}, "holds a dict, expected a list"),
        ([], "holds no feature arrays"),
    ],
)
def test_load_feature_list_rejects_wrong_shapes(tmp_path: Path, obj: object, message: str) -> None:
    path = save_pickle(obj, tmp_path / "bad.pickle")
    with pytest.raises(PickleFormatError, match=message) as info:
        load_feature_list(path)
    assert str(path) in str(info.value)
