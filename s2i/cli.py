"""The one place that turns a user's mistake into one line on stderr instead of a traceback.

Every stage script ends with ``if __name__ == "__main__": run_cli(main)``. Errors about the user's input,
files or environment derive from ValueError (ConfigError, ManifestError, AudioError, CheckpointError, …),
OSError, pickle.UnpicklingError (a refused pickle) or one of the runtime errors listed here; anything else
is a bug and keeps its traceback. A run stopped by Ctrl-C exits with status 130 (128 + the signal), the
shell's convention, and no traceback either.
"""

from __future__ import annotations

import pickle
import signal
import sys
from collections.abc import Callable
from typing import Any

from s2i.interrupt import TrainingInterrupted
from s2i.runs import RunFolderError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, OSError, pickle.UnpicklingError, RunFolderError, FloatingPointError,
)


def run_cli(main: Callable[[], Any], extra: tuple[type[BaseException], ...] = ()) -> Any:
    """Runs ``main()``; a user error exits with status 1 and ``error: <message>``."""
    try:
        return main()
    except TrainingInterrupted as exc:
        sys.exit(exc.exit_code)  # the trainer has logged where its checkpoint is
    except KeyboardInterrupt:
        print("interrupted: stopped without saving; what was written before is kept", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except USER_ERRORS + extra as exc:
        sys.exit(f"error: {exc}")
