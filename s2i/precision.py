"""Numeric precision of the model arithmetic: ``--precision {fp32,bf16,fp16,auto}`` for every stage that runs
a network.

``fp32`` is the original's arithmetic and the default of the paper presets. ``bf16`` and ``fp16`` run the
forward and backward passes under ``torch.autocast`` (matrix products and convolutions in 16 bits, with
float32 accumulation; reductions, norms and losses stay in float32 as autocast decides); the weights,
the optimizer state, the generator's moving average and every loss value stay float32. ``fp16`` needs
CUDA and a gradient scaler; ``bf16`` needs hardware that computes it natively: on a CPU without it every
bf16 operation is emulated and a run gets several times *slower*, so that is refused with an error rather
than done silently. ``auto`` picks bf16 where it is native and fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# CPU flags of native bf16 arithmetic, as Linux's /proc/cpuinfo names them: x86's AVX-512 BF16 and AMX
# ("flags" lines), and Arm's BF16 extension of Armv8.6 (BFDOT/BFMMLA; "Features" lines, e.g. Graviton3).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
RESOLVED = ("fp32", "bf16", "fp16")
"""What :func:`resolve_precision` returns, and what :func:`autocast` and :func:`grad_scaler` take."""


class PrecisionError(ValueError):
    """A precision the device cannot run (a user error, printed by ``s2i.cli`` as one line)."""


@functools.cache
def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The native-bf16 flags this CPU reports (empty where it reports none, or on a system without
    ``/proc/cpuinfo``). Read once per path (cached: call ``cpu_bf16_flags.cache_clear()`` after
    pointing a test at another file)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    return tuple(f for f in NATIVE_BF16_FLAGS if f in flags)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA: compute capability 8.0 or newer)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(cpu_bf16_flags())


def resolve_precision(name: str, device: torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``--precision name`` on ``device``; refuses what it cannot run.

    Raises:
        PrecisionError: an unknown name, fp16 without CUDA, or bf16 where it is not native.
    """
    if name not in PRECISIONS:
        raise PrecisionError(f"--precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise PrecisionError("--precision fp16 needs CUDA (float16 on a CPU is slow and needs loss scaling); "
                             "use bf16 on a CPU that has it, or fp32")
    if name == "bf16" and not native_bf16(device):
        if device.type == "cuda":
            why = f"the GPU ({torch.cuda.get_device_name(device)}) has no native bf16 (compute capability < 8.0)"
        else:
            why = (f"this CPU reports none of the native-bf16 flags {', '.join(NATIVE_BF16_FLAGS)} in "
                   "/proc/cpuinfo, so bf16 would be emulated and several times slower than fp32")
        raise PrecisionError(f"--precision bf16: {why}; use --precision fp32 (or auto)")
    return name


def _check_resolved(precision: str) -> None:
    if precision not in RESOLVED:
        raise ValueError(f"precision must be one of {', '.join(RESOLVED)} (resolve 'auto' with resolve_precision "
                         f"first), got {precision!r}")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context in which forward passes run: nothing for fp32 (so fp32 runs exactly as without this
    module), ``torch.autocast(device.type, dtype)`` otherwise."""
    _check_resolved(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler that is active for fp16 only (bf16 has float32's range and needs none); disabled,
    its ``scale`` returns the loss unchanged and its ``step`` is the optimizer's."""
    _check_resolved(precision)
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 when it is a 16-bit float (an autocast output), else ``t`` itself (float32 and
    float64 stay as they are, so this is a no-op outside autocast)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


@contextlib.contextmanager
def fp32_region() -> Iterator[None]:
    """Turns autocast off inside (for losses and statistics that must see float32)."""
    with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
        yield
