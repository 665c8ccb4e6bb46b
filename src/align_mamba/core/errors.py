"""Errors that reach the user as one line, and the CLI wrapper that prints them so."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable


class AlignMambaError(Exception):
    """Base of every error the user should see as one clear line (no traceback)."""


class ConfigError(AlignMambaError, ValueError):
    """A parameter is invalid; the message names the parameter and the accepted values."""


class BackendUnavailableError(AlignMambaError, RuntimeError):
    """The requested compute backend cannot run here; the message names the install command."""


class DataIntegrityError(AlignMambaError):
    """A dataset file is missing or its sha256 does not match the manifest."""


class NonFiniteLossError(AlignMambaError, FloatingPointError):
    """Training produced NaN or inf; the message names the cell and the step."""


def _to_log_files(text: str) -> None:
    """Copy `text` into the job's log file(s), so a failed job's log says why it failed."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.stream.write(text)
            handler.flush()


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run `main`, turning an AlignMambaError into `error: <message>` on stderr and exit status 2."""
    try:
        return main(argv) or 0
    except AlignMambaError as err:
        print(f"error: {err}", file=sys.stderr)
        _to_log_files(f"error: {err}\n")
        return 2
    except Exception:
        _to_log_files(traceback.format_exc())
        raise
