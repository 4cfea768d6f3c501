"""Shared CLI helpers: consoles, one-line error reporting, rich progress bars."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..errors import StarcliError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def error_line(message: str) -> None:
    """Print one error line on stderr (the message is not parsed as rich markup)."""
    err_console.print("[bold red]error:[/] " + escape(message), soft_wrap=True)


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Turn a :class:`StarcliError` into one line on stderr and exit code 1."""
    try:
        yield
    except StarcliError as exc:
        error_line(str(exc))
        raise typer.Exit(1) from None


def make_progress(*, transient: bool = False, unit: str = "") -> Progress:
    """A rich progress bar: description, bar, done/total, rate, elapsed, ETA."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}" if unit else ""),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=not err_console.is_terminal and os.environ.get("STARCLI_PROGRESS") != "1",
    )
