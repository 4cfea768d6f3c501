"""One throughput run: the photo and video benchmarks, then a table of the throughput targets.

    python benchmarks/throughput.py [--photos 96] [--video-seconds 4] [--memory-seconds 20] [--backend auto]

Runs ``photos_bench.py`` (512x512 single-face photos, default-size random 128 px model: baseline
fp32 eager generator, bf16 matmul limit, generator-only and end-to-end throughput, all in one
process) and ``video_bench.py`` (1280x720 clip with one face: end-to-end fps, then peak memory on
a longer 640x360 clip), each in its own process so that peak RSS is per benchmark.  Prints the
output of each (unless ``--quiet``), then a table of:

- end-to-end faces/s >= 2.0x the baseline generator-only crops/s (same process);
- generator-only >= 80% of the bf16 matmul limit (same process);
- 1280x720 video with one face >= 10 fps end to end;
- peak memory of each run.

Run it on an idle machine (``uptime``): every number is a wall-clock rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_json(script: str, args: list[str], out: Path, quiet: bool) -> dict:
    """Run ``benchmarks/<script>`` with ``--json out`` and return what it wrote."""
    cmd = [sys.executable, str(HERE / script), *args, "--json", str(out)]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if quiet else None)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=96)
    ap.add_argument("--video-seconds", type=float, default=4.0)
    ap.add_argument("--memory-seconds", type=float, default=20.0, help="length of the memory clip (0: skip)")
    ap.add_argument("--backend", default="auto", help="backend of both runs (the CLI's default is auto)")
    ap.add_argument("--quiet", action="store_true", help="only the JSON summaries and the table")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="starcli-throughput-") as tmp:
        photos = run_json("photos_bench.py", ["--photos", str(args.photos), "--backend", args.backend], Path(tmp) / "photos.json", args.quiet)
        video_args = ["--seconds", str(args.video_seconds), "--backend", args.backend]
        if args.memory_seconds > 0:
            video_args += ["--memory", str(args.memory_seconds)]
        video = run_json("video_bench.py", video_args, Path(tmp) / "video.json", args.quiet)

    speed, memory = video["speed"], video.get("memory", {})
    rows = [
        ("end-to-end photos: faces/s vs baseline generator-only", f"{photos['end_to_end_faces_per_s']:.1f} / "
         f"{photos['baseline_crops_per_s']:.1f} = {photos['end_to_end_vs_baseline']:.2f}x", ">= 2.0x",
         photos["end_to_end_vs_baseline"] >= 2.0),
        ("generator-only vs bf16 matmul limit", f"{photos['generator_only_crops_per_s']:.1f} / "
         f"{photos['bf16_limit_crops_per_s']:.1f} = {100 * photos['generator_vs_bf16_limit']:.0f}%", ">= 80%",
         photos["generator_vs_bf16_limit"] >= 0.8),
        ("1280x720 video, one face: fps end to end", f"{speed['end_to_end_fps']:.1f} fps ({speed['backend']})", ">= 10",
         speed["end_to_end_fps"] >= 10.0),
        ("peak RSS, photos run", f"{photos['peak_rss_mb']} MB", "reported", True),
    ]
    rows.append(("peak RSS, 1280x720 video run", f"{speed['peak_rss_mb']} MB", "reported", True))
    if memory:
        rows.append((f"peak RSS, {args.memory_seconds:g} s video (python + ffmpeg)",
                     f"{memory['tree_rss_peak_mb (python + ffmpeg)']:.0f} MB (python growth "
                     f"{memory['python_rss_growth_mb']:.0f} MB)", "reported", True))
    print(f"\nthroughput targets (load average at the end {os.getloadavg()[0]:.1f}):")
    width = max(len(r[0]) for r in rows)
    for name, value, target, ok in rows:
        print(f"  {name:{width}s}  {value:32s} {target:9s} {'met' if ok else 'NOT MET'}")
    sys.exit(0 if all(r[3] for r in rows) else 1)


if __name__ == "__main__":
    main()
