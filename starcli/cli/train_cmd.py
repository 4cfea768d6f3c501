"""`starcli train`, `starcli eval`, `starcli prepare`: parse, load config, call the library, render.

``register(app)`` adds the three commands to a Typer app. No tensor math here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import os

import typer
from rich.table import Table

from starcli.cli.common import console, err_console, error_line
from starcli.errors import StarcliError


def _fail(exc: StarcliError) -> None:
    error_line(str(exc))
    raise typer.Exit(1)


def train_command(
    data: Annotated[Optional[Path], typer.Argument(help="Dataset: folder (labels.csv, list_attr_celeba.txt or class subfolders) or label file.")] = None,
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Run folder (run.out).")] = None,
    attrs: Annotated[Optional[str], typer.Option("--attrs", help="Comma-separated attribute columns, in order (data.attrs).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with data, model, optim, loss, augment, run and log tables.")] = None,
    iters: Annotated[Optional[int], typer.Option("--iters", help="Total iterations (optim.iters).")] = None,
    decay_iters: Annotated[Optional[int], typer.Option("--decay-iters", help="Linear lr decay to 0 over the last N iterations (optim.decay_iters).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per step and process (run.batch_size).")] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Training resolution (data.image_size).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda, cuda:N (run.device).")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Run or checkpoint folder to continue exactly.")] = None,
    init: Annotated[Optional[str], typer.Option("--init", help="Start from this model's weights (name, bundle or run folder; run.init): fine-tuning.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (run.seed).")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="auto, fp32, bf16, fp16 (run.precision).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads (run.threads).")] = None,
    save_every: Annotated[Optional[int], typer.Option("--save-every", help="Checkpoint period (run.save_every).")] = None,
    sample_every: Annotated[Optional[int], typer.Option("--sample-every", help="Sample grid period (log.sample_every).")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop and checkpoint after N steps in this session; --resume continues (run.max_steps).")] = None,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", help="Stop and checkpoint after this wall time; --resume continues (run.max_minutes).")] = None,
) -> None:
    """Train a StarGAN model on DATA; the run folder loads directly as a --model."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from starcli.train import StepInfo, load_train_config, resume_config, train

    overrides: dict[str, Any] = {
        "data.path": str(data) if data is not None else None,
        "data.attrs": attrs,
        "data.image_size": image_size,
        "optim.iters": iters,
        "optim.decay_iters": decay_iters,
        "run.out": str(out) if out is not None else None,
        "run.batch_size": batch_size,
        "run.device": device,
        "run.seed": seed,
        "run.precision": precision,
        "run.threads": threads,
        "run.save_every": save_every,
        "log.sample_every": sample_every,
        "run.max_steps": max_steps,
        "run.max_minutes": max_minutes,
        "run.resume": str(resume) if resume is not None else None,
        "run.init": init,
    }
    try:
        base = None
        if resume is not None:
            base = resume_config(resume)
            base["run"]["resume"] = ""
            base["run"]["max_steps"] = 0  # a session limit applies to one session only
            base["run"]["max_minutes"] = 0.0
            if out is None:  # continue in the run folder that holds the checkpoint
                run_dir = resume if (resume / "checkpoints").is_dir() else resume.parent.parent
                overrides["run.out"] = str(run_dir)
        cfg = load_train_config(config, overrides, base=base)
    except StarcliError as exc:
        _fail(exc)
        return

    with Progress(
        TextColumn("[bold]train[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[speed]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[losses]}"),
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal and os.environ.get("STARCLI_PROGRESS") != "1",
    ) as progress:
        task = progress.add_task("train", total=cfg.optim.iters, speed="", losses="")

        def on_step(info: StepInfo) -> None:
            shown = {k: v for k, v in info.losses.items() if k in ("D/real", "D/fake", "D/cls", "G/cls", "G/rec", "G/pair")}
            speed = f"{1.0 / info.sec_per_iter:.2f} it/s" if info.sec_per_iter > 0 else ""
            progress.update(
                task,
                completed=info.step,
                speed=speed,
                losses=" ".join(f"{k} {v:.3f}" for k, v in shown.items()),
            )

        try:
            summary = train(cfg, on_step=on_step)
        except StarcliError as exc:
            progress.stop()
            _fail(exc)
            return

    table = Table(title="training summary", show_header=False)
    table.add_row("run folder", str(summary.run_dir))
    table.add_row("steps", f"{summary.start_step} -> {summary.step} of {summary.iters}")
    table.add_row("data", f"{summary.num_images} images, {summary.num_pairs} pairs")
    table.add_row("attributes", ", ".join(summary.attributes))
    table.add_row("device / precision", f"{summary.device} / {summary.precision}")
    table.add_row("time", f"{summary.seconds:.1f} s ({summary.sec_per_iter:.3f} s/iter)")
    table.add_row("last checkpoint", str(summary.checkpoint) if summary.checkpoint else "-")
    for k, v in sorted(summary.losses.items()):
        table.add_row(k, f"{v:.4f}")
    console.print(table)


