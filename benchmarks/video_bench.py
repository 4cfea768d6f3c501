"""Video benchmark: end-to-end fps, stage shares, memory, and alignment jitter.

    python benchmarks/video_bench.py                    # 1280x720, one face: fps + stage shares
    python benchmarks/video_bench.py --memory 60        # peak RSS on a 60 s 640x360 clip
    python benchmarks/video_bench.py --jitter           # template-point jitter, smoothing on/off

Clips are made from scikit-image's astronaut photo (tests/data/astronaut.png, public domain).
The generator is the default StarGAN architecture (conv_dim 64, 6 residual blocks, 128 px) with
random weights and a default-size critic (source attributes on every face) unless ``--model`` names
a bundle: speed does not depend on the weights. Detection follows the video defaults
(``--detect-every 1`` searches every frame whole).
Results are printed as JSON (``--json`` writes them to a file).  Run with ``nice`` on a shared
machine and compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from starcli import video as V  # noqa: E402

FACE = (0.44, 0.3)  # astronaut's face centre, fractions of the photo


def astronaut() -> np.ndarray:
    import imageio.v3 as iio

    return np.ascontiguousarray(iio.imread(ROOT / "tests" / "data" / "astronaut.png")[..., :3])


def make_pipeline(model: str | None, backend: str, tmp: Path, threads: int, max_side: int = 0, **video):
    import torch

    from starcli.config import load_config
    from starcli.pipeline import Pipeline

    if model is None:
        from starcli.models import StarganModel, save_bundle
        from starcli.spec import ModelSpec, default_groups
        from starcli.stargan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

        attrs = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
        torch.manual_seed(0)
        g, d = GeneratorConfig(c_dim=5), DiscriminatorConfig(c_dim=5)
        spec = ModelSpec("random-128", attrs, 128, g, d, groups=default_groups(attrs),
                         default_source={"Brown_Hair": 1, "Young": 1})
        # with a critic, as a trained model has: source attributes are estimated on every face
        model = str(save_bundle(StarganModel(spec, Generator(g).eval(), Discriminator(d).eval()), tmp / "random-128",
                                overwrite=True))
    overrides = {"translate.model": model, "translate.set": ["hair=blond"], "translate.backend": backend}
    if threads:
        overrides["translate.threads"] = threads
    if max_side:
        overrides["detect.max_side"] = max_side
    for k, v in video.items():
        overrides[f"video.{k}"] = v
    cfg = load_config(None, overrides=overrides, search_cwd=False)
    return Pipeline(cfg), cfg


def bench_speed(args, tmp: Path) -> dict:
    clip = V.render_pan_clip(astronaut(), tmp / "hd.mp4", (1280, 720), args.seconds, 25, audio=True,
                             zoom=(1.0, 1.1), pan=0.05, center=FACE,
                             codec_args=["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"])
    info = V.probe(clip)
    # decode alone
    t0 = time.perf_counter()
    frames = [f for b in V.read_frames(info) for f in b]
    decode_fps = len(frames) / (time.perf_counter() - t0)
    # encode alone (default x264 settings of the writer)
    t0 = time.perf_counter()
    with V.SegmentWriter(tmp, ".mp4", info.width, info.height, info.rate, V.VideoOptions(), 10**9) as w:
        for f in frames:
            w.write(f)
    encode_fps = len(frames) / (time.perf_counter() - t0)
    del frames
    pipeline, cfg = make_pipeline(args.model, args.backend, tmp, args.threads, args.detect_max_side,
                                  batch_frames=args.batch_frames, detect_every=args.detect_every,
                                  region_detect=not args.no_region_detect)
    # warm-up (model, detector, kernels)
    V.process_video(clip, tmp / "warm.mp4", pipeline, cfg, options=V.VideoOptions(end=0.4, batch_frames=args.batch_frames))
    report = V.process_video(clip, tmp / "out.mp4", pipeline, cfg)
    busy = report.stage_seconds
    stages = {"decode": busy["decode"], "detect": busy["detect"] + busy["track"],
              "generator": busy["generator"], "paste": busy["paste"] + busy["align"], "encode": busy["encode"]}
    total = sum(stages.values())
    return {
        "clip": f"{info.width}x{info.height} {float(info.rate):g} fps, {info.frames} frames, one face",
        "backend": f"{getattr(pipeline.backend, 'name', '?')} ({getattr(pipeline.backend, 'precision', '')})",
        "model": pipeline.spec.name, "crop": pipeline.crop_size, "detect_max_side": cfg.detect.max_side,
        "detect_every": cfg.video.detect_every, "region_detect": cfg.video.region_detect,
        "full_detections": report.full_detections, "region_detections": report.region_detections,
        "torch_threads": __import__("torch").get_num_threads(),
        "end_to_end_fps": round(report.fps, 2), "wall_seconds": round(report.seconds, 2),
        "faces": report.faces, "decode_only_fps": round(decode_fps, 1), "encode_only_fps": round(encode_fps, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "stage_busy_seconds": {k: round(v, 2) for k, v in stages.items()},
        "stage_share": {k: round(v / total, 3) for k, v in stages.items()},
        "note": "align is counted with paste, track with detect; decode/encode run in their own threads "
                "and ffmpeg processes, so their busy time overlaps the main thread's",
    }


def _rss_tree() -> tuple[int, int]:
    import psutil

    me = psutil.Process()
    own = me.memory_info().rss
    total = own
    for c in me.children(recursive=True):
        try:
            total += c.memory_info().rss
        except psutil.Error:
            pass
    return own, total


def bench_memory(args, tmp: Path) -> dict:
    seconds = args.memory
    clip = V.render_pan_clip(astronaut(), tmp / "long.mp4", (640, 360), seconds, 25, audio=True,
                             zoom=(1.8, 2.2), pan=0.1, center=FACE,
                             codec_args=["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"])
    pipeline, cfg = make_pipeline(args.model, args.backend, tmp, args.threads, batch_frames=args.batch_frames)
    V.process_video(clip, tmp / "warm.mp4", pipeline, cfg, options=V.VideoOptions(end=1.0))
    base_own, base_tree = _rss_tree()
    peak = [base_own, base_tree]
    done = threading.Event()
    samples = []

    def sample():
        while not done.is_set():
            own, tree = _rss_tree()
            peak[0], peak[1] = max(peak[0], own), max(peak[1], tree)
            samples.append(own)
            done.wait(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    report = V.process_video(clip, tmp / "long_out.mp4", pipeline, cfg)
    done.set()
    th.join()
    info = V.probe(clip)
    o = V.VideoOptions.from_config(cfg.video)
    frame_mb = info.frame_bytes / 2**20
    bound_frames = (2 * o.queue_depth + 5) * o.batch_frames
    half = len(samples) // 2
    return {
        "clip": f"{info.width}x{info.height}, {info.frames} frames ({seconds:g} s); decoded size "
                f"{info.frames * frame_mb:.0f} MB",
        "frames": report.frames, "faces": report.faces, "fps": round(report.fps, 2),
        "bound": f"(2*queue_depth+5)*batch_frames = {bound_frames} frames = {bound_frames * frame_mb:.1f} MB",
        "python_rss_before_mb": round(base_own / 2**20, 1), "python_rss_peak_mb": round(peak[0] / 2**20, 1),
        "python_rss_growth_mb": round((peak[0] - base_own) / 2**20, 1),
        "python_rss_first_half_peak_mb": round(max(samples[:half] or [0]) / 2**20, 1),
        "python_rss_second_half_peak_mb": round(max(samples[half:] or [0]) / 2**20, 1),
        "tree_rss_peak_mb (python + ffmpeg)": round(peak[1] / 2**20, 1),
    }


def _view_map(n: int, i: int, size, zoom, pan, center, iw=512, ih=512):
    """Image pixel -> frame pixel for frame i of render_pan_clip (same parameters)."""
    w, h = size
    t = 0.0 if n == 1 else i / (n - 1)
    z = zoom[0] + (zoom[1] - zoom[0]) * t
    vw = min(iw, ih * w / h) / z
    vh = vw / (w / h)
    cx = center[0] * iw + (t - 0.5) * pan * iw
    cy = center[1] * ih

    def f(p):
        p = np.asarray(p, float)
        return np.stack([(p[..., 0] + 0.5 - cx + vw / 2) * w / vw - 0.5, (p[..., 1] + 0.5 - cy + vh / 2) * h / vh - 0.5], -1)

    return f


def bench_jitter(args, tmp: Path) -> dict:
    from starcli.align import CELEBA_TEMPLATE, estimate_transforms, face_points, template_tensor
    from starcli.detect import DlibDetector, add_new_faces, detect_in_regions
    from starcli.pipeline import REGION_FACE_SIDE
    from starcli.tracking import FaceTracker, TrackerConfig, alignment_jitter

    det = DlibDetector()
    img = astronaut()
    ref = det.detect([img])[0][0]
    names = ["left_eye", "right_eye", "nose"]
    tpl = template_tensor(CELEBA_TEMPLATE, names).numpy()
    out = {}
    size = (640, 360)
    for name, kw in {"still": dict(zoom=(1.6, 1.6), pan=0.0, still=True),
                     "pan": dict(zoom=(1.5, 1.9), pan=0.15)}.items():
        n = int(args.jitter_seconds * 25)
        clip = V.render_pan_clip(img, tmp / f"{name}.mp4", size, args.jitter_seconds, 25, center=FACE, noise=args.noise,
                                 seed=1, **kw)
        frames = [f for b in V.read_frames(V.probe(clip)) for f in b]
        dets = det.detect(frames)
        truth = np.array([_view_map(n, i, size, kw["zoom"], kw["pan"], FACE)(np.array([ref.landmarks[k] for k in names]))
                          for i in range(n)])
        row = {}
        variants = {"raw": TrackerConfig(smooth=False)}
        for mc, beta in args.params:
            variants[f"one-euro min_cutoff={mc:g} beta={beta:g}"] = TrackerConfig(min_cutoff=mc, beta=beta)
        variants["one-euro defaults, regions between full detections every 10 frames (video default)"] = TrackerConfig()
        for label, tcfg in variants.items():
            tr = FaceTracker(tcfg, 25.0)
            faces = []
            for i, (f, d) in enumerate(zip(frames, dets)):
                if label.endswith("(video default)") and tr.tracks:  # as starcli.video does
                    r = detect_in_regions(det, f, tr.predicted_boxes(i), face_side=REGION_FACE_SIDE)
                    d = add_new_faces(r, d) if i % 10 == 0 else r
                got = tr.update(i, d, f)
                faces.append(got[0].face if got else None)
            ok = [i for i, f in enumerate(faces) if f is not None]
            pts, t = face_points([faces[i] for i in ok], {k: CELEBA_TEMPLATE[k] for k in names})
            M = estimate_transforms(pts, t, 128).numpy()
            err = np.linalg.norm(pts.numpy() - truth[ok], axis=-1).mean()
            row[label] = {"jitter_px": round(alignment_jitter(list(M), tpl, 128), 3),
                          "landmark_error_px": round(float(err), 2), "frames_with_face": len(ok)}
        out[name] = row
    out["setup"] = (f"{size[0]}x{size[1]} 25 fps, {args.jitter_seconds:g} s, sensor noise sigma {args.noise:g}, "
                    f"dlib HOG + 5-point; face ~{ref.size * 1.6 * 640 / 512:.0f} px wide (still); jitter = mean "
                    "frame-to-frame motion of the template points mapped back into the frame; landmark error vs "
                    "the photo's landmarks mapped through the known pan/zoom (includes dlib's constant bias)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="length of the 1280x720 clip")
    ap.add_argument("--model", default=None, help="model bundle (default: random weights, default StarGAN size)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--batch-frames", type=int, default=8)
    ap.add_argument("--detect-max-side", type=int, default=0, help="detect.max_side (0: the default 2048)")
    ap.add_argument("--detect-every", type=int, default=10, help="video.detect_every (1: whole-frame detection on every frame)")
    ap.add_argument("--no-region-detect", action="store_true", help="video.region_detect = false")
    ap.add_argument("--memory", type=float, default=0.0, help="also measure peak RSS on a clip this long (s)")
    ap.add_argument("--jitter", action="store_true", help="measure alignment jitter with and without smoothing")
    ap.add_argument("--jitter-seconds", type=float, default=4.0)
    ap.add_argument("--noise", type=float, default=2.0)
    ap.add_argument("--params", type=lambda s: [tuple(float(x) for x in p.split(":")) for p in s.split(",")],
                    default=[(0.5, 2.0), (1.0, 2.0), (0.25, 2.0)], help="min_cutoff:beta,... one-euro settings")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="starcli-video-bench-") as d:
        tmp = Path(d)
        if not args.skip_speed:
            results["speed"] = bench_speed(args, tmp)
            print(json.dumps({"speed": results["speed"]}, indent=1), flush=True)
        if args.jitter:
            results["jitter"] = bench_jitter(args, tmp)
            print(json.dumps({"jitter": results["jitter"]}, indent=1), flush=True)
        if args.memory > 0:
            results["memory"] = bench_memory(args, tmp)
            print(json.dumps({"memory": results["memory"]}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
