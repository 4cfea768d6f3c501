"""End-to-end photo throughput beside generator-only throughput, measured in the same run.

    python benchmarks/photos_bench.py [--photos 24] [--backend auto] [--precision bf16] [--model NAME|PATH]

1. makes a folder of 512x512 single-face photos (FairFace crops from tests/data or
   ../shared/data/fairface, padded to 512 by edge replication; only photos where dlib finds
   exactly one face are kept);
2. builds the model: ``--model`` or a random default-size StarGAN (conv_dim 64, 6 residual
   blocks, 128 px, with a critic: realistic cost, meaningless pixels);
3. measures, in this process: the official-style baseline (fp32 eager, batch 1, no
   channels_last), the bf16 matmul limit of the machine converted to crops/s (19.9 GFLOP per
   crop for the default generator), generator-only throughput of the chosen backend at
   ``--batch-size``, and ``starcli.pipeline.process_paths`` end to end on the folder
   (decode, detect, align, translate, paste, encode, write) with the same backend;
4. prints photos/s, faces/s, stage times, generator idle time, ratios and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Same as `starcli translate`: idle OpenMP threads sleep instead of spinning (set before torch
# loads; run with OMP_WAIT_POLICY=ACTIVE to compare). Applies to the baseline too.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from starcli import media  # noqa: E402
from starcli.config import load_config  # noqa: E402

GFLOP_PER_CROP_128 = 19.9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def source_photos() -> list[Path]:
    found = sorted((ROOT / "tests" / "data").glob("fairface_*.jpg"))
    shared = ROOT.parent / "shared" / "data" / "fairface" / "images"
    if shared.is_dir():
        found += sorted(shared.glob("*.jpg"))
    return found


def make_folder(folder: Path, count: int) -> int:
    """512x512 single-face photos (padded FairFace crops); returns how many were written."""
    from PIL import Image

    from starcli.detect import DlibDetector

    det = DlibDetector()
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    seen: set[str] = set()
    for src in source_photos():
        if written >= count:
            break
        if src.name in seen:
            continue
        seen.add(src.name)
        img = np.asarray(Image.open(src).convert("RGB"))
        h, w = img.shape[:2]
        if max(h, w) > 512:
            continue
        top, left = (512 - h) // 2, (512 - w) // 2
        padded = np.pad(img, ((top, 512 - h - top), (left, 512 - w - left), (0, 0)), mode="edge")
        target = folder / f"{src.stem}.jpg"
        Image.fromarray(padded).save(target, quality=92)
        # judged on the file as the pipeline will decode it (JPEG moves borderline detections)
        if len(det.detect([np.asarray(Image.open(target).convert("RGB"))])[0]) != 1:
            target.unlink()
            continue
        written += 1
    return written


def build_model(name: str | None):
    from starcli import models
    from starcli.models import StarganModel
    from starcli.spec import ModelSpec, default_groups
    from starcli.stargan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

    if name:
        return models.load(name)
    torch.manual_seed(0)
    attrs = models.CELEBA_ATTRIBUTES
    g, d = GeneratorConfig(), DiscriminatorConfig()
    spec = ModelSpec("random-128", attrs, 128, g, d, groups=default_groups(attrs), default_source={"Brown_Hair": 1, "Young": 1})
    return StarganModel(spec, Generator(g).eval(), Discriminator(d).eval())


def timed(fn, min_seconds: float, min_iters: int = 2) -> tuple[float, int]:
    """Run ``fn`` until ``min_seconds`` and ``min_iters``; returns (seconds per call, calls)."""
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < min_seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n, n


def baseline_crops_per_s(model, seconds: float) -> float:
    """Official-style: fp32, eager, batch 1, contiguous NCHW, no autocast."""
    import copy

    g = copy.deepcopy(model.generator).float().eval()
    s = model.spec.image_size
    x = torch.rand(1, 3, s, s) * 2 - 1
    c = torch.zeros(1, len(model.spec.attributes))
    c[0, 0] = 1

    def step():
        with torch.no_grad():
            g(x, c)

    per, _ = timed(step, seconds)
    return 1.0 / per


def bf16_limit_crops_per_s(model, seconds: float) -> tuple[float, float]:
    """The machine's bf16 matmul rate (GFLOP/s) and the crops/s it allows for this generator."""
    n = 1024
    a = torch.randn(n, n, dtype=torch.bfloat16)
    b = torch.randn(n, n, dtype=torch.bfloat16)
    per, _ = timed(lambda: torch.mm(a, b), seconds, 5)
    gflops = 2 * n**3 / per / 1e9
    s = model.spec.image_size
    g = model.spec.generator
    gflop_per_crop = GFLOP_PER_CROP_128 * (s / 128) ** 2 * (g.conv_dim / 64) ** 2 * ((2 * g.repeat_num + 6) / 18)
    return gflops, gflops / gflop_per_crop