def eval_command(
    model: Annotated[str, typer.Argument(help="Model name, bundle or training run folder.")],
    data: Annotated[Path, typer.Argument(help="Held-out dataset (same layouts as train).")],
    limit: Annotated[int, typer.Option("--limit", help="Evaluate at most N images (0: all).")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON.")] = None,
    judge: Annotated[str, typer.Option("--judge", help="auto, masks (synth measures) or discriminator.")] = "auto",
    device: Annotated[str, typer.Option("--device")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32 or bf16 (generator autocast).")] = "fp32",
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (0: default).")] = 0,
    edit_mode: Annotated[Optional[str], typer.Option("--edit-mode", help="direct, difference or masked (default: the model card's).")] = None,
    attrs: Annotated[Optional[str], typer.Option("--attrs", help="Comma-separated attributes whose edits to measure (default: all).")] = None,
) -> None:
    """Per attribute: edit success rate, change outside the edited region, reconstruction L1, time."""
    try:
        from starcli.evaluate import evaluate_model

        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        report = evaluate_model(model, data, limit=limit, batch_size=batch_size, judge=judge, device=device, precision=precision, edit_mode=edit_mode,
                                edits=[a.strip() for a in attrs.split(",") if a.strip()] if attrs else None)
    except StarcliError as exc:
        _fail(exc)
        return
    table = Table(title=f"eval {report.model} on {report.data} ({report.num_images} images, judge: {report.judge}, edit mode: {report.edit_mode})")
    for col in ("attribute", "target", "n", "success", "on/off", "progress", "outside change", "rec L1", "ms/img"):
        table.add_column(col, justify="left" if col in ("attribute", "target") else "right")
    for r in report.rows:
        table.add_row(
            r.attribute,
            r.target,
            str(r.count),
            f"{100 * r.success:.1f}%",
            "/".join("-" if v is None else f"{100 * v:.0f}%" for v in (r.success_on, r.success_off)) if r.target == "flip" else "",
            "/".join("-" if v is None else f"{v:.2f}" for v in (r.progress_on, r.progress_off)) if r.target == "flip" else "",
            "-" if r.outside_change is None else f"{r.outside_change:.4f}",
            f"{r.rec_l1:.4f}",
            f"{1000 * r.seconds_per_image:.1f}",
        )
    console.print(table)
    if json_out is not None:
        report.write_json(json_out)
        console.print(f"wrote {json_out}")


def prepare_command(
    raw: Annotated[Path, typer.Argument(help="Folder of raw photos.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder for aligned crops.")],
    image_size: Annotated[int, typer.Option("--image-size")] = 128,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Label file to carry over (CSV/TSV or list_attr_celeba.txt, rows matched by file name).")] = None,
    detector: Annotated[str, typer.Option("--detector", help="Detector plugin (starcli plugins).")] = "dlib",
    upsample: Annotated[int, typer.Option("--upsample", help="Image doublings before detection (small faces).")] = 0,
) -> None:
    """Detect and align faces in RAW with translate's crop geometry, for training."""
    from starcli.cli.common import make_progress
    from starcli.data import prepare_dataset

    try:
        with make_progress() as progress:
            task = progress.add_task("prepare", total=None, rate="")

            def on_item(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            report = prepare_dataset(raw, out, image_size=image_size, labels=labels, detector=detector, upsample=upsample, on_item=on_item)
    except StarcliError as exc:
        _fail(exc)
        return
    console.print(f"{report['aligned']} faces aligned from {report['images']} images into {out} ({report['skipped']} without a face)")


def register(app: typer.Typer) -> None:
    """Add ``train``, ``eval`` and ``prepare`` to ``app``."""
    app.command("train")(train_command)
    app.command("eval")(eval_command)
    app.command("prepare")(prepare_command)
