"""Regenerate the example photos and clip in this folder (deterministic; see README.md).

    python examples/make_examples.py            # writes into examples/
    python examples/make_examples.py --out DIR  # elsewhere

Every face is drawn by ``starcli.synth`` (no real person is shown). The photos and the clip's
frames depend only on the seeds below; the encoded bytes also depend on the Pillow and ffmpeg
versions (the clip is encoded single-threaded with bit-exact flags).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from starcli import synth

# name, format, number of faces, face width range (px)
PHOTOS = [
    ("group_of_three.jpg", "JPEG", 3, (100, 150)),
    ("portrait.jpg", "JPEG", 1, (230, 290)),
    ("two_people.png", "PNG", 2, (120, 220)),
    ("outdoors.jpg", "JPEG", 2, (100, 260)),
    ("small_and_large.png", "PNG", 3, (100, 240)),
]
SEED = 2024
CLIP = {"width": 640, "height": 360, "fps": 25, "seconds": 2.4, "tone_hz": 440}


def make_photos(out: Path) -> list[dict]:
    records = []
    for i, (name, fmt, n, face_px) in enumerate(PHOTOS):
        rng = np.random.default_rng([SEED, i])
        img, faces = synth.compose_scene(rng, n, 640, 480, face_px=face_px, noise=1.0)
        path = out / name
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        if fmt == "JPEG":
            Image.fromarray(img).save(tmp, format="JPEG", quality=88, optimize=True)
        else:
            Image.fromarray(img).save(tmp, format="PNG", optimize=True)
        os.replace(tmp, path)
        for f in faces:
            f.pop("params", None)
        records.append({"file": name, "width": 640, "height": 480, "faces": faces})
    return records


def _clip_frames() -> tuple[list[np.ndarray], list[list[dict]]]:
    """Two faces on a room backdrop, drifting and nodding slightly (a few pixels, a few degrees)."""
    W, H, fps = CLIP["width"], CLIP["height"], CLIP["fps"]
    n_frames = int(round(CLIP["seconds"] * fps))
    rng = np.random.default_rng([SEED, 100])
    backdrop = synth.scene_background(rng, W, H).astype(np.float32)
    people = []
    for x_centre, face_px in ((0.3, 120.0), (0.72, 150.0)):
        params = synth.sample_params(rng)
        params = replace(params, roll=0.0, shift=(0.0, 0.0))
        attrs = synth.sample_attributes(rng)
        crop = int(round(face_px / (2 * (params.face_w + 0.02) * params.scale)))
        people.append((params, attrs, crop, x_centre, float(rng.uniform(0, 2 * math.pi))))
    frames, records = [], []
    noise_rng = np.random.default_rng([SEED, 101])
    for t in range(n_frames):
        img = backdrop.copy()
        recs = []
        for params, attrs, crop, x_centre, phase in people:
            w = 2 * math.pi * t / n_frames
            posed = replace(params, roll=3.0 * math.sin(w + phase), shift=(0.012 * math.sin(w + phase), 0.006 * math.cos(2 * w)))
            rgb, alpha, _ = synth.render_person(posed, attrs, crop)
            x0 = int(round(x_centre * W - crop / 2))
            y0 = int(round(H - 0.95 * crop))
            sx0, sx1, sy0, sy1 = max(0, x0), min(W, x0 + crop), max(0, y0), min(H, y0 + crop)
            cs = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
            img[sy0:sy1, sx0:sx1] = rgb[cs] + img[sy0:sy1, sx0:sx1] * (1 - alpha[cs][..., None])
            lm = {k: [round(v[0] + x0, 2), round(v[1] + y0, 2)] for k, v in synth.face_landmarks(posed, crop).items()}
            recs.append({"landmarks": lm, "attributes": attrs})
        img += noise_rng.normal(0, 1.0, img.shape).astype(np.float32)
        frames.append(np.clip(img + 0.5, 0, 255).astype(np.uint8))
        records.append(recs)
    return frames, records


def make_clip(out: Path) -> dict:
    import imageio_ffmpeg

    frames, records = _clip_frames()
    W, H, fps = CLIP["width"], CLIP["height"], CLIP["fps"]
    path = out / "clip.mp4"
    tmp = path.with_name(f"clip.tmp-{os.getpid()}.mp4")
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", str(fps), "-i", "-",
        "-f", "lavfi", "-i", f"sine=frequency={CLIP['tone_hz']}:sample_rate=44100:duration={CLIP['seconds']}",
        "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "medium", "-crf", "26", "-pix_fmt", "yuv420p",
        "-threads", "1", "-c:a", "aac", "-b:a", "64k", "-shortest", "-movflags", "+faststart",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", str(tmp),
    ]
    proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True)
    if proc.returncode != 0:
        raise SystemExit("ffmpeg failed: " + proc.stderr.decode(errors="replace"))
    os.replace(tmp, path)
    return {"file": "clip.mp4", "width": W, "height": H, "fps": fps, "frames": len(frames),
            "audio": f"{CLIP['tone_hz']} Hz sine, AAC", "faces_per_frame": records}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    photos = make_photos(args.out)
    clip = make_clip(args.out)
    meta = {"generator_version": synth.GENERATOR_VERSION, "seed": SEED, "photos": photos, "clip": clip}
    (args.out / "examples.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
