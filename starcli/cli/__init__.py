"""starcli command line (Typer): parses arguments, calls the library, renders with rich.

Each command group lives in its own module with a ``register(app)`` function.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Optional

import typer

from .. import __version__
from .common import console, reported_errors

app = typer.Typer(
    name="starcli",
    help="Edit face attributes in photos and videos with StarGAN: detect, align, translate, paste.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        import torch

        console.print(f"starcli {__version__} (torch {torch.__version__})")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = None,
) -> None:
    """starcli: StarGAN face attribute editing for photos and videos."""


@app.command("plugins")
def plugins_command() -> None:
    """List backend and detector plugins and whether each can run here."""
    from rich.table import Table

    from ..plugins import list_plugins

    with reported_errors():
        table = Table(title="starcli plugins")
        for column in ("group", "name", "status", "details", "provided by"):
            table.add_column(column)
        for info in list_plugins():
            status = "[green]available[/]" if info.available else ("[red]broken[/]" if not info.loaded else "[yellow]unavailable[/]")
            table.add_row(info.group.split(".")[-1], info.name, status, info.reason or info.target, info.distribution)
        console.print(table)


_COMMAND_MODULES = ("models_cmd", "translate_cmd", "train_cmd", "datasets_cmd")
for _module_name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"{__name__}.{_module_name}")
    except ModuleNotFoundError as _exc:  # a command module not written yet (development only)
        if _exc.name != f"{__name__}.{_module_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
