"""Detector benchmark and template calibration on real photos.

    python benchmarks/detect_bench.py [--fairface N] [--pad 0.25] [--detectors dlib0,dlib1,mtcnn]
    python benchmarks/detect_bench.py --calibrate-nose [--fairface 150]

Photos: tests/data/astronaut.png, tests/data/grace_hopper.jpg and the first N FairFace images of
../shared/data/fairface (tight 448x448 face crops: each is padded by ``--pad`` of its side with
replicated edges, so detectors see some context). Reports, per detector: images with at least
one face, images with exactly one face, ms/image (median and mean), and for FairFace the
agreement of the eye positions between detectors.

``--alignment`` aligns every detected face to the CelebA template (crop 256), re-detects on the
aligned crop with the same detector and reports how far the re-detected template points are from
the template (pixels at 256), and the align -> paste round-trip error with an identity
translator (residual paste and direct paste).

``--stages`` times ``warp_to_crops`` and ``paste_back`` (crop 128 and 256) per face on astronaut
(512x512) and on a 12000x9000 canvas holding astronaut upscaled 8x, with 1 and 2 torch threads.

``--calibrate-nose`` reproduces the ``nose`` point of ``starcli.align.CELEBA_TEMPLATE``: dlib's
68-point model gives eye centres (mean of points 36-41 / 42-47) and the mouth centre (mean of
48 and 54); the least-squares similarity of those three points to CelebA's template maps the
5-point model's nose base into normalised crop units; the per-axis median is printed.

Run with ``nice -n 10`` on a shared machine; figures are medians, compare ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "plugins"))

from starcli.align import CELEBA_TEMPLATE, estimate_transforms, template_tensor
from starcli.detect import DlibDetector, dlib_model_path

FAIRFACE = ROOT.parent / "shared" / "data" / "fairface"


def load_rgb(path: Path) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))


def pad(img: np.ndarray, frac: float) -> np.ndarray:
    if frac <= 0:
        return img
    p = round(frac * max(img.shape[:2]))
    return np.pad(img, ((p, p), (p, p), (0, 0)), mode="edge")


def photos(n_fairface: int, frac: float) -> list[tuple[str, np.ndarray]]:
    out = [(name, load_rgb(ROOT / "tests" / "data" / name)) for name in ("astronaut.png", "grace_hopper.jpg")]
    labels = json.loads((FAIRFACE / "labels.json").read_text())[:n_fairface]
    out += [(L["filename"], pad(load_rgb(FAIRFACE / "images" / L["filename"]), frac)) for L in labels]
    return out


def make_detectors(names: list[str]):
    dets = {}
    for name in names:
        if name.startswith("dlib"):
            dets[name] = DlibDetector(upsample=int(name[4:] or 0))
        elif name == "mtcnn":
            from starcli_mtcnn.detector import MtcnnDetector

            ok, why = MtcnnDetector.available()
            if not ok:
                print(f"mtcnn: not available ({why})")
                continue
            dets[name] = MtcnnDetector()
        else:
            raise SystemExit(f"unknown detector {name}")
    return dets


def bench(args) -> None:
    torch.set_num_threads(args.threads)
    data = photos(args.fairface, args.pad)
    dets = make_detectors(args.detectors.split(","))
    results = {}
    for name, det in dets.items():
        det.detect([data[0][1]])  # warm-up
        times, faces = [], []
        for _, img in data:
            t = time.perf_counter()
            fs = det.detect([img])[0]
            times.append(time.perf_counter() - t)
            faces.append(fs)
        results[name] = (times, faces)
    n_ff = len(data) - 2
    print(f"{len(data)} photos: astronaut, grace_hopper, {n_ff} FairFace (padded {args.pad:.0%} per side); "
          f"torch threads {args.threads}")
    print(f"{'detector':10s} {'astronaut':>9s} {'grace':>6s} {'ff >=1':>8s} {'ff ==1':>8s} "
          f"{'ms med':>7s} {'ms mean':>8s} {'ff ms':>7s}")
    for name, (times, faces) in results.items():
        ff = faces[2:]
        print(f"{name:10s} {len(faces[0]):9d} {len(faces[1]):6d} "
              f"{sum(len(f) > 0 for f in ff):4d}/{n_ff:<3d} {sum(len(f) == 1 for f in ff):4d}/{n_ff:<3d} "
              f"{1000 * statistics.median(times):7.1f} {1000 * statistics.mean(times):8.1f} "
              f"{1000 * statistics.median(times[2:]):7.1f}")
    # eye agreement between detectors on images both found (relative to the eye distance)
    names = list(results)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            errs = []
            for fa, fb in zip(results[names[i]][1], results[names[j]][1]):
                if fa and fb:
                    a, b = fa[0].landmarks, fb[0].landmarks
                    iod = np.hypot(*np.subtract(a["right_eye"], a["left_eye"]))
                    e = max(np.hypot(*np.subtract(a[k], b[k])) for k in ("left_eye", "right_eye"))
                    errs.append(e / iod)
            if errs:
                print(f"eyes {names[i]} vs {names[j]}: median {statistics.median(errs):.3f}, "
                      f"90th pct {np.percentile(errs, 90):.3f} of the eye distance ({len(errs)} photos)")


def alignment(args) -> None:
    from starcli.align import crop_faces, face_points
    from starcli.paste import paste_back

    torch.set_num_threads(args.threads)
    size = 256
    data = photos(args.fairface, args.pad)
    for name, det in make_detectors(args.detectors.split(",")).items():
        errs, faces_n, redetected, round_trip, direct = [], 0, 0, [], []
        for _, img in data:
            faces = det.detect([img])[0][:1]
            if not faces:
                continue
            frame = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255
            crops, M, _ = crop_faces([frame], [faces], size)
            _, tpl = face_points(faces, CELEBA_TEMPLATE)
            names = [n for n in CELEBA_TEMPLATE if n in faces[0].landmarks]
            target = tpl * size - 0.5
            faces_n += 1
            arr = (crops[0].permute(1, 2, 0) * 255).round().byte().numpy()
            again = det.detect([arr])[0]
            if again:
                redetected += 1
                f = again[0]
                errs.append(max(float(np.hypot(*(np.array(f.landmarks[n]) - target[k].numpy())))
                                for k, n in enumerate(names)))
            out = paste_back(frame, crops, M, crops)
            round_trip.append(float((out - frame).abs().max()))
            out = paste_back(frame, crops, M, crops, detail=False, colour_match=False)
            mask = paste_back(torch.zeros_like(frame), torch.ones_like(crops), M, detail=False,
                              colour_match=False)[0] > 0
            direct.append(float((out - frame).abs().amax(0)[mask].mean()))
        print(f"{name}: {faces_n} faces aligned to crop {size} with {', '.join(names)}; re-detected in "
              f"{redetected}; max template point error px: median {statistics.median(errs):.2f}, "
              f"90th pct {np.percentile(errs, 90):.2f}")
        print(f"   identity round trip (residual paste): max |out - in| = {max(round_trip) * 255:.3f}/255; "
              f"direct paste: mean in-mask error {statistics.mean(direct) * 255:.2f}/255")


def stages(args) -> None:
    from starcli.align import crop_faces
    from starcli.paste import paste_back

    a = load_rgb(ROOT / "tests" / "data" / "astronaut.png")
    faces = DlibDetector().detect([a])[0]
    small = torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255
    big = torch.zeros(3, 9000, 12000)
    big[:, 1000:5096, 3000:7096] = torch.nn.functional.interpolate(small[None], scale_factor=8, mode="nearest")[0]
    big_faces = [f.scaled(1 / 8, 1 / 8) for f in faces]  # p_big = 8 p + 3.5
    for f in big_faces:
        f.landmarks = {k: (x + 3000, y + 1000) for k, (x, y) in f.landmarks.items()}
    old = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, frame, fs in (("512x512", small, faces), ("12000x9000", big, big_faces)):
            for size in (128, 256):
                tw, tp = [], []
                for _ in range(5):
                    t = time.perf_counter()
                    crops, M, _ = crop_faces([frame], [fs], size)
                    tw.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    paste_back(frame, crops * 0.9, M, crops, inplace=True)
                    tp.append(time.perf_counter() - t)
                print(f"threads {threads} {name:10s} crop {size}: align+warp {1000 * statistics.median(tw):7.1f} ms, "
                      f"paste {1000 * statistics.median(tp):7.1f} ms (face ~{fs[0].size:.0f} px)")
    torch.set_num_threads(old)


def calibrate_nose(args) -> None:
    import dlib

    det = DlibDetector(upsample=0)
    p68 = dlib.shape_predictor(dlib_model_path("shape_predictor_68_face_landmarks.dat"))
    names = ["left_eye", "right_eye", "mouth"]
    tpl = template_tensor(CELEBA_TEMPLATE, names)
    noses, residuals = [], []
    data = photos(args.fairface, args.pad)[2:]
    for _, img in data:
        faces = det.detect([img])[0]
        if not faces:
            continue
        f = faces[0]
        x0, y0, x1, y1 = (round(v) for v in f.box)
        sh = p68(img, dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        p = np.array([(q.x, q.y) for q in sh.parts()], dtype=np.float64)
        src = np.stack([p[36:42].mean(0), p[42:48].mean(0), (p[48] + p[54]) / 2])
        S = 1000
        M = estimate_transforms(torch.tensor(src[None], dtype=torch.float32), tpl, S)[0].double().numpy()
        fit = src @ M[:, :2].T + M[:, 2]
        residuals.append(np.abs((fit + 0.5) / S - tpl.numpy()).max())
        nose = M[:, :2] @ f.points[4] + M[:, 2]
        noses.append((nose + 0.5) / S)
    noses = np.array(noses)
    med = np.median(noses, axis=0)
    print(f"faces used: {len(noses)} of {len(data)} FairFace photos")
    print(f"nose (dlib 5-point base) in CelebA crop units: median u={med[0]:.5f} v={med[1]:.5f}; "
          f"IQR u {np.percentile(noses[:, 0], 25):.4f}..{np.percentile(noses[:, 0], 75):.4f}, "
          f"v {np.percentile(noses[:, 1], 25):.4f}..{np.percentile(noses[:, 1], 75):.4f}")
    print(f"3-point fit residual (crop units): median {np.median(residuals):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fairface", type=int, default=120, help="number of FairFace photos")
    ap.add_argument("--pad", type=float, default=0.25, help="border added to FairFace crops (fraction of side)")
    ap.add_argument("--detectors", default="dlib0,dlib1,mtcnn")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibrate-nose", action="store_true")
    ap.add_argument("--alignment", action="store_true")
    ap.add_argument("--stages", action="store_true")
    args = ap.parse_args()
    if args.calibrate_nose:
        calibrate_nose(args)
    elif args.alignment:
        alignment(args)
    elif args.stages:
        stages(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
