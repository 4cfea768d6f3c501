"""Rebuild docs/images/synth-64-examples.jpg: one example photo edited by a model, one tile per edit.

    python docs/images/make_synth_sheet.py [--model synth-64] [--photo examples/two_people.png]

Each tile is the faces' region of ``starcli translate PHOTO --set EDIT`` (same crop in every tile).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EDITS = ["", "hair=black", "hair=red", "hair=gray", "beard", "smiling", "no-young"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="synth-64")
    ap.add_argument("--photo", type=Path, default=ROOT / "examples" / "two_people.png")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "synth-64-examples.jpg")
    ap.add_argument("--height", type=int, default=224)
    args = ap.parse_args()
    truth = json.loads((ROOT / "examples" / "examples.json").read_text())
    faces = next(p for p in truth["photos"] if p["file"] == args.photo.name)["faces"]
    x0 = min(f["box"][0] for f in faces); y0 = min(f["box"][1] for f in faces)
    x1 = max(f["box"][2] for f in faces); y1 = max(f["box"][3] for f in faces)
    pad = 0.25 * max(x1 - x0, y1 - y0)
    src = Image.open(args.photo).convert("RGB")
    box = (max(0, int(x0 - pad)), max(0, int(y0 - pad)), min(src.width, int(x1 + pad)), min(src.height, int(y1 + pad)))
    tiles = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, edit in enumerate(EDITS):
            if not edit:
                img = src
            else:
                out = Path(tmp) / str(k)
                cmd = [sys.executable, "-m", "starcli", "translate", str(args.photo), "--set", edit, "-m", args.model, "-o", str(out)]
                subprocess.run(cmd, check=True, capture_output=True)
                img = Image.open(next(out.rglob(args.photo.stem + ".*"))).convert("RGB")
            tile = img.crop(box)
            tiles.append(tile.resize((round(tile.width * args.height / tile.height), args.height), Image.LANCZOS))
    sheet = Image.new("RGB", (sum(t.width for t in tiles), args.height))
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width
    sheet.save(args.out, quality=90)
    print(f"wrote {args.out} ({' | '.join(e or 'original' for e in EDITS)})")


if __name__ == "__main__":
    main()
