"""The one exception type for bad user input.

Any stage raises :class:`UserError` when the input is wrong (a missing path, a malformed
table, an impossible config). The CLI prints its message as a single line and exits with
status 2; it never shows a traceback for these.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user; the message says what is wrong and where, in one line."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message} ({hint})")


class TrainingFailed(Exception):
    """A run stopped on a non-finite loss or another unrecoverable state.

    The run directory stays valid (status ``failed`` in ``summary.json``); the CLI prints
    the message in one line and exits with status 1.
    """


def exit_code_for(exc: BaseException) -> tuple[int | None, str]:
    """The exit code and the one line to print for ``exc`` (None: not ours, re-raise).

    Shared by the CLI and the in-process study executor, so a rung run inside a study
    ends with the same code it would have as a ``scalelab`` process.
    """
    if isinstance(exc, UserError):
        return 2, f"scalelab: error: {exc}"
    if isinstance(exc, TrainingFailed):
        return 1, f"scalelab: run failed: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return 130, "\nscalelab: interrupted; run the same command again to resume."
    return None, ""
