"""``starcli models list|info|import|export|pull|remove``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import console, err_console, make_progress, reported_errors

models_app = typer.Typer(help="List, inspect, import, export, download and remove models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Embedded, installed and downloadable models (the default is marked *)."""
    from ..models import list_models

    with reported_errors():
        infos = list_models()
        if as_json:
            rows = [
                {"name": i.name, "location": i.location, "path": str(i.path) if i.path else None, "default": i.is_default,
                 "attributes": i.spec.attributes if i.spec else None, "image_size": i.spec.image_size if i.spec else None,
                 "description": i.description, "error": i.error}
                for i in infos
            ]
            console.print_json(json.dumps(rows))
            return
        table = Table(title="starcli models")
        for column in ("", "name", "where", "size", "attributes", "description"):
            table.add_column(column)
        for i in infos:
            attrs = ", ".join(i.spec.attributes) if i.spec else (i.error or "-")
            size = f"{i.spec.image_size}px" if i.spec else "-"
            table.add_row("*" if i.is_default else "", i.name, i.location, size, attrs, i.description)
        console.print(table)


@models_app.command("info")
def info_command(
    model: Annotated[str, typer.Argument(help="Model name or path (bundle, run folder, official -G.ckpt).")],
    attrs: Annotated[Optional[str], typer.Option("--attrs", help="Attribute names for an official checkpoint, comma separated.")] = None,
) -> None:
    """Show a model's card: attributes, groups, architecture, template, licence, quality."""
    from ..models import load

    with reported_errors():
        loaded = load(model, [a.strip() for a in attrs.split(",")] if attrs else None)
        card = loaded.spec.to_card()
        g = loaded.spec.generator
        params = sum(p.numel() for p in loaded.generator.parameters())
        console.print(f"[bold]{loaded.spec.name}[/]  {loaded.source}")
        console.print(f"attributes: {', '.join(loaded.spec.attributes)}")
        console.print(f"groups:     {'; '.join(' | '.join(x) for x in loaded.spec.groups) or '-'}")
        console.print(f"image size: {loaded.spec.image_size}px   generator: conv_dim {g.conv_dim}, {g.repeat_num} residual blocks{f', detail head {g.detail_dim}' if g.detail_dim else ''}, {params:,} parameters")
        console.print(f"critic:     {'yes (source attributes estimated per face)' if loaded.discriminator is not None else 'no (source from --source or the card default)'}")
        console.print(f"licence:    {loaded.spec.license}")
        for key in ("description", "provenance", "quality", "recipe"):
            if card.get(key):
                console.print(f"{key}: " + (card[key] if isinstance(card[key], str) else json.dumps(card[key], indent=1)), soft_wrap=True)


@models_app.command("import")
def import_command(
    checkpoint: Annotated[Path, typer.Argument(help="Official <iter>-G.ckpt (a sibling <iter>-D.ckpt is imported too).")],
    attrs: Annotated[str, typer.Option("--attrs", help="Attribute names in label order, comma separated.")],
    name: Annotated[str, typer.Option("--name", help="Name in the model store.")],
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Crop size (default: from the discriminator, else 128).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an installed model of that name.")] = False,
) -> None:
    """Turn an official StarGAN checkpoint into a bundle in the model store."""
    from ..models import import_official

    with reported_errors():
        folder = import_official(checkpoint, [a.strip() for a in attrs.split(",") if a.strip()], name, image_size=image_size, overwrite=force)
        console.print(f"imported {checkpoint} as '{name}' -> {folder}")


@models_app.command("export")
def export_command(
    model: Annotated[str, typer.Argument(help="Model name or path (bundle, run folder).")],
    dest: Annotated[Path, typer.Argument(help="Destination folder.")],
    official: Annotated[bool, typer.Option("--official", help="Write official-style <name>-G.ckpt / -D.ckpt state dicts instead of a bundle.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Store bundle weights in float16 (half the size).")] = False,
    name: Annotated[Optional[str], typer.Option("--name", help="Rename the model in the exported card.")] = None,
    card: Annotated[Optional[Path], typer.Option("--card", help="JSON object merged into the card (quality, provenance, description, license, recipe).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace DEST if it exists.")] = False,
) -> None:
    """Copy a model out as a bundle or as official checkpoints."""
    import torch

    from ..errors import InputError
    from ..models import export_model

    with reported_errors():
        updates = None
        if card is not None:
            try:
                updates = json.loads(card.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(card, f"cannot read card JSON ({exc})") from None
            if not isinstance(updates, dict):
                raise InputError(card, "card JSON must be an object")
        paths = export_model(model, dest, official=official, dtype=torch.float16 if fp16 else None, name=name, card_updates=updates, overwrite=force)
        for path in paths:
            console.print(f"wrote {path}")


@models_app.command("pull")
def pull_command(
    name: Annotated[str, typer.Argument(help="Registered model name (see `starcli models list`).")],
    url: Annotated[Optional[str], typer.Option("--url", help="Download from this URL instead (a mirror).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if installed.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Network timeout in seconds.")] = 30.0,
) -> None:
    """Download a registered model's weights, verify them and install the bundle."""
    from ..models import pull_model

    with reported_errors():
        with make_progress() as progress:
            task = progress.add_task(f"pull {name}", total=None, rate="")

            def on_progress(done: int, total: int | None) -> None:
                progress.update(task, completed=done, total=total, rate=f"{done / 1e6:.1f} MB")

            folder = pull_model(name, url=url, on_progress=on_progress, timeout=timeout, force=force)
        console.print(f"installed '{name}' -> {folder}")


@models_app.command("remove")
def remove_command(name: Annotated[str, typer.Argument(help="Installed model name.")]) -> None:
    """Delete an installed model from the store."""
    from ..models import remove_model

    with reported_errors():
        folder = remove_model(name)
        err_console.print(f"removed {folder}")
