"""Ctrl-C and SIGTERM stop a training run at the next step boundary, after it saves a checkpoint.

A signal that arrives in the middle of a step would leave the weights, the optimizer and the step count
out of step with each other, so the handler only raises a flag. The trainers check it after every step
(and at every epoch end); when it is up they save a checkpoint from which ``--resume`` continues exactly,
log where it is, and raise :class:`TrainingInterrupted`, which ``s2i.cli.run_cli`` turns into exit
status 128 + signal (130 for Ctrl-C) without a traceback.

Under torchrun the check is collective: every rank all-reduces the flag each step, so a signal that
reached one rank stops all of them at the same step (torchrun itself forwards Ctrl-C to every worker
and gives them 30 s before it kills them).

A second Ctrl-C more than ``force_after`` seconds after the first raises KeyboardInterrupt at once:
the way out when the step or the save hangs. (A signal repeated within that window is ignored, since
one Ctrl-C can reach a process twice: from the terminal and forwarded by a launcher.)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving its checkpoint; the process should exit with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 128 + signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopRequest:
    """While active (a ``with`` block in the main thread), SIGINT and SIGTERM raise a flag instead of an exception.

    Args:
        log: called once with a line saying that the run will stop after the current step; from
            :meth:`requested`, not from the signal handler, which may have interrupted a write to the same
            log (Python's logging then fails with "reentrant call").
        device: where the all-reduced flag lives (a CUDA device under NCCL, the CPU under gloo).
        force_after: seconds after the first signal from which another one aborts without saving.
    """

    def __init__(self, log: Callable[[str], None] | None = None, device: Any = "cpu",
                 force_after: float = 1.0) -> None:
        self.log = log
        self.device = device
        self.force_after = force_after
        self.signum: int | None = None
        self._first_at = 0.0
        self._unannounced = False
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:
            return  # a forked data-loader worker inherited the handler; the main process decides
        if self.signum is None:
            self.signum, self._first_at = signum, time.monotonic()
            self._unannounced = True
        elif time.monotonic() - self._first_at > self.force_after:
            raise KeyboardInterrupt

    def requested(self) -> bool:
        """True when a signal arrived here or, under a process group, on any rank (collective: every rank
        must call it equally often)."""
        import torch  # here, so that s2i.cli (every stage script) does not pull torch in
        import torch.distributed as dist

        if self._unannounced:
            self._unannounced = False
            if self.log:
                self.log(f"{signal.Signals(self.signum).name} received: stopping after the current step and saving a "
                         "checkpoint (press Ctrl-C again to stop at once without saving)")
        signum = self.signum or 0
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = torch.tensor([signum], dtype=torch.int64, device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
            if signum and self.signum is None:
                self.signum = signum
        return signum != 0

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)


def ignore_sigint_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a terminal's Ctrl-C reaches every process of the group, and a worker
    that died of it would make the main process fail on its next batch instead of finishing its step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_run(run: Any, tb: Any, stop: StopRequest, where: str, checkpoint: str | Path, *,
             saved: str = "checkpoint", note: str = "") -> NoReturn:
    """Ends a training run that was asked to stop, after its checkpoint is on disk.

    Logs where it stopped and the command that continues it, closes the TensorBoard writer (if any) and
    the run folder, and raises :class:`TrainingInterrupted` with the signal's exit code.

    Args:
        run: the :class:`s2i.runs.RunFolder` of the run.
        tb: its TensorBoard writer, or None.
        where: e.g. ``"at step 120/720"`` or ``"part-way through epoch 3 (after batch 5 of 20)"``.
        checkpoint: the file ``--resume`` continues from.
        saved: what was saved (``"checkpoint"``, ``"snapshot"``).
        note: appended to the log line after the path (e.g. what the other checkpoints keep).
    """
    run.logger.info(f"interrupted {where}: {saved} saved to {checkpoint}{note}; to continue, run the same "
                    f"command with --resume {checkpoint}")
    if tb:
        tb.close()
    run.close()
    raise TrainingInterrupted(f"interrupted {where}", stop.exit_code)
