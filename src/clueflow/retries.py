"""User errors are not retried: where a job records the one line it stopped on, and when that record is dropped.

The workflow scripts' shared entry (``workflow_scripts/common.py``) writes :func:`user_error_marker` when a job
stops on a :class:`~clueflow.errors.ClueflowError` and, when it finds one at start, repeats the line and exits at
once; ``rules/common.smk`` sizes such a retry as the smallest CPU job (:mod:`clueflow.resources`) and clears every
marker when a run starts. Apart from the sizing (clueflow.resources): the scripts need only this."""

from __future__ import annotations

from pathlib import Path

SUFFIX = ".user_error"


PREFIX = "clueflow: "  # every marker holds one error line, as the CLI prints it


def user_error_marker(log_path: str | Path) -> Path:
    """Beside a job's log: the one line of the user error its attempt stopped on. A retry of the job finds it and
    fails at once with the same line (retrying cannot fix an input); a run's start removes every marker, so a fixed
    input is tried again."""
    return Path(f"{log_path}{SUFFIX}")


def record_user_error(log_path: str | Path, line: str) -> None:
    user_error_marker(log_path).write_text(f"{line}\n")


def recorded_user_error(log_path: str | Path) -> str | None:
    """The line a job's previous attempt stopped on, or None."""
    marker = user_error_marker(log_path)
    return _line(marker) if marker.is_file() else None


def clear_user_errors(logs_dir: str | Path) -> None:
    """Forget the user errors of earlier runs (called when a run starts). Only markers this module wrote are
    removed: regular files with the suffix that hold one clueflow error line; anything else is left alone."""
    for marker in Path(logs_dir).rglob(f"*{SUFFIX}"):
        if not marker.is_symlink() and marker.is_file() and _line(marker) is not None:
            marker.unlink()


def _line(marker: Path) -> str | None:
    text = marker.read_text(errors="replace")
    return text.strip() if text.startswith(PREFIX) and text.count("\n") == 1 and text.endswith("\n") else None
