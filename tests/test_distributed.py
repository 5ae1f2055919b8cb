"""s2i/distributed.py in a single process (no torchrun): devices, defaults, and replica fingerprints."""

from __future__ import annotations

import pytest
import torch

from s2i.distributed import (
    DeviceError,
    DistInfo,
    barrier,
    cleanup,
    gather_fingerprints,
    init_distributed,
    parameter_fingerprint,
    resolve_device,
)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")


@pytest.fixture
def no_launcher_env(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(4, 2))


@no_cuda
def test_auto_is_cpu_without_cuda():
    assert resolve_device("auto") == torch.device("cpu")


def test_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")


@no_cuda
def test_cuda_without_cuda_says_use_cpu():
    with pytest.raises(DeviceError, match="--device cpu"):
        resolve_device("cuda")


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:0", "", "mps"])
def test_bad_device_names(name):
    with pytest.raises(ValueError, match="--device must be auto, cpu or cuda"):
        resolve_device(name)


@no_cuda
def test_init_without_launcher(no_launcher_env):
    info = init_distributed("auto")
    assert info == DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    assert info.is_main and not info.distributed
    assert not torch.distributed.is_initialized()


def test_init_takes_the_local_rank_flag_without_env(no_launcher_env):
    info = init_distributed("cpu", local_rank_flag=2)
    assert (info.rank, info.local_rank, info.world_size) == (0, 2, 1)


def test_env_local_rank_wins_over_the_flag(no_launcher_env, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    info = init_distributed("cpu", local_rank_flag=5)
    assert (info.rank, info.local_rank, info.world_size, info.distributed) == (0, 1, 1, False)


def test_dist_info_properties():
    cpu = torch.device("cpu")
    assert DistInfo(rank=1, local_rank=1, world_size=2, device=cpu).is_main is False
    assert DistInfo(rank=1, local_rank=1, world_size=2, device=cpu).distributed is True


def test_barrier_and_cleanup_are_no_ops_without_a_group():
    barrier()
    cleanup()


def test_fingerprint_equal_for_identical_seeds():
    a, b = _model(0), _model(0)
    fa = parameter_fingerprint(a)
    assert fa == parameter_fingerprint(b)
    assert len(fa) == 64 and int(fa, 16) >= 0
    assert fa != parameter_fingerprint(_model(1))


def test_fingerprint_sees_one_ulp():
    a, b = _model(0), _model(0)
    with torch.no_grad():
        w = b[2].weight
        w[1, 3] = torch.nextafter(w[1, 3], torch.tensor(float("inf")))
    assert not torch.equal(a[2].weight, b[2].weight)
    assert torch.allclose(a[2].weight, b[2].weight, rtol=0, atol=1e-6)
    assert parameter_fingerprint(a) != parameter_fingerprint(b)


def test_fingerprint_covers_buffers():
    a, b = _model(0), _model(0)
    b[1].running_mean += 1e-3
    assert parameter_fingerprint(a) != parameter_fingerprint(b)
    b = _model(0)
    b[1].num_batches_tracked += 1
    assert parameter_fingerprint(a) != parameter_fingerprint(b)


def test_fingerprint_ignores_training_mode_but_not_dtype():
    a, b = _model(0), _model(0)
    b.eval()
    assert parameter_fingerprint(a) == parameter_fingerprint(b)
    assert parameter_fingerprint(a) != parameter_fingerprint(_model(0).double())


def test_gather_without_a_process_group():
    m = _model(0)
    out = gather_fingerprints(m)
    assert out == [parameter_fingerprint(m)]
