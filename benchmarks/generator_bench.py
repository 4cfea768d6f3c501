"""Generator-only throughput per backend, precision and batch size, against an in-run baseline.

    python benchmarks/generator_bench.py                          # default-size G, random init
    python benchmarks/generator_bench.py --model celeba-128 --json gen.json
    python benchmarks/generator_bench.py --backends openvino:bf16,cpu:bf16 --batch-sizes 1,8 --repeats 9

Everything below is measured in one run, each engine in its own subprocess (several runtimes
with spinning thread pools in one process slow each other down):

- the **baseline**: official-style fp32 eager generator, batch 1 (``G(x, c)`` under no_grad);
- the machine's **fp32 and bf16 GEMM limits**: a large ``torch.mm`` in GFLOP/s (median of
  repeats, best size, measured before and after the backends; the larger value is the limit);
- for each ``backend:precision`` and batch size: crops/s (median over repeats; each repeat is one
  ``translate`` call of ``--call-size`` crops, the backend splitting it into ``batch_size``
  chunks), ratio vs the baseline, % of the bf16 GEMM limit (crops/s x GFLOP per crop), PSNR vs
  the fp32 baseline output on real face crops (tests/data photos) and the worker's peak RSS.

The default model is a default-size StarGAN generator (conv_dim 64, 6 residual blocks, 128x128,
random init: speed does not depend on the weights; PSNR of a random-init generator is a
plausible proxy, the tests also use trained-style fixtures).  ``--model`` takes any name or path
``starcli.models.load`` accepts (``--attrs`` for official checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
DEFAULT_BACKENDS = "cpu:fp32,cpu:bf16,onnx:fp32,openvino:fp32,openvino:bf16"
#: Face boxes (left, top, right, bottom) in the repo's test photos; FairFace crops have the face
#: in their centre square.
PHOTOS = {
    "astronaut.png": (140, 20, 340, 220),
    "grace_hopper.jpg": (120, 60, 400, 340),
    "fairface_0001.jpg": (90, 90, 358, 358),
    "fairface_0002.jpg": (90, 90, 358, 358),
    "fairface_0006.jpg": (90, 90, 358, 358),
    "fairface_0016.jpg": (90, 90, 358, 358),
    "fairface_0019.jpg": (90, 90, 358, 358),
    "fairface_0020.jpg": (90, 90, 358, 358),
}


# ----------------------------------------------------------------------------------------------
# Shared by parent and workers
# ----------------------------------------------------------------------------------------------


def load_model(spec: dict):
    """The benchmarked model: ``spec['model']`` (name/path) or the default-size random-init G."""
    import torch

    from starcli.models import StarganModel, load
    from starcli.spec import ModelSpec
    from starcli.stargan import Generator, GeneratorConfig

    if spec.get("model"):
        return load(spec["model"], attributes=spec.get("attrs"), with_discriminator=False)
    torch.manual_seed(0)
    config = GeneratorConfig(conv_dim=spec.get("conv_dim", 64), c_dim=5, repeat_num=spec.get("repeat_num", 6))
    size = spec.get("image_size", 128)
    generator = Generator(config).eval().requires_grad_(False)
    card = ModelSpec(name="bench-default", attributes=["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"], image_size=size, generator=config)
    return StarganModel(card, generator)


def face_crops(size: int, n: int):
    """``(n, 3, size, size)`` float32 [0, 1]: real face crops (flipped / shifted copies when more
    are needed), or smooth random images when the photos are not there."""
    import numpy as np
    import torch

    crops = []
    try:
        from PIL import Image

        for name, (l, t, r, b) in PHOTOS.items():
            if (DATA / name).is_file():
                image = Image.open(DATA / name).convert("RGB")
                for dx in (0, 12, -12):
                    box = (l + dx, t + dx, r + dx, b + dx)
                    crops.append(np.asarray(image.crop(box).resize((size, size), Image.Resampling.LANCZOS)).copy())
    except ImportError:
        pass
    if not crops:
        g = torch.Generator().manual_seed(0)
        low = torch.rand(n, 3, 8, 8, generator=g)
        return torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    t = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
    t = torch.cat([t, t.flip(-1)])
    return t[torch.arange(n) % len(t)].contiguous()


def target_labels(n: int, c_dim: int):
    import torch

    g = torch.Generator().manual_seed(1)
    return (torch.rand(n, c_dim, generator=g) > 0.5).float()


def gflop_per_crop(generator, size: int) -> float:
    """Multiply-adds x 2 of every conv / transposed conv for one ``size`` x ``size`` crop."""
    import torch

    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        if isinstance(module, torch.nn.ConvTranspose2d):
            total += 2 * inputs[0].numel() * module.out_channels * module.kernel_size[0] * module.kernel_size[1] // module.groups
        else:
            total += 2 * output.numel() * k

    hooks = [m.register_forward_hook(conv_hook) for m in generator.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            generator(torch.zeros(1, 3, size, size), torch.zeros(1, generator.config.c_dim))
    finally:
        for h in hooks:
            h.remove()
    return total / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ----------------------------------------------------------------------------------------------
# Workers (one engine per process)
# ----------------------------------------------------------------------------------------------


def worker_gemm(job: dict) -> dict:
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    result = {}
    for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        best = 0.0
        for n in job.get("sizes", (1024, 2048, 4096)):
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            out = torch.empty(n, n, dtype=dtype)
            torch.mm(a, b, out=out)
            times = []
            budget = time.perf_counter() + job.get("seconds", 1.5)
            while len(times) < 3 or (time.perf_counter() < budget and len(times) < 25):
                t = time.perf_counter()
                torch.mm(a, b, out=out)
                times.append(time.perf_counter() - t)
            rate = 2 * n**3 / statistics.median(times) / 1e9
            result[f"{label}_{n}"] = round(rate, 1)
            best = max(best, rate)
        result[label] = round(best, 1)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def worker_baseline(job: dict) -> dict:
    """Official-style fp32 eager generator, batch 1; writes the fp32 reference outputs."""
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    model = load_model(job)
    g = model.generator.eval()
    size = model.spec.image_size
    c_dim = g.config.c_dim
    crops, labels = face_crops(size, job["psnr_crops"]), target_labels(job["psnr_crops"], c_dim)
    with torch.no_grad():
        ref = ((g(crops * 2 - 1, labels) + 1) / 2).clamp(0, 1)
    torch.save({"crops": crops, "labels": labels, "ref": ref}, job["reference"])
    x = crops[:1] * 2 - 1
    c = labels[:1]
    times = []
    budget = time.perf_counter() + job["budget"]
    with torch.no_grad():
        g(x, c)
        while len(times) < job["min_repeats"] or (len(times) < job["repeats"] and time.perf_counter() < budget):
            t = time.perf_counter()
            for i in range(job["baseline_calls"]):
                g(crops[i % len(crops)][None] * 2 - 1, labels[i % len(labels)][None])
            times.append((time.perf_counter() - t) / job["baseline_calls"])
    return {
        "crops_per_s": round(1 / statistics.median(times), 2),
        "repeats": len(times),
        "ms_per_crop": round(1000 * statistics.median(times), 1),
        "gflop_per_crop": round(gflop_per_crop(g, size), 3),
        "image_size": size,
        "generator": str(g.config),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def worker_backend(job: dict) -> dict:
    import torch

    from starcli import backends

    model = load_model(job)
    name, precision = job["backend"], job["precision"]
    cls = backends.backend_class(name)
    size = model.spec.image_size
    reference = torch.load(job["reference"], weights_only=True)
    rows = []
    for batch in job["batch_sizes"]:
        options = {"batch_size": batch}
        if precision != "default":
            options["precision"] = precision
        if job.get("threads"):
            options["threads"] = job["threads"]
        t0 = time.perf_counter()
        backend = cls.from_config(model, options)
        setup_s = time.perf_counter() - t0
        call = max(job["call_size"], batch)
        crops = face_crops(size, call)
        labels = target_labels(call, model.generator.config.c_dim)
        t0 = time.perf_counter()
        backend.translate(crops, labels)  # warm-up (compiles shapes, allocates)
        first_s = time.perf_counter() - t0
        times = []
        budget = time.perf_counter() + job["budget"]
        while len(times) < job["min_repeats"] or (len(times) < job["repeats"] and time.perf_counter() < budget):
            t = time.perf_counter()
            backend.translate(crops, labels)
            times.append(time.perf_counter() - t)
        out = backend.translate(reference["crops"], reference["labels"])
        mse = torch.mean((out.double() - reference["ref"].double()) ** 2).item()
        psnr = float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()
        rows.append({
            "batch_size": batch,
            "call_size": call,
            "crops_per_s": round(call / statistics.median(times), 2),
            "crops_per_s_best": round(call / min(times), 2),
            "repeats": len(times),
            "setup_s": round(setup_s, 2),
            "first_call_s": round(first_s, 2),
            "psnr_db": round(psnr, 1) if psnr != float("inf") else "inf",
            "max_abs_diff": float(f"{(out - reference['ref']).abs().max().item():.3g}"),
            "precision": getattr(backend, "precision", precision),
        })
        del backend
    return {"rows": rows, "peak_rss_mb": round(peak_rss_mb(), 1)}


WORKERS = {"gemm": worker_gemm, "baseline": worker_baseline, "backend": worker_backend}


def run_worker(job: dict, nice: int) -> dict:
    """Run ``job`` in a fresh interpreter; returns its JSON result or ``{'error': ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    if nice:
        cmd = ["nice", "-n", str(nice)] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:300]}
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------------------------
# Parent
# ----------------------------------------------------------------------------------------------


