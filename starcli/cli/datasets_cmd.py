"""``starcli datasets synth``: write procedural face datasets (see ``docs/synth.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import console, make_progress, reported_errors

datasets_app = typer.Typer(help="Make training and test datasets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``datasets`` command group to ``app``."""
    app.add_typer(datasets_app, name="datasets")


@datasets_app.command("synth")
def synth_command(
    n: Annotated[int, typer.Option("-n", "--n", min=0, help="Number of face crops (with --pairs, as many counterfactuals).")] = 1000,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (resumed if it exists).")] = Path("data/synth"),
    size: Annotated[int, typer.Option("--size", min=16, max=1024, help="Crop side in pixels (CelebA crop geometry).")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same bytes.")] = 0,
    pairs: Annotated[bool, typer.Option("--pairs/--no-pairs", help="Also render each face with 1-2 attributes changed.")] = True,
    scenes: Annotated[Optional[int], typer.Option("--scenes", min=1, help="Write this many scene photos (1-3 faces each) and scenes.json instead of crops.")] = None,
    width: Annotated[int, typer.Option("--width", min=64, help="Scene width (with --scenes).")] = 640,
    height: Annotated[int, typer.Option("--height", min=64, help="Scene height (with --scenes).")] = 480,
    workers: Annotated[Optional[int], typer.Option("--workers", min=0, help="Worker processes (default: up to 4 cores).")] = None,
) -> None:
    """Procedural faces with exact labels, region masks and counterfactual pairs."""
    from .. import synth

    with reported_errors():
        total = scenes if scenes is not None else n
        what = "scenes" if scenes is not None else "faces"
        with make_progress() as progress:
            task = progress.add_task(f"{what} -> {out}", total=total, rate="")

            def advance(done: int) -> None:
                progress.update(task, completed=done)

            if scenes is not None:
                report = synth.generate_scenes(out, scenes, seed=seed, width=width, height=height, on_item=advance)
            else:
                report = synth.generate_dataset(out, n, seed=seed, size=size, pairs=pairs, workers=workers, on_item=advance)
        seconds = max(report["seconds"], 1e-9)
        table = Table(title=f"starcli datasets synth -> {out}")
        if scenes is not None:
            for column in ("scenes", "faces", "seconds", "scenes/s"):
                table.add_column(column, justify="right")
            table.add_row(str(report["images"]), str(report["faces"]), f"{seconds:.1f}",
                          f"{report['images'] / seconds:.1f}")
        else:
            rendered = report["rendered"]
            for column in ("images", "pairs", "rendered now", "seconds", "images/s"):
                table.add_column(column, justify="right")
            table.add_row(str(report["images"]), str(report["pairs"]), str(rendered), f"{seconds:.1f}",
                          f"{rendered / seconds:.1f}")
        console.print(table)
