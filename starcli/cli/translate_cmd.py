"""``starcli translate`` and ``starcli config show``.

Thin layer: parse flags into config overrides (flags mirror config keys), validate the edits
against the model before any work, run :func:`starcli.pipeline.process_paths` with a progress
bar, print one line per problem and a summary table. Exit codes: 0 all good, 1 some file failed
(after finishing the rest) or the model/backend cannot be used, 2 usage errors (bad flags,
unknown attributes, conflicting ``--set``, bad config keys).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import AttributeSpecError, ConfigError, StarcliError
from .common import console, err_console, error_line, make_progress

config_app = typer.Typer(help="Show the merged configuration.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("translate", no_args_is_help=True)(translate_command)
    app.add_typer(config_app, name="config")


def _usage_error(message: str) -> typer.Exit:
    error_line(message)
    return typer.Exit(2)


def translate_command(
    inputs: Annotated[list[str], typer.Argument(help="Photos, folders (recursive) or globs ('photos/**/*.jpg'). Videos go to the video pipeline.", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder; the input tree is mirrored under it.", show_default=False)],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="One edit: hair=black, male, no-young; repeat or comma-separate. \\[translate.set]")] = None,
    edit: Annotated[Optional[list[str]], typer.Option("--edit", "-e", help="Several edits, one per flag ('hair=black,male' --edit young): one output folder each. \\[translate.edits]")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model name or path (default: the embedded model). \\[translate.model]")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="Generator backend: auto, cpu, cuda, onnx, openvino... \\[translate.backend]")] = None,
    precision: Annotated[Optional[str], typer.Option("--precision", help="fp32, bf16 or fp16 (default: the backend's). \\[translate.precision]")] = None,
    source: Annotated[Optional[str], typer.Option("--source", help="Source attributes instead of the critic's estimate, e.g. 'hair=brown,male'. \\[translate.source]")] = None,
    edit_mode: Annotated[Optional[str], typer.Option("--edit-mode", help="direct (StarGAN's output), difference (input + G(x,target) - G(x,source)) or masked (G's output where the edit acts, the input elsewhere); default: the model card's. \\[translate.edit_mode]")] = None,
    strength: Annotated[Optional[float], typer.Option("--strength", help="Scale every edit: 0.5 half as strong, 2 twice (0-4; default 1, as the model makes it). \\[translate.strength]")] = None,
    detector: Annotated[Optional[str], typer.Option("--detector", help="Face detector plugin. \\[detect.detector]")] = None,
    upsample: Annotated[Optional[int], typer.Option("--upsample", help="Detector upsampling (0-3; 1 finds ~40 px faces). \\[detect.upsample]")] = None,
    min_face: Annotated[Optional[float], typer.Option("--min-face", help="Ignore faces smaller than this many pixels. \\[detect.min_face_size]")] = None,
    largest_only: Annotated[Optional[bool], typer.Option("--largest-only/--all-faces", help="Edit only the largest face of each photo. \\[detect.largest_only]")] = None,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite/--skip-existing", help="Replace existing outputs, or skip them (default: skip, so a re-run resumes). \\[run.overwrite]")] = None,
    no_face: Annotated[Optional[str], typer.Option("--no-face", help="Photos without a face: fail, copy (write unchanged) or skip. \\[run.no_face]")] = None,
    grid: Annotated[Optional[bool], typer.Option("--grid/--no-grid", help="Also write <name>.grid.<ext>: original | each edit. \\[run.grid]")] = None,
    crops: Annotated[Optional[bool], typer.Option("--crops/--no-crops", help="Also write aligned and translated crops to <name>.crops/. \\[run.crops]")] = None,
    aligned: Annotated[Optional[bool], typer.Option("--aligned/--not-aligned", help="Inputs are aligned face crops: no detection, no paste. \\[run.aligned]")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write a JSON report (faces, boxes, edits, timings per file). \\[run.report]")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be done; write nothing.")] = False,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Faces per generator call. \\[run.batch_size]")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Reader and writer threads each. \\[run.workers]")] = None,
    start: Annotated[Optional[float], typer.Option("--start", help="Videos: start of the time range, seconds. \\[video.start]")] = None,
    end: Annotated[Optional[float], typer.Option("--end", help="Videos: end of the time range, seconds (0: to the end). \\[video.end]")] = None,
    crf: Annotated[Optional[float], typer.Option("--crf", help="Videos: encoder quality (x264 default 18, vp9 32). \\[video.crf]")] = None,
    codec: Annotated[Optional[str], typer.Option("--codec", help="Videos: encoder (default per container: libx264, libvpx-vp9, mpeg4, gif). \\[video.codec]")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Videos: x264 preset (default fast) or vp9 deadline. \\[video.preset]")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML config file (default: ./starcli.toml if present).")] = None,
) -> None:
    """Translate every face in INPUTS into OUT: [bold]starcli translate photos/ --set hair=black --set male -o out/[/]"""
    # Idle OpenMP threads sleep instead of spinning: the generator shares the cores with the
    # reader/writer threads (and often other processes). Measured on 2 busy cores: fp32 eager
    # generator 7.3 s -> 1.1 s per crop. Takes effect when torch is first imported (below).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .. import models
    from ..config import load_config
    from ..pipeline import Pipeline, build_edits, process_paths

    overrides: dict[str, Any] = {
        "translate.set": set_ or None, "translate.edits": edit or None, "translate.model": model,
        "translate.backend": backend, "translate.precision": precision, "translate.source": source,
        "translate.edit_mode": edit_mode, "translate.strength": strength,
        "detect.detector": detector, "detect.upsample": upsample, "detect.min_face_size": min_face,
        "detect.largest_only": largest_only, "run.overwrite": overwrite, "run.no_face": no_face,
        "run.grid": grid, "run.crops": crops, "run.aligned": aligned,
        "run.report": str(report) if report is not None else None, "run.dry_run": dry_run or None,
        "run.batch_size": batch_size, "run.workers": workers,
        "video.start": start, "video.end": end, "video.crf": crf, "video.codec": codec, "video.preset": preset,
    }
    if overwrite is False:
        overrides["run.skip_existing"] = True
    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None
    try:
        loaded = models.load(cfg.translate.model or models.default_model_name())
        edits = build_edits(cfg, loaded.spec)
    except AttributeSpecError as exc:
        from ..attributes import describe_choices

        message = str(exc)
        if "valid settings" not in message and "choose one of" not in message:
            message += f" (valid settings: {describe_choices(loaded.spec)})"
        raise _usage_error(message) from None
    except StarcliError as exc:
        error_line(str(exc))
        raise typer.Exit(1) from None

    try:
        pipeline = None if cfg.run.dry_run else Pipeline(cfg, model=loaded, edits=edits)
    except (AttributeSpecError, ConfigError) as exc:
        raise _usage_error(str(exc)) from None
    except StarcliError as exc:
        error_line(str(exc))
        raise typer.Exit(1) from None

    progress = make_progress(unit="files")
    state = {"faces": 0, "task": None}

    def on_event(ev) -> None:
        if ev.kind == "video" and ev.video is not None:  # frames of the current video: bar, fps, ETA
            v = ev.video
            if v.kind == "start":
                state["vtask"] = progress.add_task(Path(v.path).name, total=v.frames_total or None,
                                                   completed=v.frames_done, rate="")
            elif v.kind == "note":
                err_console.print(f"[yellow]note:[/] {escape(v.path)}: {escape(v.message)}", soft_wrap=True)
            elif state.get("vtask") is not None:
                progress.update(state["vtask"], completed=v.frames_done,
                                rate=f"{v.fps:.1f} fps, {v.faces} faces")
                if v.kind == "done":
                    progress.remove_task(state["vtask"])
                    state["vtask"] = None
            return
        if ev.kind == "plan":
            state["task"] = progress.add_task("translate", total=ev.total, rate="")
            return
        if ev.kind == "file" and ev.result is not None:
            r = ev.result
            if r.kind == "video" and state.get("vtask") is not None:
                progress.remove_task(state["vtask"])
                state["vtask"] = None
            if r.status == "failed":
                error_line(r.line)
            elif r.status in ("skipped", "no_face") and not r.reason.startswith("output exists"):
                err_console.print(f"[yellow]skipped:[/] {escape(r.line)}" if r.status == "skipped" else f"[yellow]warning:[/] {escape(r.line)}", soft_wrap=True)
            if r.status == "done":
                state["faces"] += len(r.faces)
            if state["task"] is not None and not cfg.run.dry_run:
                progress.update(state["task"], advance=1, rate=f"{state['faces']} faces")

    try:
        with progress:
            result = process_paths(inputs, out, cfg, on_event=on_event, pipeline=pipeline)
    except (AttributeSpecError, ConfigError) as exc:
        raise _usage_error(str(exc)) from None
    except StarcliError as exc:
        error_line(str(exc))
        raise typer.Exit(1) from None

    if cfg.run.dry_run:
        _print_plan(result)
    else:
        _print_summary(result)
    if result.failed:
        raise typer.Exit(1)


def _print_plan(result) -> None:
    for f in result.files:
        if f.status == "planned":
            console.print(f"translate {escape(f.input)} -> {escape(', '.join(f.outputs))}", soft_wrap=True)
        else:
            console.print(f"{f.status:9} {escape(f.line)}", soft_wrap=True)
    console.print(f"dry run: {result.count('planned')} to translate, {result.skipped} skipped, {result.failed} failed; edits: {escape('; '.join(result.edits))}")


def _print_summary(result) -> None:
    s = result.summary()
    table = Table(title="starcli translate", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for label, value in (("files", s["files"]), ("done", s["done"]), ("faces", s["faces"]), ("skipped", s["skipped"]),
                         ("no face (copied)", s["no_face"]), ("failed", s["failed"]),
                         ("photos/s", f"{s['photos_per_second']:.2f}"), ("faces/s", f"{s['faces_per_second']:.2f}"),
                         ("seconds", f"{s['seconds']:.2f}")):
        table.add_row(label, str(value))
    videos = [f for f in result.files if f.kind == "video" and f.status in ("done", "no_face")]
    for f in videos:  # frames and faces per video
        v = f.video
        console.print(f"video {escape(f.input)}: {v.get('frames', 0)} frames, {v.get('faces', 0)} faces "
                      f"({v.get('tracks', 0)} tracks){'; ' + escape(str(v['note'])) if v.get('note') else ''}", soft_wrap=True)
    console.print(table)
    if result.stage_seconds:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.stage_seconds.items())
        console.print(f"model {escape(result.model)}, backend {escape(result.backend)}, detector {escape(result.detector)}; "
                      f"stage time (summed over threads): {stages}; generator idle {s['generator_idle_seconds']:.2f}s", soft_wrap=True)


@config_app.command("show")
def config_show(
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML config file (default: ./starcli.toml if present).")] = None,
    as_toml: Annotated[bool, typer.Option("--toml", help="Print as TOML instead of a table.")] = False,
) -> None:
    """Print every config key with its merged value and where it came from."""
    from ..config import as_rows, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None
    rows = as_rows(cfg)
    if as_toml:
        section = None
        for dotted, value, src in rows:
            sec, _, key = dotted.partition(".")
            if sec != section:
                console.print(("" if section is None else "\n") + f"[{sec}]", markup=False)
                section = sec
            console.print(f"{key} = {_toml_value(value)}  # {src}", markup=False, soft_wrap=True)
        return
    table = Table(title=f"starcli config ({cfg.file or 'defaults only'})")
    for column in ("key", "value", "source"):
        table.add_column(column)
    for dotted, value, src in rows:
        table.add_row(dotted, escape(_toml_value(value)), escape(src))
    console.print(table)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)