def generator_only_crops_per_s(backend, model, batch: int, seconds: float) -> float:
    s = model.spec.image_size
    crops = torch.rand(batch, 3, s, s)
    labels = torch.zeros(batch, len(model.spec.attributes))
    labels[:, 0] = 1
    per, _ = timed(lambda: backend.translate(crops, labels), seconds)
    return batch / per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--model", default=None, help="model name/path (default: random default-size 128 px StarGAN)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--precision", default="", help="fp32/bf16/fp16 (default: the backend's)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum seconds per micro-benchmark")
    ap.add_argument("--set", default="hair=black,male")
    ap.add_argument("--keep", type=Path, default=None, help="keep the photo folder and outputs here")
    ap.add_argument("--json", type=Path, default=None, help="also write the key numbers to this JSON file")
    args = ap.parse_args()

    from starcli.backends import make_backend
    from starcli.pipeline import Pipeline, process_paths

    work = args.keep or Path(tempfile.mkdtemp(prefix="starcli-bench-"))
    try:
        photos = work / "photos"
        shutil.rmtree(work / "out", ignore_errors=True)
        if not photos.is_dir() or len(list(photos.glob("*.jpg"))) < args.photos:
            n = make_folder(photos, args.photos)
        else:
            n = len(list(photos.glob("*.jpg")))
        model = build_model(args.model)
        print(f"photos: {n} x 512x512 single-face JPEGs in {photos}")
        print(f"model: {model.spec.name} {model.spec.image_size}px, conv_dim {model.spec.generator.conv_dim}, "
              f"{model.spec.generator.repeat_num} res blocks, critic: {model.discriminator is not None}; torch threads {torch.get_num_threads()}, "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {os.getloadavg()[0]:.1f}")

        base = baseline_crops_per_s(model, args.seconds)
        print(f"baseline (official-style fp32 eager, batch 1): {base:.2f} crops/s")
        gflops, limit = bf16_limit_crops_per_s(model, min(args.seconds, 2.0))
        print(f"bf16 matmul: {gflops:.0f} GFLOP/s -> limit {limit:.2f} crops/s for this generator")

        section = {"batch_size": args.batch_size}
        if args.precision:
            section["precision"] = args.precision
        backend = make_backend(args.backend, model, section)
        label = f"{backend.name}" + (f" ({backend.precision})" if getattr(backend, "precision", None) else "")
        gen = generator_only_crops_per_s(backend, model, args.batch_size, args.seconds)
        print(f"generator only, backend {label}, batch {args.batch_size}: {gen:.2f} crops/s")

        overrides = {"translate.set": [s for s in args.set.split(",") if s], "run.batch_size": args.batch_size,
                     "run.workers": args.workers, "run.overwrite": True, "translate.backend": args.backend}
        cfg = load_config(None, overrides, search_cwd=False)
        pipe = Pipeline(cfg, model=model, backend=backend)
        first = np.asarray(media.decode_image(sorted(photos.glob("*.jpg"))[0]).pixels)
        pipe.process_frames([first])  # warm-up outside the timing: detector, kornia, first shapes
        size = 1
        while size <= args.batch_size:  # and every batch shape the run may use (run.pad_batches)
            s_ = model.spec.image_size
            backend.translate(torch.rand(size, 3, s_, s_), torch.zeros(size, len(model.spec.attributes)))
            size *= 2
        done_at: list[tuple[float, int]] = []

        def on_event(ev) -> None:
            if ev.kind == "file" and ev.result is not None and ev.result.status == "done":
                done_at.append((time.perf_counter(), len(ev.result.faces)))

        report = process_paths([photos], work / "out", cfg, pipeline=pipe, on_event=on_event)
        s = report.summary()
        steady = None
        if len(done_at) > 2:  # from the first written photo to the last: start-up excluded
            span = done_at[-1][0] - done_at[0][0]
            steady = sum(n for _, n in done_at[1:]) / span if span > 0 else None
        base_after = baseline_crops_per_s(model, args.seconds)
        gen_after = generator_only_crops_per_s(backend, model, args.batch_size, args.seconds)
        print(f"(re-measured after the end-to-end run: baseline {base_after:.2f} crops/s, generator only {gen_after:.2f} crops/s;"
              f" the ratios below use the means — a busy machine moves both)")
        base, gen = (base + base_after) / 2, (gen + gen_after) / 2
        print(f"\nend to end ({s['done']} photos, {s['faces']} faces, {s['failed']} failed) in {s['seconds']:.2f} s: "
              f"{s['photos_per_second']:.2f} photos/s, {s['faces_per_second']:.2f} faces/s")
        for res in report.files:
            if res.status == "failed":
                print(f"  failed: {res.line}")
        if steady:
            print(f"steady state (first photo written -> last): {steady:.2f} faces/s")
        print(f"generator batches {s['batches']}, generator idle after the first batch {s['generator_idle_seconds']:.2f} s, "
              f"first batch after {s['generator_first_wait_seconds']:.2f} s")
        wall = max(report.wall_seconds, 1e-9)
        critic = report.stage_seconds.get("translate.critic", 0.0)
        runner = f"backend {backend.name}" if hasattr(backend, "classify") else "PyTorch"
        print(f"critic (source attributes, {runner}) ran {report.stage_seconds.get('critic', 0.0):.2f} s in the aligner thread, "
              f"beside the generator; translate = generator {report.stage_seconds.get('translate', 0.0) - critic:.2f} s"
              f" + critic left in the generator thread {critic:.2f} s")
        print("stage seconds (summed over threads, % of wall):")
        for k, v in report.stage_seconds.items():
            print(f"  {k:10s} {v:7.2f} s  {100 * v / wall:5.1f}%  {1000 * v / max(1, s['done']):7.1f} ms/photo")
        print("\nratios:")
        print(f"  end-to-end faces/s / baseline generator-only     = {s['faces_per_second'] / base:.2f}x")
        if steady:
            print(f"  steady-state faces/s / baseline generator-only   = {steady / base:.2f}x")
        print(f"  end-to-end faces/s / generator-only ({label})  = {s['faces_per_second'] / gen:.2f}")
        print(f"  generator-only / baseline                        = {gen / base:.2f}x")
        print(f"  generator-only / bf16 matmul limit               = {gen / limit:.2f}")
        print(f"peak RSS: {peak_rss_mb():.0f} MB")
        if args.json:
            args.json.write_text(json.dumps({
                "photos": s["done"], "faces": s["faces"], "failed": s["failed"], "backend": label,
                "baseline_crops_per_s": round(base, 2), "bf16_matmul_gflops": round(gflops, 1),
                "bf16_limit_crops_per_s": round(limit, 2), "generator_only_crops_per_s": round(gen, 2),
                "end_to_end_faces_per_s": round(s["faces_per_second"], 2),
                "steady_state_faces_per_s": round(steady, 2) if steady else None,
                "end_to_end_vs_baseline": round(s["faces_per_second"] / base, 3),
                "generator_vs_bf16_limit": round(gen / limit, 3), "peak_rss_mb": round(peak_rss_mb()),
            }, indent=1))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("STARCLI_PROGRESS", "0")
    main()