def availability(names: list[str]) -> dict[str, tuple[bool, str]]:
    from starcli import plugins

    found = {}
    for info in plugins.list_plugins((plugins.BACKENDS,)):
        found[info.name] = (info.available, info.reason)
    return {n: found.get(n, (False, "not installed")) for n in names}


def auto_choice() -> str:
    from starcli import backends

    try:
        return backends.backend_class("auto").name
    except Exception as exc:  # noqa: BLE001
        return f"none ({exc})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model name or path (default: default-size random-init generator)")
    parser.add_argument("--attrs", help="attribute names for an official checkpoint, comma-separated")
    parser.add_argument("--backends", default=DEFAULT_BACKENDS, help=f"backend:precision list (default {DEFAULT_BACKENDS}); precision 'default' = the backend's own")
    parser.add_argument("--batch-sizes", default="1,4,8,16", help="backend batch sizes (default 1,4,8,16)")
    parser.add_argument("--call-size", type=int, default=8, help="crops per translate() call (default 8; at least the batch size)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement, at most (median reported; default 7)")
    parser.add_argument("--min-repeats", type=int, default=3, help="timed repeats per measurement, at least (default 3)")
    parser.add_argument("--budget", type=float, default=15.0, help="seconds per measurement after which no repeat beyond --min-repeats starts (default 15)")
    parser.add_argument("--threads", type=int, default=0, help="threads per engine (default: all cores)")
    parser.add_argument("--psnr-crops", type=int, default=16, help="real face crops for the PSNR check (default 16)")
    parser.add_argument("--nice", type=int, default=0, help="run workers under nice -n N (shared machines)")
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(WORKERS[job["kind"]](job)))
        return 0

    base = {
        "model": args.model,
        "attrs": args.attrs.split(",") if args.attrs else None,
        "threads": args.threads,
        "repeats": args.repeats,
        "min_repeats": min(args.min_repeats, args.repeats),
        "budget": args.budget,
    }
    wanted = [tuple((item.split(":") + ["default"])[:2]) for item in args.backends.split(",") if item]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    avail = availability(sorted({n for n, _ in wanted}))
    started = time.time()

    with tempfile.TemporaryDirectory(prefix="starcli-genbench-") as tmp:
        env_home = os.environ.setdefault("STARCLI_HOME", str(Path(tmp) / "home"))  # export cache
        reference = str(Path(tmp) / "reference.pt")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; STARCLI_HOME={env_home}", flush=True)
        gemm_before = run_worker({"kind": "gemm", "threads": args.threads}, args.nice)
        print(f"GEMM limits: fp32 {gemm_before.get('fp32')} GFLOP/s, bf16 {gemm_before.get('bf16')} GFLOP/s", flush=True)
        baseline = run_worker({**base, "kind": "baseline", "reference": reference, "psnr_crops": args.psnr_crops, "baseline_calls": 2}, args.nice)
        if "error" in baseline:
            print(f"baseline failed: {baseline['error']}", file=sys.stderr)
            return 1
        print(f"baseline (official-style fp32 eager, batch 1): {baseline['crops_per_s']} crops/s, "
              f"{baseline['gflop_per_crop']} GFLOP/crop, peak RSS {baseline['peak_rss_mb']} MB", flush=True)
        results = []
        for name, precision in wanted:
            ok, reason = avail[name]
            if not ok:
                print(f"{name}:{precision}: skipped ({reason})", flush=True)
                results.append({"backend": name, "precision": precision, "skipped": reason})
                continue
            job = {**base, "kind": "backend", "backend": name, "precision": precision, "batch_sizes": batch_sizes,
                   "call_size": args.call_size, "reference": reference}
            res = run_worker(job, args.nice)
            res.update(backend=name, requested_precision=precision)
            results.append(res)
            if "error" in res:
                print(f"{name}:{precision}: failed ({res['error']})", flush=True)
            else:
                best = max(res["rows"], key=lambda r: r["crops_per_s"])
                print(f"{name}:{precision}: best {best['crops_per_s']} crops/s at batch {best['batch_size']}", flush=True)
        gemm_after = run_worker({"kind": "gemm", "threads": args.threads}, args.nice)

    limit_fp32 = max(gemm_before.get("fp32", 0), gemm_after.get("fp32", 0))
    limit_bf16 = max(gemm_before.get("bf16", 0), gemm_after.get("bf16", 0))
    gflop = baseline["gflop_per_crop"]
    bf16_limit_crops = limit_bf16 / gflop if limit_bf16 else float("nan")
    print()
    print(f"GEMM limits (max of before/after): fp32 {limit_fp32} GFLOP/s = {limit_fp32 / gflop:.1f} crops/s, "
          f"bf16 {limit_bf16} GFLOP/s = {bf16_limit_crops:.1f} crops/s ({gflop} GFLOP per {baseline['image_size']} px crop)")
    header = f"{'backend':<10} {'prec':<5} {'batch':>5} {'crops/s':>8} {'x base':>7} {'% bf16':>7} {'PSNR dB':>8} {'RSS MB':>7} {'setup s':>7}"
    print(header)
    print("-" * len(header))
    print(f"{'baseline':<10} {'fp32':<5} {1:>5} {baseline['crops_per_s']:>8.2f} {1.0:>7.2f} "
          f"{100 * baseline['crops_per_s'] * gflop / limit_bf16:>6.1f}% {'exact':>8} {baseline['peak_rss_mb']:>7.0f} {'':>7}")
    best_overall = None
    for res in results:
        if "rows" not in res:
            continue
        for row in res["rows"]:
            row["x_baseline"] = round(row["crops_per_s"] / baseline["crops_per_s"], 2)
            row["pct_bf16_limit"] = round(100 * row["crops_per_s"] * gflop / limit_bf16, 1) if limit_bf16 else None
            print(f"{res['backend']:<10} {row['precision']:<5} {row['batch_size']:>5} {row['crops_per_s']:>8.2f} {row['x_baseline']:>7.2f} "
                  f"{row['pct_bf16_limit']:>6.1f}% {str(row['psnr_db']):>8} {res['peak_rss_mb']:>7.0f} {row['setup_s']:>7.2f}")
            if best_overall is None or row["crops_per_s"] > best_overall[1]["crops_per_s"]:
                best_overall = (res["backend"], row)
    auto = auto_choice()
    print()
    if best_overall:
        name, row = best_overall
        print(f"fastest: {name} {row['precision']} batch {row['batch_size']}: {row['crops_per_s']} crops/s = "
              f"{row['x_baseline']}x baseline, {row['pct_bf16_limit']}% of the bf16 GEMM limit (target >= 80%), PSNR {row['psnr_db']} dB")
    print(f"--backend auto picks: {auto}; run took {time.time() - started:.0f} s")

    if args.json:
        report = {
            "machine": {"processor": platform.processor(), "cores": os.cpu_count(), "python": platform.python_version()},
            "model": args.model or "default-size random init (conv_dim 64, repeat_num 6, 128 px)",
            "gemm_gflops": {"before": gemm_before, "after": gemm_after, "fp32_limit": limit_fp32, "bf16_limit": limit_bf16},
            "baseline": baseline,
            "results": results,
            "auto": auto,
            "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "json")},
        }
        tmp_json = args.json.with_name(f"{args.json.name}.tmp-{os.getpid()}")
        tmp_json.write_text(json.dumps(report, indent=2, default=str))
        os.replace(tmp_json, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
