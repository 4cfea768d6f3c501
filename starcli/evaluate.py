"""Evaluate a StarGAN model on held-out labelled faces.

``evaluate_model(model, data)`` translates every image to each edit and reports, per edit:

- ``success``: fraction of translated images the judge recognises as the target; for flips also
  ``success_on`` / ``success_off``, the same over the ``n_on`` / ``n_off`` images where the edit
  adds / removes the attribute (adding a feature is often much harder than removing it);
- ``outside_change``: mean absolute pixel change on [0, 1] outside the region the edit may
  touch (synth datasets with ``masks/<stem>.npz``; ``None`` without masks);
- ``progress_on`` / ``progress_off`` (flips, masks judge): how far the edit moves the judge's
  continuous score from the sources towards the faces that truly have the target value:
  ``(median(edited) - median(sources)) / (median(true targets) - median(sources))``; 1 means as
  far as the true renders, 0 not at all. It shows headway that the thresholded success hides;
- ``rec_l1``: mean ``|G(G(x, c_trg), c_src) - x|`` on [0, 1];
- ``seconds_per_image`` of the forward translation.

Edits: for an exclusive group (hair colours), "set member j" on every image that does not already
have j; for any other attribute, flip it on every image. Judges: ``masks`` uses
:func:`starcli.synth.measure_attributes` with the source render's masks (no learned judge);
``discriminator`` uses the model's own attribute classifier (``sigmoid(logit) > 0.5``).

Conventions: images ``(B, 3, S, S)`` float in ``[0, 1]`` outside the generator, ``[-1, 1]`` inside.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from starcli.data import ImageStore, load_dataset
from starcli.errors import InputError, ModelError
from starcli.translate import edit_crops

__all__ = ["EvalRow", "EvalReport", "evaluate_model", "edits_for"]


@dataclass
class EvalRow:
    """Result of one edit over the images it applies to."""

    attribute: str
    target: str  # "set" for a group member, "flip" for a binary attribute
    count: int
    success: float
    outside_change: float | None
    rec_l1: float
    seconds_per_image: float
    source_accuracy: float | None = None  # judge vs dataset labels on the unedited images
    success_on: float | None = None  # flips: success on the faces where the edit adds the attribute
    success_off: float | None = None  # flips: success on the faces where it removes it
    n_on: int | None = None  # flips: how many faces the edit adds the attribute to
    n_off: int | None = None  # flips: how many faces it removes it from
    progress_on: float | None = None  # flips, masks judge: score progress of the edits that add it
    progress_off: float | None = None  # flips, masks judge: score progress of the edits that remove it


@dataclass
class EvalReport:
    model: str
    data: str
    judge: str
    num_images: int
    edit_mode: str = "direct"
    rows: list[EvalRow] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["summary"] = self.summary()
        return d

    def summary(self) -> dict[str, Any]:
        """Mean success over group edits and per binary attribute, mean outside change."""
        out: dict[str, Any] = {r.attribute: round(r.success, 4) for r in self.rows}
        changes = [r.outside_change for r in self.rows if r.outside_change is not None]
        out["mean_outside_change"] = round(float(np.mean(changes)), 5) if changes else None
        out["mean_rec_l1"] = round(float(np.mean([r.rec_l1 for r in self.rows])), 5) if self.rows else None
        return out

    def write_json(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)


def edits_for(attributes: list[str], groups: list[list[str]]) -> list[tuple[str, str]]:
    """``(attribute, kind)`` edits: ``set`` for each group member, ``flip`` for the others.

    >>> edits_for(["Black_Hair", "Blond_Hair", "Smiling"], [["Black_Hair", "Blond_Hair"]])
    [('Black_Hair', 'set'), ('Blond_Hair', 'set'), ('Smiling', 'flip')]
    """
    grouped = {a for g in groups for a in g}
    return [(a, "set" if a in grouped else "flip") for a in attributes]


def _score_progress(source: np.ndarray, edited: np.ndarray, target: np.ndarray) -> dict[int, float | None]:
    """Per target value t (0/1): ``(median(edited) - median(source)) / (median(true t) - median(source))``
    over the faces edited towards t; ``source`` holds every face's unedited score (``(N,)``, its
    faces with value t are the "true t"), ``edited`` / ``target`` the edits in ``source`` order
    (a flip edits every face). None where a side is empty or the medians coincide.

    >>> src = np.array([-4.0, -2.0, 2.0, 4.0]); edited = np.array([0.0, 0.0, -3.0, -3.0])
    >>> _score_progress(src, edited, np.array([1, 1, 0, 0]))
    {0: 1.0, 1: 0.5}
    """
    out: dict[int, float | None] = {}
    for t in (0, 1):
        towards, truth = target == t, target != t  # faces edited to t; faces that have t already
        if not towards.any() or not truth.any():
            out[t] = None
            continue
        start, goal = float(np.median(source[towards])), float(np.median(source[truth]))
        out[t] = None if abs(goal - start) < 1e-6 else round((float(np.median(edited[towards])) - start) / (goal - start), 4)
    return out


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _load_model(path: str | Path) -> Any:
    from starcli.models import load

    return load(path, with_discriminator=True)


def _load_masks(root: Path, files: list[Path], size: int) -> dict[str, np.ndarray] | None:
    folder = root / "masks"
    if not folder.is_dir():
        return None
    stacks: dict[str, list[np.ndarray]] = {}
    for f in files:
        p = folder / f"{f.stem}.npz"
        if not p.is_file():
            return None
        with np.load(p) as z:
            for k in z.files:
                stacks.setdefault(k, []).append(z[k].astype(bool))
    out = {}
    for k, v in stacks.items():
        arr = np.stack(v)
        if arr.shape[1] != size:
            t = torch.from_numpy(arr.astype(np.float32))[:, None]
            arr = (F.interpolate(t, size=(size, size), mode="nearest")[:, 0] > 0.5).numpy()
        out[k] = arr
    return out


def evaluate_model(
    model: str | Path,
    data: str | Path,
    *,
    limit: int = 0,
    batch_size: int = 16,
    judge: str = "auto",
    device: str = "auto",
    precision: str = "fp32",
    edit_mode: str | None = None,
    edits: Sequence[str] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Translate held-out images of ``data`` with ``model`` and measure each edit (see module doc).

    ``judge``: ``auto`` (masks when the dataset has them and the synth attributes, else the
    discriminator), ``masks`` or ``discriminator``. ``precision``: ``fp32`` or ``bf16`` (autocast
    for the generator, faster on CPUs with bf16). ``edit_mode``: ``direct``, ``difference`` or ``masked``
    (default: the model card's; see :func:`starcli.translate.edit_crops`). ``edits``: measure only
    these attributes' edits (default: every attribute). Raises :class:`InputError` / :class:`ModelError`.
    """
    if precision not in ("fp32", "bf16"):
        raise InputError(None, f"unknown precision {precision!r} (fp32 or bf16)")
    t_start = time.perf_counter()
    m = _load_model(model)
    spec = m.spec
    attributes = list(spec.attributes)
    groups = [list(g) for g in spec.groups]
    unknown = [a for a in edits or () if a not in attributes]
    if unknown:
        raise InputError(None, f"--attrs: {', '.join(unknown)} not among the model's attributes ({', '.join(attributes)})")
    plan = [(a, kind) for a, kind in edits_for(attributes, groups) if not edits or a in edits]
    ds = load_dataset(data, attrs=attributes, groups=groups or None, use_pairs=False, require_classes=False)
    n = len(ds) if limit <= 0 else min(limit, len(ds))
    files = ds.files[:n]
    labels = ds.labels[:n]
    size = spec.image_size
    dev = _resolve_device(device)
    G = m.generator.to(dev).eval()
    D = m.discriminator.to(dev).eval() if m.discriminator is not None else None

    masks = None
    measure = None
    scores: Callable[[Any, dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    if judge in ("auto", "masks"):
        try:
            from starcli import synth

            if set(attributes) <= set(synth.ATTRIBUTES):
                masks = _load_masks(ds.root, files, size)
                measure = synth.measure_attributes
                scores = synth.binary_scores
        except ImportError:
            masks = None
        if judge == "masks" and masks is None:
            raise InputError(data, "no masks/<stem>.npz for every image (or attributes not synth's): cannot use --judge masks")
    use_masks = masks is not None and measure is not None
    if not use_masks:
        if D is None:
            raise ModelError(f"{model}: no discriminator in the bundle and no masks in the data: nothing can judge the edits")
        judge_name = "discriminator"
    else:
        judge_name = "masks"
    if judge not in ("auto", "masks", "discriminator"):
        raise InputError(None, f"unknown judge {judge!r} (auto, masks or discriminator)")

    store = ImageStore(files, size, in_memory=True, workers=4)
    x_all = store.get(torch.arange(n)).float().div_(255.0)
    store.close()

    def run_judge(imgs: Tensor, idx: np.ndarray) -> np.ndarray:
        """``(B, C)`` 0/1 predictions for images in [0, 1] (idx: their dataset rows)."""
        if use_masks:
            sub = {k: v[idx] for k, v in masks.items()}
            res = measure(imgs.cpu(), sub)
            return np.stack([np.asarray(res[a]) for a in attributes], 1).astype(np.float32)
        with torch.no_grad():
            _, logits = D(imgs.to(dev) * 2 - 1)
        return (torch.sigmoid(logits.float()) > 0.5).float().cpu().numpy()

    # judge sanity on the unedited images
    src_pred = np.concatenate([run_judge(x_all[i : i + batch_size], np.arange(i, min(i + batch_size, n))) for i in range(0, n, batch_size)])
    src_acc = (src_pred == labels.numpy()).mean(0)

    # the judge's continuous scores of the unedited faces (score progress of flips)
    src_scores: dict[str, np.ndarray] = {}
    if use_masks and scores is not None:
        parts = [scores(x_all[i : i + batch_size], {k: v[i : i + batch_size] for k, v in masks.items()}) for i in range(0, n, batch_size)]
        src_scores = {a: np.concatenate([p[a] for p in parts]) for a in parts[0]} if parts else {}

    mode = edit_mode or spec.edit_mode

    def generate(crops: Tensor, c: Tensor) -> Tensor:
        """The generator on ``[0, 1]`` crops, as the translate stage runs it."""
        amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with torch.no_grad(), amp:
            return ((G(crops * 2 - 1, c).float() + 1) / 2).clamp(0, 1)

    report = EvalReport(model=str(model), data=str(data), judge=judge_name, num_images=n, edit_mode=mode)
    for attr, kind in plan:
        k = attributes.index(attr)
        group = next((g for g in groups if attr in g), None)
        if kind == "set":
            rows = np.nonzero(labels[:, k].numpy() < 0.5)[0]
        else:
            rows = np.arange(n)
        if len(rows) == 0:
            continue
        ok = 0
        ok_by_target, count_by_target = np.zeros(2), np.zeros(2)  # flips: edits to 0 and to 1
        change_sum, change_px = 0.0, 0.0
        rec_sum = 0.0
        t_fwd = 0.0
        edited_scores: list[np.ndarray] = []
        for i in range(0, len(rows), batch_size):
            idx = rows[i : i + batch_size]
            x = x_all[idx].to(dev)
            c_src = labels[idx].to(dev)
            c_trg = c_src.clone()
            if group is not None:
                c_trg[:, [attributes.index(a) for a in group]] = 0.0
                c_trg[:, k] = 1.0
            else:
                c_trg[:, k] = 1.0 - c_trg[:, k]
            t0 = time.perf_counter()
            y01 = edit_crops(generate, x, c_src, [c_trg], mode)[0]
            t_fwd += time.perf_counter() - t0
            rec01 = edit_crops(generate, y01, c_trg, [c_src], mode)[0]
            rec_sum += float((rec01 - x).abs().mean(dim=(1, 2, 3)).sum())
            pred = run_judge(y01, idx)
            if kind == "flip" and attr in src_scores and scores is not None:
                edited_scores.append(scores(y01.cpu(), {kk: v[idx] for kk, v in masks.items()})[attr])
            to = c_trg[:, k].cpu().numpy().astype(int)
            hit = pred[:, k] == to
            ok += int(hit.sum())
            np.add.at(ok_by_target, to, hit)
            np.add.at(count_by_target, to, 1)
            if use_masks:
                from starcli.synth import changed_region

                diff = (y01 - x).abs().mean(1).cpu().numpy()  # (B, H, W)
                for j, row in enumerate(idx):
                    src = {a: int(labels[row, q]) for q, a in enumerate(attributes)}
                    tgt = {a: int(c_trg[j, q]) for q, a in enumerate(attributes)}
                    region = changed_region({kk: v[row] for kk, v in masks.items()}, src, tgt)
                    outside = ~region
                    change_sum += float(diff[j][outside].sum())
                    change_px += float(outside.sum())
        count, flip = len(rows), kind == "flip"
        progress: dict[int, float | None] = {0: None, 1: None}
        if flip and edited_scores:
            progress = _score_progress(src_scores[attr], np.concatenate(edited_scores), 1 - labels[rows, k].numpy().astype(int))
        report.rows.append(
            EvalRow(
                attribute=attr,
                target=kind,
                count=count,
                success=ok / count,
                outside_change=(change_sum / change_px) if use_masks and change_px else None,
                rec_l1=rec_sum / count,
                seconds_per_image=t_fwd / count,
                source_accuracy=float(src_acc[k]),
                success_on=float(ok_by_target[1] / count_by_target[1]) if flip and count_by_target[1] else None,
                success_off=float(ok_by_target[0] / count_by_target[0]) if flip and count_by_target[0] else None,
                n_on=int(count_by_target[1]) if flip else None,
                n_off=int(count_by_target[0]) if flip else None,
                progress_on=progress[1],
                progress_off=progress[0],
            )
        )
        if on_batch is not None:
            on_batch(len(report.rows), len(plan))
    report.seconds = time.perf_counter() - t_start
    return report
