"""Training iteration time: starcli's step vs a plain eager fp32 StarGAN step, bf16 vs fp32.

One iteration = one critic (D) step, plus one generator step every ``n_critic`` iterations, as in
the reference code; s/iter = D time + G time / n_critic. All variants run in the same process on
the same data so their ratios are comparable (absolute figures vary on a shared machine).

    python benchmarks/train_bench.py                       # 128 px, default G/D, batch 16
    python benchmarks/train_bench.py --image-size 64 --recipe starcli/assets/recipes/synth-64.toml

Variants:
- ``plain fp32``: the reference step written naively (G forward with autograd graph in the D step,
  separate D passes for real and fake, D gradients computed during the G step), eager, fp32.
- ``starcli fp32`` / ``starcli bf16``: ``starcli.train`` steps (no-grad fakes, one D pass for
  real+fake, frozen D in the G step, fp32 gradient penalty, channels_last under bf16).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starcli.train import _Trainer, load_train_config, sample_target_labels  # noqa: E402


def make_dataset(root: Path, n: int, size: int) -> Path:
    """A small labelled set: synth faces when available, else random images."""
    try:
        from starcli.synth import generate_dataset

        generate_dataset(root, n, seed=123, size=size, workers=1)
        return root
    except Exception:  # pragma: no cover - synth unavailable
        import numpy as np
        from PIL import Image

        (root / "images").mkdir(parents=True, exist_ok=True)
        rows = ["file,Black_Hair,Blond_Hair,Brown_Hair,Male,Young"]
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
            h = i % 3
            rows.append(f"{i}.png," + ",".join(str(int(h == k)) for k in range(3)) + f",{i % 2},{(i // 2) % 2}")
        (root / "labels.csv").write_text("\n".join(rows) + "\n")
        return root


def plain_d_step(t: _Trainer, x_real, label_org, c_trg) -> None:
    """The reference D step, eager fp32."""
    G, D, lc = t.G, t.D, t.cfg.loss
    out_src, out_cls = D(x_real)
    d_loss_real = -torch.mean(out_src)
    d_loss_cls = F.binary_cross_entropy_with_logits(out_cls, label_org, reduction="sum") / out_cls.size(0)
    x_fake = G(x_real, c_trg)
    out_src, _ = D(x_fake.detach())
    d_loss_fake = torch.mean(out_src)
    alpha = torch.rand(x_real.size(0), 1, 1, 1)
    x_hat = (alpha * x_real.data + (1 - alpha) * x_fake.data).requires_grad_(True)
    out_src, _ = D(x_hat)
    grad = torch.autograd.grad(out_src, x_hat, torch.ones_like(out_src), retain_graph=True, create_graph=True, only_inputs=True)[0]
    d_loss_gp = torch.mean((grad.view(grad.size(0), -1).norm(2, dim=1) - 1) ** 2)
    d_loss = d_loss_real + d_loss_fake + lc.lambda_cls * d_loss_cls + lc.lambda_gp * d_loss_gp
    t.opt_G.zero_grad()
    t.opt_D.zero_grad()
    d_loss.backward()
    t.opt_D.step()


def plain_g_step(t: _Trainer, x_real, label_org, c_trg) -> None:
    """The reference G step, eager fp32 (no paired loss)."""
    G, D, lc = t.G, t.D, t.cfg.loss
    x_fake = G(x_real, c_trg)
    out_src, out_cls = D(x_fake)
    g_loss_fake = -torch.mean(out_src)
    g_loss_cls = F.binary_cross_entropy_with_logits(out_cls, c_trg, reduction="sum") / out_cls.size(0)
    x_rec = G(x_fake, label_org)
    g_loss_rec = torch.mean(torch.abs(x_real - x_rec))
    g_loss = g_loss_fake + lc.lambda_rec * g_loss_rec + lc.lambda_cls * g_loss_cls
    t.opt_G.zero_grad()
    t.opt_D.zero_grad()
    g_loss.backward()
    t.opt_G.step()


def time_variant(cfg, mode: str, repeats: int, warmup: int) -> tuple[float, float]:
    """Median seconds of one D step and one G step."""
    t = _Trainer(cfg)
    d_times, g_times = [], []
    for i in range(warmup + repeats):
        x, lab = t._batch()
        c = sample_target_labels(lab, t.groups, t.label_gen)
        t0 = time.perf_counter()
        plain_d_step(t, x, lab, c) if mode == "plain" else t.d_step(x, lab, c)
        t1 = time.perf_counter()
        (plain_g_step(t, x, lab, c) if mode == "plain" else t.g_step(x, lab, c))
        t2 = time.perf_counter()
        if i >= warmup:
            d_times.append(t1 - t0)
            g_times.append(t2 - t1)
    t.store.close()
    return statistics.median(d_times), statistics.median(g_times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--recipe", type=Path, default=None, help="TOML recipe (default: built-in defaults)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--variants", default="plain,fp32,bf16", help="comma list of plain, fp32, bf16, bf16-gp (bf16 penalty)")
    ap.add_argument("--pairs", action="store_true", help="include the paired loss in starcli's G step")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", max(64, args.batch_size * 2), args.image_size)
        base = {
            "data.path": str(data),
            "data.image_size": args.image_size,
            "run.batch_size": args.batch_size,
            "run.out": str(Path(tmp) / "run"),
            "augment.enabled": False,
            "loss.lambda_pair": 10.0 if args.pairs else 0.0,
        }
        if args.threads:
            base["run.threads"] = args.threads
        if args.image_size < 128 and args.recipe is None:
            base["model.d_repeat_num"] = min(6, args.image_size.bit_length() - 2)
        variants = {
            "plain": ("plain", {"run.precision": "fp32", "run.channels_last": "off"}),
            "fp32": ("starcli", {"run.precision": "fp32"}),
            "bf16": ("starcli", {"run.precision": "bf16"}),
            "bf16-gp": ("starcli", {"run.precision": "bf16", "loss.gp_precision": "autocast"}),
            "bf16-nocl": ("starcli", {"run.precision": "bf16", "run.channels_last": "off"}),
        }
        results = {}
        n_critic = None
        for name in args.variants.split(","):
            mode, ov = variants[name]
            cfg = load_train_config(args.recipe, {**base, **ov})
            n_critic = cfg.optim.n_critic
            d, g = time_variant(cfg, mode, args.repeats, args.warmup)
            results[name] = (d, g, d + g / n_critic)
            print(f"{name:10s} D {d:7.3f} s  G {g:7.3f} s  -> {d + g / n_critic:7.3f} s/iter ({3600 / (d + g / n_critic):6.0f} iters/h)", flush=True)
        print(f"\nimage {args.image_size}, batch {args.batch_size}, n_critic {n_critic}, threads {torch.get_num_threads()}")
        ref_name = "plain" if "plain" in results else next(iter(results))
        for name, (_, _, it) in results.items():
            print(f"  {name:10s} {it:7.3f} s/iter   speed-up vs {ref_name}: x{results[ref_name][2] / it:.2f}")
        if "fp32" in results and "bf16" in results:
            print(f"  bf16 vs fp32 (starcli): x{results['fp32'][2] / results['bf16'][2]:.2f}")


if __name__ == "__main__":
    main()
