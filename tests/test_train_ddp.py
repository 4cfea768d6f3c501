"""Data-parallel training: 2 processes on CPU (gloo) launched by torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.test_data import make_csv_dataset

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from starcli.train import load_train_config, train, _Trainer
    data, out, iters, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    cfg = load_train_config(overrides={
        "data.path": data, "data.image_size": 16, "data.workers": 1,
        "model.g_conv_dim": 8, "model.g_repeat_num": 1, "model.d_conv_dim": 8, "model.d_repeat_num": 2,
        "optim.iters": 4, "optim.n_critic": 2, "optim.decay_iters": 2, "run.batch_size": 2,
        "run.threads": 1, "run.precision": "fp32", "run.out": out, "run.save_every": 2,
        "run.max_steps": iters, "run.resume": resume, "loss.lambda_pair": 5.0, "log.sample_count": 1,
    })
    captured = {}
    orig = _Trainer.run
    def run(self, on_step):
        captured["t"] = self
        return orig(self, on_step)
    _Trainer.run = run
    summary = train(cfg)
    t = captured["t"]
    rank = int(os.environ["RANK"])
    torch.save({k: v.clone() for k, v in t.G.state_dict().items()}, os.path.join(out, f"G_rank{rank}_{summary.step}.pt"))
    """
)


def _torchrun(tmp_path, data, out, iters, resume=""):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(data), str(out), str(iters), resume]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_ddp_two_processes_cpu_and_exact_resume(tmp_path):
    data = make_csv_dataset(tmp_path / "ds", n=8, size=16)
    full, part = tmp_path / "full", tmp_path / "part"
    _torchrun(tmp_path, data, full, 0)
    g0 = torch.load(full / "G_rank0_4.pt", weights_only=True)
    g1 = torch.load(full / "G_rank1_4.pt", weights_only=True)
    for k in g0:  # gradients are averaged: both replicas stay identical
        assert torch.equal(g0[k], g1[k]), k
    state = torch.load(full / "checkpoints" / "step_0000004" / "train_state.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2
    # interrupted after 2 steps, resumed by 2 processes: same weights as the uninterrupted run
    _torchrun(tmp_path, data, part, 2)
    _torchrun(tmp_path, data, part, 0, resume=str(part))
    g_part = torch.load(part / "G_rank0_4.pt", weights_only=True)
    for k in g0:
        assert torch.equal(g0[k], g_part[k]), k
