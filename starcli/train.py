"""StarGAN v1 training: config, losses, checkpoints and the ``train(cfg)`` loop.

Objective (Choi et al. 2018): WGAN-GP adversarial loss, attribute classification loss
(BCE-with-logits), cycle reconstruction L1; optionally a paired L1 on counterfactual pairs
(same face, a few attributes changed) weighted up on the pixels the edit changes.

The loop never prints: progress goes to ``on_step`` and to ``OUT/train.log``. A run folder holds
``config.toml`` (effective config), ``train.log``, ``samples/step_<N>.png``, the latest model
bundle at its root and ``checkpoints/step_<N:07d>/`` bundles with ``train_state.pt``.

Conventions: images ``(B, 3, H, W)``; uint8 from the data store, ``[0, 1]`` through augmentation,
``[-1, 1]`` into G and D. Labels ``(B, C)`` float 0/1.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
import typing
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from starcli.augment import AugmentConfig, build_augmenter
from starcli.config import read_toml
from starcli.data import ImageStore, LabeledImages, load_dataset, memory_fits
from starcli.errors import ConfigError, InputError, ModelError, StarcliError
from starcli.spec import CELEBA_POINTS
from starcli.stargan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, config_dict, load_grown_generator

__all__ = [
    "TrainConfig",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "LossConfig",
    "RunConfig",
    "LogConfig",
    "AugmentConfig",
    "StepInfo",
    "TrainSummary",
    "load_train_config",
    "config_to_toml",
    "train",
    "lr_factor",
    "sample_target_labels",
    "gradient_penalty",
    "classification_loss",
    "paired_l1",
    "paired_region_l1",
    "paired_shift_l1",
    "paired_texture_l1",
    "local_contrast",
    "PairCritic",
    "pair_critic_loss",
    "pair_critic_g_loss",
    "load_checkpoint_state",
    "find_checkpoint",
    "CHECKPOINT_FORMAT",
]

CHECKPOINT_FORMAT = "starcli-train/1"
BUNDLE_FORMAT = "starcli-model/1"


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """``[data]``: where the images are and which labels to learn."""

    path: str = ""  # dataset folder or label file
    format: str = "auto"  # auto | csv | celeba | folders
    attrs: list[str] = field(default_factory=list)  # attribute columns, in order (empty: all)
    groups: list[list[str]] = field(default_factory=list)  # exclusive groups (empty: dataset.json or hair colours)
    image_size: int = 128
    pairs: bool = True  # use pairs.csv when the dataset has one
    pair_focus: list[str] = field(default_factory=list)  # "Young" (any change) or "Young=0" (target value): pairs to oversample
    pair_focus_share: float = 0.0  # fraction of each pair batch drawn from the pair_focus pairs (0: off)
    memory_limit_mb: int = 4096  # decode the whole set into RAM when it fits, else read lazily
    workers: int = 4  # image decoding threads


@dataclass
class ModelConfig:
    """``[model]``: generator and discriminator shapes."""

    name: str = ""  # bundle name (default: the run folder's name)
    g_conv_dim: int = 64
    g_repeat_num: int = 6
    g_detail_dim: int = 0  # width of the generator's full-resolution detail head (0: none, as StarGAN)
    d_conv_dim: int = 64
    d_repeat_num: int = 6


@dataclass
class OptimConfig:
    """``[optim]``: Adam, schedule, critic ratio, EMA."""

    iters: int = 200000
    decay_iters: int = 100000  # lr decays linearly to exactly 0 over the last decay_iters steps
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 5  # D steps per G step
    ema_decay: float = 0.999  # EMA of G used for samples and exported bundles


@dataclass
class LossConfig:
    """``[loss]``: loss weights."""

    lambda_adv: float = 1.0  # weight of G's adversarial term (StarGAN: 1)
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    lambda_gp: float = 10.0
    lambda_pair: float = 0.0  # paired L1 on counterfactual pairs (0: off)
    pair_weight: float = 5.0  # weight of pixels that differ between a pair's source and target
    pair_threshold: float = 0.03  # per-pixel max channel difference on [0, 1] counted as "changed"
    lambda_pair_region: float = 0.0  # paired L1 averaged over each pair's changed pixels only (0: off)
    lambda_pair_shift: float = 0.0  # shift-tolerant paired L1 over each pair's changed pixels (0: off)
    pair_shift_radius: int = 1  # pixels a stroke may move at no cost in lambda_pair_shift
    lambda_pair_texture: float = 0.0  # L1 of local dark/bright stroke energy over each pair's changed pixels (0: off)
    lambda_pair_critic: float = 0.0  # G weight of the pair patch critic (7x7 receptive field, hinge) over changed pixels (0: off)
    pair_critic_dim: int = 32  # channels of the pair patch critic's first layer
    pair_critic_lr: float = 0.0  # Adam lr of the pair patch critic, decayed with the others (0: optim.d_lr)
    gp_precision: str = "fp32"  # fp32 | autocast: precision of the gradient-penalty forward/backward


@dataclass
class RunConfig:
    """``[run]``: output, device, precision, batch, checkpoints."""

    out: str = "runs/starcli"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (fp16 on CUDA only)
    channels_last: str = "auto"  # auto (on for CUDA mixed precision) | on | off
    batch_size: int = 16  # per process
    pair_batch_size: int = 0  # pairs per G step (0: batch_size)
    seed: int = 0
    threads: int = 0  # torch intra-op threads (0: leave torch's default)
    resume: str = ""  # run folder or checkpoint folder to continue from
    init: str = ""  # model (name, bundle or run folder) whose G and D weights start the run (fine-tuning)
    save_every: int = 5000
    keep_last: int = 3
    max_steps: int = 0  # stop (and checkpoint) after this many steps in this invocation (0: run to optim.iters)
    max_minutes: float = 0.0  # stop (and checkpoint) after this much wall time in this invocation (0: no limit)


@dataclass
class LogConfig:
    """``[log]``: monitoring."""

    log_every: int = 100  # lines in train.log
    sample_every: int = 1000  # sample grid PNG under samples/
    sample_count: int = 8  # images in the fixed sample batch
    tensorboard: bool = True  # write event files when torch.utils.tensorboard works


@dataclass
class TrainConfig:
    """Every training hyperparameter; TOML tables of the same names."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)
    log: LogConfig = field(default_factory=LogConfig)


_CHOICES = {
    "data.format": ("auto", "csv", "celeba", "folders"),
    "loss.gp_precision": ("fp32", "autocast"),
    "run.precision": ("auto", "fp32", "bf16", "fp16"),
    "run.channels_last": ("auto", "on", "off"),
}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str) and inner is str:  # "a,b,c" from a flag
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key {key!r}: expected {getattr(tp, '__name__', tp)}, got {type(value).__name__} {value!r}")


def _merge(obj: Any, values: Mapping[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {dotted!r} (known: {', '.join(sorted(prefix + n for n in names))})")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {dotted!r}: expected a table, got {type(value).__name__}")
            _merge(current, value, dotted + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], dotted))


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        d = nested
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = value
    return nested


def load_train_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    base: TrainConfig | Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Defaults < ``base`` (a config or dict, e.g. a resumed run's) < TOML file < ``overrides``.

    ``overrides`` maps dotted keys (``"run.batch_size"``) to values; ``None`` values are skipped.
    Raises :class:`ConfigError` naming the dotted key for unknown keys, wrong types, bad choices.

    >>> load_train_config(overrides={"run.batch_size": 4}).run.batch_size
    4
    """
    cfg = TrainConfig()
    if base is not None:
        _merge(cfg, asdict(base) if is_dataclass(base) else base)
    if path is not None:
        _merge(cfg, read_toml(Path(path)))
    if overrides:
        _merge(cfg, _nest({k: v for k, v in overrides.items() if v is not None}))
    validate_config(cfg)
    return cfg


def validate_config(cfg: TrainConfig) -> None:
    """Check value ranges and choices; raise :class:`ConfigError` naming the dotted key."""
    for key, choices in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(choices)}")
    positive = {
        "data.image_size": cfg.data.image_size,
        "model.g_conv_dim": cfg.model.g_conv_dim,
        "model.d_conv_dim": cfg.model.d_conv_dim,
        "model.d_repeat_num": cfg.model.d_repeat_num,
        "optim.iters": cfg.optim.iters,
        "optim.n_critic": cfg.optim.n_critic,
        "run.batch_size": cfg.run.batch_size,
        "run.save_every": cfg.run.save_every,
        "run.keep_last": cfg.run.keep_last,
        "log.log_every": cfg.log.log_every,
        "log.sample_every": cfg.log.sample_every,
        "data.workers": cfg.data.workers,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key {key!r}: must be > 0, got {value}")
    nonneg = {
        "model.g_repeat_num": cfg.model.g_repeat_num,
        "model.g_detail_dim": cfg.model.g_detail_dim,
        "optim.decay_iters": cfg.optim.decay_iters,
        "run.pair_batch_size": cfg.run.pair_batch_size,
        "run.threads": cfg.run.threads,
        "run.max_steps": cfg.run.max_steps,
        "log.sample_count": cfg.log.sample_count,
        "loss.lambda_pair": cfg.loss.lambda_pair,
        "loss.lambda_pair_region": cfg.loss.lambda_pair_region,
        "loss.lambda_pair_shift": cfg.loss.lambda_pair_shift,
        "loss.pair_shift_radius": cfg.loss.pair_shift_radius,
        "loss.lambda_pair_texture": cfg.loss.lambda_pair_texture,
        "loss.lambda_pair_critic": cfg.loss.lambda_pair_critic,
        "loss.pair_critic_lr": cfg.loss.pair_critic_lr,
        "data.memory_limit_mb": cfg.data.memory_limit_mb,
    }
    for key, value in nonneg.items():
        if value < 0:
            raise ConfigError(f"config key {key!r}: must be >= 0, got {value}")
    if cfg.run.max_minutes < 0:
        raise ConfigError(f"config key 'run.max_minutes': must be >= 0, got {cfg.run.max_minutes}")
    if not 0.0 <= cfg.data.pair_focus_share <= 1.0:
        raise ConfigError(f"config key 'data.pair_focus_share': must be in [0, 1], got {cfg.data.pair_focus_share}")
    if not 0.0 <= cfg.optim.ema_decay < 1.0:
        raise ConfigError(f"config key 'optim.ema_decay': must be in [0, 1), got {cfg.optim.ema_decay}")
    s, r = cfg.data.image_size, cfg.model.d_repeat_num
    if cfg.loss.pair_critic_dim <= 0:
        raise ConfigError(f"config key 'loss.pair_critic_dim': must be > 0, got {cfg.loss.pair_critic_dim}")
    if s % 4:
        raise ConfigError(f"config key 'data.image_size': {s} is not a multiple of 4")
    if s % (2**r) or s < 2**r:
        raise ConfigError(f"config key 'model.d_repeat_num': image_size {s} is not divisible by 2^{r}")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def config_to_toml(cfg: TrainConfig) -> str:
    """The config as TOML text (round-trips through :func:`load_train_config`)."""
    lines = ["# starcli train: effective config"]
    for name, section in asdict(cfg).items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in section.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Losses and small pure helpers
# ----------------------------------------------------------------------------------------------


def lr_factor(step: int, iters: int, decay_iters: int) -> float:
    """Learning-rate multiplier at 1-based ``step``: 1, then linear to exactly 0 at ``iters``.

    >>> [lr_factor(s, 10, 4) for s in (1, 6, 8, 10)]
    [1.0, 1.0, 0.5, 0.0]
    """
    if decay_iters <= 0:
        return 1.0
    return max(0.0, min(1.0, (iters - step) / decay_iters))


def sample_target_labels(labels: Tensor, groups: list[list[int]], generator: torch.Generator) -> Tensor:
    """StarGAN targets: the batch's labels shuffled; each exclusive group made exactly one-hot.

    ``labels`` ``(B, C)`` 0/1; rows whose group is not one-hot get a random member of it.
    """
    b = labels.size(0)
    perm = torch.randperm(b, generator=generator)
    target = labels[perm].clone()
    for idx in groups:
        sub = target[:, idx]
        bad = sub.sum(1) != 1
        pick = torch.randint(len(idx), (b,), generator=generator)
        if bad.any():
            fixed = F.one_hot(pick, len(idx)).to(target.dtype)
            sub[bad] = fixed[bad]
            target[:, idx] = sub
    return target


def classification_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Summed-over-attributes BCE-with-logits, averaged over the batch (as in StarGAN), fp32."""
    return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="sum") / logits.size(0)


def gradient_penalty(D: nn.Module, x_real: Tensor, x_fake: Tensor, alpha: Tensor, *, fp32: bool = True) -> Tensor:
    """WGAN-GP term ``mean((||grad_x D(x_hat)||_2 - 1)^2)`` on ``x_hat = a x_real + (1-a) x_fake``.

    With ``fp32`` the critic runs with autocast disabled, so the penalty is exact under bf16/fp16
    training. ``alpha`` ``(B, 1, 1, 1)`` in [0, 1].
    """
    x_hat = (alpha * x_real.float() + (1.0 - alpha) * x_fake.float()).requires_grad_(True)
    device_type = x_hat.device.type
    ctx = torch.autocast(device_type, enabled=False) if fp32 else nullcontext()
    with ctx:
        out, _ = D(x_hat)
        (grad,) = torch.autograd.grad(out.float().sum(), x_hat, create_graph=True)
    norm = grad.float().flatten(1).norm(2, dim=1)
    return ((norm - 1.0) ** 2).mean()


def _changed_pixels(source: Tensor, target: Tensor, threshold: float, grow: int = 0) -> Tensor:
    """``(B, 1, H, W)`` 0/1: pixels where any channel of a pair (``[-1, 1]``) differs by more than
    ``threshold`` on [0, 1], dilated by ``grow`` pixels (no gradient)."""
    with torch.no_grad():
        changed = ((source.float() - target.float()).abs().amax(1, keepdim=True) > 2.0 * threshold).float()
        if grow > 0:
            changed = F.max_pool2d(changed, 2 * grow + 1, stride=1, padding=grow)
    return changed


def _mean_over_changed(err: Tensor, changed: Tensor) -> Tensor:
    """Per-pixel error ``(B, 1, H, W)`` averaged over each pair's ``changed`` pixels, then over the
    pairs that change any pixel (0, with a gradient path, when none does)."""
    area = changed.sum(dim=(1, 2, 3))
    total = (err * changed).sum(dim=(1, 2, 3))
    has = area > 0
    if not bool(has.any()):
        return err.sum() * 0.0
    return (total[has] / area[has]).mean()


def paired_l1(fake: Tensor, target: Tensor, source: Tensor, *, weight: float, threshold: float) -> Tensor:
    """L1 between ``fake`` and ``target`` (``[-1, 1]``), weight ``weight`` where source != target.

    A pixel counts as changed when any channel differs by more than ``threshold`` on [0, 1].
    """
    w = 1.0 + (weight - 1.0) * _changed_pixels(source, target, threshold)
    return (w * (fake.float() - target.float()).abs()).mean()


def paired_region_l1(fake: Tensor, target: Tensor, source: Tensor, *, threshold: float) -> Tensor:
    """L1 between ``fake`` and ``target`` (``(B, C, H, W)`` in ``[-1, 1]``) averaged over each pair's
    changed pixels, then over pairs that change any pixel (0 when none does).

    Every pair's edit counts the same whatever its area: a few wrinkle or mouth pixels weigh as
    much as a whole head of hair. Changed: as in :func:`paired_l1`.
    """
    err = (fake.float() - target.float()).abs().mean(1, keepdim=True)
    return _mean_over_changed(err, _changed_pixels(source, target, threshold))


def _shifted(x: Tensor, radius: int) -> Tensor:
    """Every shift of ``x`` (``(B, C, H, W)``) by up to ``radius`` pixels on each axis, edges
    replicated: ``(K, B, C, H, W)`` with ``K = (2 * radius + 1) ** 2``."""
    h, w = x.shape[-2:]
    p = F.pad(x, (radius,) * 4, mode="replicate")
    k = 2 * radius + 1
    return torch.stack([p[..., dy : dy + h, dx : dx + w] for dy in range(k) for dx in range(k)])


def paired_shift_l1(fake: Tensor, target: Tensor, source: Tensor, *, threshold: float, radius: int = 1) -> Tensor:
    """Shift-tolerant L1 between ``fake`` and ``target`` (``(B, C, H, W)`` in ``[-1, 1]``): each
    pixel of either image is compared with the closest-matching pixel of the other within
    ``radius`` pixels, and the two directions are averaged; then averaged over each pair's
    changed pixels (grown by ``radius``) and over pairs, as :func:`paired_region_l1`.

    A thin stroke drawn one pixel away from the target's costs nothing, so the generator can draw
    it sharp where it is unsure of the exact pixel, instead of the blurred compromise a plain L1
    pays least for; a stroke left out still costs (its pixels find no match), and so does a blur.
    """
    f, t = fake.float(), target.float()
    to_target = (f.unsqueeze(0) - _shifted(t, radius)).abs().mean(2).amin(0)  # (B, H, W)
    to_fake = (_shifted(f, radius) - t.unsqueeze(0)).abs().mean(2).amin(0)
    err = (to_target + to_fake).unsqueeze(1) * 0.5
    return _mean_over_changed(err, _changed_pixels(source, target, threshold, grow=radius))


def local_contrast(x: Tensor) -> Tensor:
    """Stroke energy of images ``(B, 3, H, W)`` in ``[-1, 1]``: ``(B, 2, H, W)``, how much darker
    (channel 0) and brighter (channel 1) each pixel's luminance is than its 5x5 surroundings,
    averaged over 3x3 so that a stroke moved by a pixel gives nearly the same energy."""
    lum = x.float().mean(1, keepdim=True)
    base = F.avg_pool2d(F.pad(lum, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    hp = lum - base
    energy = torch.cat([F.relu(-hp), F.relu(hp)], 1)
    return F.avg_pool2d(F.pad(energy, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def paired_texture_l1(fake: Tensor, target: Tensor, source: Tensor, *, threshold: float) -> Tensor:
    """L1 between the :func:`local_contrast` of ``fake`` and ``target`` (``(B, 3, H, W)`` in
    ``[-1, 1]``), averaged over each pair's changed pixels (grown by 2) and over pairs.

    Pixel losses pay least for a faint blur where the exact position of thin strokes (age lines)
    is uncertain; this one compares how much stroke there is around each pixel, so a blur costs
    what the missing strokes do and sharp strokes a pixel off cost little.
    """
    err = (local_contrast(fake) - local_contrast(target)).abs().sum(1, keepdim=True)
    return _mean_over_changed(err, _changed_pixels(source, target, threshold, grow=2))


class PairCritic(nn.Module):
    """Patch critic for counterfactual pairs: scores every pixel of a candidate edit ``(B, 3, H,
    W)`` of ``source`` (same shape, both ``[-1, 1]``) as real (high) or generated, ``(B, 1, H, W)``.

    Three 3x3 convs and a 1x1 (spectral norm, leaky ReLU): each score sees only the 7x7 patch
    around its pixel of both images, so it judges fine texture (a crisp 1 px line against a faint
    smear in the same place) and not the global content the main critic judges.
    """

    def __init__(self, dim: int = 32):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(6, dim, 3, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(dim, 2 * dim, 3, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * dim, 2 * dim, 3, padding=1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * dim, 1, 1)),
        )

    def forward(self, source: Tensor, candidate: Tensor) -> Tensor:
        return self.net(torch.cat([source.float(), candidate.float()], 1))


def pair_critic_loss(scores_real: Tensor, scores_fake: Tensor, changed: Tensor) -> Tensor:
    """Hinge loss of a :class:`PairCritic` from its scores ``(B, 1, H, W)`` of the true targets
    and of the (detached) generated edits, averaged over each pair's ``changed`` pixels and over
    pairs: 0 once every real pixel scores >= 1 and every generated one <= -1."""
    return _mean_over_changed(F.relu(1.0 - scores_real), changed) + _mean_over_changed(F.relu(1.0 + scores_fake), changed)


def pair_critic_g_loss(scores_fake: Tensor, changed: Tensor) -> Tensor:
    """The generator's side: minus the critic's mean score of its edits over the changed pixels."""
    return _mean_over_changed(-scores_fake.float(), changed)


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclass
class StepInfo:
    """What ``on_step`` receives after every iteration."""

    step: int
    iters: int
    losses: dict[str, float]
    lr: float
    sec_per_iter: float  # smoothed wall time per iteration
    event: str = ""  # "checkpoint", "sample" or "" for plain steps
    start_step: int = 0


@dataclass
class TrainSummary:
    """What :func:`train` returns."""

    run_dir: Path
    start_step: int
    step: int
    iters: int
    seconds: float
    sec_per_iter: float
    losses: dict[str, float]
    checkpoint: Path | None
    bundle: Path
    device: str
    precision: str
    num_images: int
    num_pairs: int
    attributes: list[str]
    samples: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


def focus_pair_indices(source_labels: Tensor, target_labels: Tensor, attributes: Sequence[str], focus: Sequence[str]) -> Tensor:
    """Indices of the pairs (rows of ``(M, C)`` 0/1 label tensors) that a ``focus`` entry selects.

    ``"Young"`` selects every pair that changes ``Young``; ``"Young=0"`` only the pairs whose
    target sets it to 0 (for example: the pairs that add age cues). Raises :class:`ConfigError`
    (``data.pair_focus``) for an unknown attribute or value.

    >>> src = torch.tensor([[1.0], [0.0], [1.0]]); trg = torch.tensor([[0.0], [1.0], [1.0]])
    >>> focus_pair_indices(src, trg, ["Young"], ["Young"]).tolist(), focus_pair_indices(src, trg, ["Young"], ["Young=0"]).tolist()
    ([0, 1], [0])
    """
    keep = torch.zeros(len(target_labels), dtype=torch.bool)
    for entry in focus:
        name, _, value = entry.partition("=")
        if name not in attributes:
            raise ConfigError(f"data.pair_focus: unknown attribute {name!r} (dataset has {', '.join(attributes)})")
        if value not in ("", "0", "1"):
            raise ConfigError(f"data.pair_focus: {entry!r}: the value after '=' must be 0 or 1")
        k = list(attributes).index(name)
        hit = source_labels[:, k] != target_labels[:, k]
        if value:
            hit &= target_labels[:, k] == float(value)
        keep |= hit
    return torch.nonzero(keep).flatten()


class FocusedSampler:
    """Index stream over ``n`` items where a ``share`` of every batch comes from ``focus`` (an
    index subset), each part an :class:`EpochSampler`; its state resumes exactly."""

    def __init__(self, n: int, focus: Tensor, share: float, seed: int):
        if len(focus) == 0:
            raise ConfigError("data.pair_focus selects no pair of this dataset")
        self.focus = focus.long()
        self.share = share
        self.all = EpochSampler(n, seed)
        self.focused = EpochSampler(len(self.focus), seed + 101)

    def next(self, b: int) -> Tensor:
        k = min(b, int(round(b * self.share)))
        return torch.cat([self.focus[self.focused.next(k)], self.all.next(b - k)])

    def state_dict(self) -> dict[str, Any]:
        return {"all": self.all.state_dict(), "focused": self.focused.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "all" not in state:  # a checkpoint of a run without focus: its plain pair stream
            self.all.load_state_dict(state)
            return
        self.all.load_state_dict(state["all"])
        self.focused.load_state_dict(state["focused"])


class EpochSampler:
    """Seeded index stream: a fresh permutation each epoch; its state resumes exactly."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.generator)
        self.pos = 0

    def next(self, b: int) -> Tensor:
        out = []
        while b > 0:
            if self.pos >= self.n:
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.pos = 0
            take = min(b, self.n - self.pos)
            out.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            b -= take
        return torch.cat(out)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])


# ----------------------------------------------------------------------------------------------
# Devices, precision, distributed
# ----------------------------------------------------------------------------------------------


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            rank = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config key 'run.device': unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key 'run.device': {name!r} requested but CUDA is not available")
    return dev


def _cpu_bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - old builds
        return False


def _resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if _cpu_bf16_supported() else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("config key 'run.precision': fp16 needs a CUDA device (use bf16 or fp32 on CPU)")
    return name


class _Dist:
    """torch.distributed context from torchrun's environment (world size 1 without it)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.owned = False
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
                self.owned = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast_params(self, *modules: nn.Module) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        for m in modules:
            for t in list(m.parameters()) + list(m.buffers()):
                dist.broadcast(t.data, 0)

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (InstanceNorm running stats) everywhere, as DDP does each forward."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for b in module.buffers():
            dist.broadcast(b.data, 0)

    def average_grads(self, module: nn.Module) -> None:
        """All-reduce (mean) the gradients in one flat bucket: data-parallel SGD, as DDP does."""
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def all_true(self, flag: bool) -> bool:
        """``flag`` of rank 0 on every rank (so all ranks stop at the same step)."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item() > 0.5)

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` (a list on all ranks), or None in a single process."""
        if self.world == 1:
            return None
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# Bundles and checkpoints
# ----------------------------------------------------------------------------------------------


def _contiguous_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_bundle_files(folder: Path, card: dict[str, Any], g_state: dict[str, Tensor], d_state: dict[str, Tensor] | None, *, atomic: bool) -> None:
    from safetensors.torch import save_file

    def put(name: str, writer: Callable[[Path], None]) -> None:
        target = folder / name
        if atomic:
            tmp = folder / f"{name}.tmp-{os.getpid()}"
            writer(tmp)
            os.replace(tmp, target)
        else:
            writer(target)

    put("generator.safetensors", lambda p: save_file(g_state, str(p), metadata={"format": "pt"}))
    if d_state is not None:
        put("discriminator.safetensors", lambda p: save_file(d_state, str(p), metadata={"format": "pt"}))
    put("model.json", lambda p: p.write_text(json.dumps(card, indent=2) + "\n"))


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder to resume from: ``path`` itself or its newest ``checkpoints/step_*``."""
    path = Path(path)
    if (path / "train_state.pt").is_file():
        return path
    ckpts = sorted((path / "checkpoints").glob("step_*")) if (path / "checkpoints").is_dir() else []
    ckpts = [c for c in ckpts if (c / "train_state.pt").is_file()]
    if not ckpts:
        raise InputError(path, "no checkpoint to resume (expected checkpoints/step_*/train_state.pt)")
    return ckpts[-1]


def load_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """Load ``train_state.pt`` (plain dicts and tensors) with ``weights_only=True``."""
    ckpt = find_checkpoint(path)
    try:
        state = torch.load(ckpt / "train_state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{ckpt / 'train_state.pt'}: cannot load checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{ckpt / 'train_state.pt'}: not a {CHECKPOINT_FORMAT} checkpoint")
    return state


def _template_points() -> dict[str, list[float]]:
    """The CelebA crop template (``starcli.spec.CELEBA_POINTS``, nose calibrated) for cards."""
    return {k: [float(v[0]), float(v[1])] for k, v in CELEBA_POINTS.items()}


# ----------------------------------------------------------------------------------------------
# Sample grid
# ----------------------------------------------------------------------------------------------


def sample_targets(source: Tensor, attributes: list[str], groups: list[list[int]]) -> list[tuple[str, Tensor]]:
    """One edit per column: each group member set (``Blond_Hair``), each other attribute flipped."""
    grouped = {i for g in groups for i in g}
    cols: list[tuple[str, Tensor]] = []
    for k, a in enumerate(attributes):
        t = source.clone()
        if k in grouped:
            g = next(g for g in groups if k in g)
            t[:, g] = 0.0
            t[:, k] = 1.0
            cols.append((a, t))
        else:
            t[:, k] = 1.0 - t[:, k]
            cols.append((f"~{a}", t))
    return cols


def _save_grid(path: Path, G: nn.Module, x: Tensor, labels: Tensor, attributes: list[str], groups: list[list[int]]) -> None:
    from PIL import Image

    with torch.no_grad():
        cols = [x]
        for _, t in sample_targets(labels, attributes, groups):
            cols.append(G(x, t.to(x.device)).float())
        grid = torch.stack(cols, 1)  # (B, K, 3, H, W)
    b, k, _, h, w = grid.shape
    img = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    img = img.permute(0, 3, 1, 4, 2).reshape(b * h, k * w, 3).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}.png")
    Image.fromarray(img).save(tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def _to_unit(u8: Tensor, device: torch.device) -> Tensor:
    return u8.to(device, non_blocking=True).float().div_(255.0)


class _Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        if not cfg.data.path:
            raise ConfigError("config key 'data.path': no dataset given (DATA argument or [data] path)")
        self.device = _resolve_device(cfg.run.device)
        self.precision = _resolve_precision(cfg.run.precision, self.device)
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        self.dist = _Dist(self.device)
        self.run_dir = Path(cfg.run.out)
        self.start_step = 0
        self.resume_state: dict[str, Any] | None = None
        if cfg.run.resume:
            self.resume_state = load_checkpoint_state(cfg.run.resume)
        self.ds = load_dataset(
            cfg.data.path,
            format=cfg.data.format,
            attrs=cfg.data.attrs or None,
            groups=cfg.data.groups or None,
            use_pairs=cfg.data.pairs and cfg.loss.lambda_pair > 0,
        )
        self.attributes = self.ds.attributes
        self.groups = self.ds.group_indices()
        c = len(self.attributes)
        n_files = len(self.ds) + len(self.ds.pair_files)
        in_memory = memory_fits(n_files, cfg.data.image_size, cfg.data.memory_limit_mb)
        self.store = ImageStore(self.ds.files, cfg.data.image_size, in_memory=in_memory, workers=cfg.data.workers)
        self.pair_store = (
            ImageStore(self.ds.pair_files, cfg.data.image_size, in_memory=in_memory, workers=cfg.data.workers)
            if self.ds.num_pairs and cfg.loss.lambda_pair > 0
            else None
        )
        self.g_cfg = GeneratorConfig(
            conv_dim=cfg.model.g_conv_dim, c_dim=c, repeat_num=cfg.model.g_repeat_num, detail_dim=cfg.model.g_detail_dim
        )
        self.d_cfg = DiscriminatorConfig(
            image_size=cfg.data.image_size, conv_dim=cfg.model.d_conv_dim, c_dim=c, repeat_num=cfg.model.d_repeat_num
        )
        torch.manual_seed(cfg.run.seed)
        self.G = Generator(self.g_cfg).to(self.device)
        self.D = Discriminator(self.d_cfg).to(self.device)
        self.dist.broadcast_params(self.G, self.D)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # measured on CPU: channels_last slows the fp32 gradient-penalty pass (128 px: D 2.6 vs 2.0 s)
        self.channels_last = cfg.run.channels_last == "on" or (
            cfg.run.channels_last == "auto" and self.precision != "fp32" and self.device.type == "cuda"
        )
        if self.channels_last:
            for m in (self.G, self.D, self.G_ema):
                m.to(memory_format=torch.channels_last)
        o = cfg.optim
        self.opt_G = torch.optim.Adam(self.G.parameters(), o.g_lr, (o.beta1, o.beta2))
        self.opt_D = torch.optim.Adam(self.D.parameters(), o.d_lr, (o.beta1, o.beta2))
        self.PC: PairCritic | None = None  # pair patch critic (loss.lambda_pair_critic)
        self.opt_PC: torch.optim.Optimizer | None = None
        if cfg.loss.lambda_pair_critic > 0 and self.pair_store is not None:
            self.PC = PairCritic(cfg.loss.pair_critic_dim).to(self.device)
            self.dist.broadcast_params(self.PC)
            self.opt_PC = torch.optim.Adam(self.PC.parameters(), self._pc_lr, (o.beta1, o.beta2))
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        self.scaler_G = self.scaler_D = None
        if self.precision == "fp16":
            self.scaler_G = torch.amp.GradScaler("cuda")
            self.scaler_D = torch.amp.GradScaler("cuda")
        seed = cfg.run.seed * 1000 + self.dist.rank
        self.sampler = EpochSampler(len(self.ds), seed + 1)
        self.pair_sampler: EpochSampler | FocusedSampler | None = None
        if self.pair_store is not None and cfg.data.pair_focus and cfg.data.pair_focus_share > 0:
            assert self.ds.pair_source is not None and self.ds.pair_labels is not None
            focus = focus_pair_indices(self.ds.labels[self.ds.pair_source], self.ds.pair_labels, self.attributes, cfg.data.pair_focus)
            self.pair_sampler = FocusedSampler(self.ds.num_pairs, focus, cfg.data.pair_focus_share, seed + 2)
        elif self.pair_store is not None:
            self.pair_sampler = EpochSampler(self.ds.num_pairs, seed + 2)
        self.label_gen = torch.Generator().manual_seed(seed + 3)
        self.augment = build_augmenter(cfg.augment)
        # fixed sample batch (own generator: does not disturb the training streams)
        n = min(cfg.log.sample_count, len(self.ds))
        pick = torch.randperm(len(self.ds), generator=torch.Generator().manual_seed(cfg.run.seed + 7))[:n]
        self.sample_x = _to_unit(self.store.get(pick), self.device).mul_(2).sub_(1)
        self.sample_c = self.ds.labels[pick].clone()
        self.g_steps = 0
        if self.resume_state is not None:
            self._load_state(self.resume_state)
        elif cfg.run.init:
            self._load_init(cfg.run.init)
        self.losses: dict[str, float] = {}
        self.writer = None

    # -------------------------------------------------------------- state
    def _load_init(self, name: str) -> None:
        """Start from the weights of a model (fine-tuning): G, G_ema and D; fresh optimisers and
        schedule. The model must have this run's attributes (same order) and architecture, except
        that a generator without a detail head may grow one (``model.g_detail_dim``): the head
        starts at zero, so the run starts from the model's exact output."""
        from starcli.models import load

        try:
            m = load(name)
        except StarcliError as exc:
            raise ConfigError(f"run.init: {exc}") from None
        if list(m.spec.attributes) != self.attributes:
            raise ConfigError(f"run.init: {name} has attributes {list(m.spec.attributes)}, the dataset has {self.attributes}")
        if m.discriminator is None:
            raise ConfigError(f"run.init: {name} has no discriminator weights (fine-tuning needs both networks)")
        try:
            g_state = {k: v.float() for k, v in m.generator.state_dict().items()}
            load_grown_generator(self.G, g_state)
            load_grown_generator(self.G_ema, g_state)
            self.D.load_state_dict({k: v.float() for k, v in m.discriminator.state_dict().items()})
        except RuntimeError as exc:
            raise ConfigError(f"run.init: {name} differs from this run's model config ({str(exc).splitlines()[0]})") from None
        self.dist.broadcast_params(self.G, self.D)

    def _load_state(self, st: Mapping[str, Any]) -> None:
        saved_attrs = st.get("attributes")
        if saved_attrs is not None and list(saved_attrs) != self.attributes:
            raise ConfigError(f"resume: checkpoint attributes {list(saved_attrs)} differ from the dataset's {self.attributes}")
        try:
            self.G.load_state_dict(st["G"])
            self.D.load_state_dict(st["D"])
            self.G_ema.load_state_dict(st["G_ema"])
        except RuntimeError as exc:
            raise ConfigError(f"resume: model config differs from the checkpoint's ({str(exc).splitlines()[0]})") from None
        self.opt_G.load_state_dict(st["opt_G"])
        self.opt_D.load_state_dict(st["opt_D"])
        if self.PC is not None and self.opt_PC is not None and "PC" in st:  # else: the critic starts fresh
            self.PC.load_state_dict(st["PC"])
            self.opt_PC.load_state_dict(st["opt_PC"])
        self.start_step = int(st["step"])
        self.g_steps = int(st.get("g_steps", 0))
        rng = st["rng"]
        ranks = st.get("rng_ranks")
        if ranks is not None:  # data-parallel run: each rank resumes its own streams
            if len(ranks) != self.dist.world:
                raise ConfigError(f"resume: checkpoint was written by {len(ranks)} processes, this run has {self.dist.world}")
            rng = ranks[self.dist.rank]
        elif self.dist.world > 1:
            raise ConfigError(f"resume: checkpoint was written by 1 process, this run has {self.dist.world}")
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.sampler.load_state_dict(rng["sampler"])
        if self.pair_sampler is not None and "pair_sampler" in rng:
            self.pair_sampler.load_state_dict(rng["pair_sampler"])
        self.label_gen.set_state(rng["labels"])
        if self.scaler_G is not None and "scaler_G" in st:
            self.scaler_G.load_state_dict(st["scaler_G"])
            self.scaler_D.load_state_dict(st["scaler_D"])

    def _rng_state(self) -> dict[str, Any]:
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "sampler": self.sampler.state_dict(),
            "labels": self.label_gen.get_state(),
        }
        if self.pair_sampler is not None:
            rng["pair_sampler"] = self.pair_sampler.state_dict()
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def _state(self, step: int, rng_ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        rng = self._rng_state()
        st: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.cfg),
            "attributes": list(self.attributes),
            "step": step,
            "g_steps": self.g_steps,
            "G": _contiguous_state(self.G),
            "D": _contiguous_state(self.D),
            "G_ema": _contiguous_state(self.G_ema),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "rng": rng,
        }
        if self.PC is not None and self.opt_PC is not None:
            st["PC"] = _contiguous_state(self.PC)
            st["opt_PC"] = self.opt_PC.state_dict()
        if rng_ranks is not None:
            st["rng_ranks"] = rng_ranks
        if self.scaler_G is not None:
            st["scaler_G"] = self.scaler_G.state_dict()
            st["scaler_D"] = self.scaler_D.state_dict()
        return st

    def card(self, step: int) -> dict[str, Any]:
        cfg = self.cfg
        card = {
            "format": BUNDLE_FORMAT,
            "name": cfg.model.name or self.run_dir.name,
            "attributes": list(self.attributes),
            "groups": [list(g) for g in self.ds.groups],
            "image_size": cfg.data.image_size,
            "generator": config_dict(self.g_cfg),
            "discriminator": config_dict(self.d_cfg),
            "template": {"name": "celeba", "points": _template_points()},
            "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
            "instance_norm": "per_image",
            "default_source": {a: int(v) for a, v in zip(self.attributes, self.ds.default_source())},
            "license": "unknown",
            "provenance": {
                "trainer": "starcli.train",
                "dataset": str(cfg.data.path),
                "num_images": len(self.ds),
                "num_pairs": self.ds.num_pairs,
                "step": step,
                "iters": cfg.optim.iters,
                "generator_weights": "ema" if cfg.optim.ema_decay > 0 else "raw",
                "init": cfg.run.init or None,
            },
            "quality": {},
            "recipe": asdict(cfg),
            "description": f"StarGAN trained by starcli on {Path(cfg.data.path).name} ({len(self.ds)} images), step {step}",
        }
        try:  # validate against the card schema when starcli.spec is available
            from starcli.spec import ModelSpec

            card = ModelSpec.from_card(card).to_card()
        except ImportError:
            pass
        return card

    def save_checkpoint(self, step: int, rng_ranks: list[dict[str, Any]] | None = None) -> Path:
        ckpt_root = self.run_dir / "checkpoints"
        ckpt_root.mkdir(parents=True, exist_ok=True)
        final = ckpt_root / f"step_{step:07d}"
        tmp = ckpt_root / f".tmp-step_{step:07d}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        card = self.card(step)
        g_state = _contiguous_state(self.G_ema)
        d_state = _contiguous_state(self.D)
        _write_bundle_files(tmp, card, g_state, d_state, atomic=False)
        torch.save(self._state(step, rng_ranks), tmp / "train_state.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_bundle_files(self.run_dir, card, g_state, d_state, atomic=True)
        kept = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
        for old in kept[: -self.cfg.run.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    # -------------------------------------------------------------- steps
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _fmt(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _batch(self) -> tuple[Tensor, Tensor]:
        idx = self.sampler.next(self.cfg.run.batch_size)
        x = _to_unit(self.store.get(idx), self.device)
        if self.augment is not None:
            x = self.augment(x)
        return self._fmt(x.mul_(2).sub_(1)), self.ds.labels[idx].to(self.device)

    def _pair_batch(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        assert self.pair_sampler is not None and self.pair_store is not None and self.ds.pair_source is not None
        b = self.cfg.run.pair_batch_size or self.cfg.run.batch_size
        idx = self.pair_sampler.next(b)
        src_idx = self.ds.pair_source[idx]
        xs = _to_unit(self.store.get(src_idx), self.device)
        xt = _to_unit(self.pair_store.get(idx), self.device)
        if self.augment is not None:
            xs, xt = self.augment(xs, xt)
        xs = self._fmt(xs.mul_(2).sub_(1))
        xt = self._fmt(xt.mul_(2).sub_(1))
        assert self.ds.pair_labels is not None
        return xs, xt, self.ds.labels[src_idx].to(self.device), self.ds.pair_labels[idx].to(self.device)

    def _backward_step(self, loss: Tensor, opt: torch.optim.Optimizer, module: nn.Module, scaler: Any) -> None:
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            self.dist.average_grads(module)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            self.dist.average_grads(module)
            opt.step()

    def d_step(self, x_real: Tensor, label_org: Tensor, c_trg: Tensor) -> dict[str, float]:
        lc = self.cfg.loss
        b = x_real.size(0)
        with torch.no_grad(), self._autocast():
            x_fake = self.G(x_real, c_trg)
        x_fake = self._fmt(x_fake.float())
        with self._autocast():
            out_src, out_cls = self.D(torch.cat([x_real, x_fake]))
        src_real, src_fake = out_src.float().split(b)
        loss_real = -src_real.mean()
        loss_fake = src_fake.mean()
        loss_cls = classification_loss(out_cls[:b], label_org)
        alpha = torch.rand(b, 1, 1, 1, generator=self.label_gen).to(self.device)
        if lc.gp_precision == "fp32":
            loss_gp = gradient_penalty(self.D, x_real, x_fake, alpha, fp32=True)
        else:
            with self._autocast():
                loss_gp = gradient_penalty(self.D, x_real, x_fake, alpha, fp32=False)
        loss = loss_real + loss_fake + lc.lambda_cls * loss_cls + lc.lambda_gp * loss_gp
        self.opt_D.zero_grad(set_to_none=True)
        self._backward_step(loss, self.opt_D, self.D, self.scaler_D)
        return {
            "D/real": loss_real.item(),
            "D/fake": loss_fake.item(),
            "D/cls": loss_cls.item(),
            "D/gp": loss_gp.item(),
        }

    def g_step(self, x_real: Tensor, label_org: Tensor, c_trg: Tensor) -> dict[str, float]:
        lc = self.cfg.loss
        b = x_real.size(0)
        pair = self._pair_batch() if (self.pair_sampler is not None and lc.lambda_pair > 0) else None
        self.D.requires_grad_(False)
        try:
            with self._autocast():
                if pair is not None:
                    xs, xt, _, cp = pair
                    out = self.G(torch.cat([x_real, xs]), torch.cat([c_trg, cp]))
                    x_fake, x_pair = out[:b], out[b:]
                else:
                    x_fake = self.G(x_real, c_trg)
                out_src, out_cls = self.D(x_fake)
                x_rec = self.G(x_fake, label_org)
            loss_fake = -out_src.float().mean()
            loss_cls = classification_loss(out_cls, c_trg)
            loss_rec = (x_real - x_rec.float()).abs().mean()
            loss = lc.lambda_adv * loss_fake + lc.lambda_cls * loss_cls + lc.lambda_rec * loss_rec
            logs = {"G/fake": loss_fake.item(), "G/cls": loss_cls.item(), "G/rec": loss_rec.item()}
            if pair is not None:
                loss_pair = paired_l1(x_pair, pair[1], pair[0], weight=lc.pair_weight, threshold=lc.pair_threshold)
                loss = loss + lc.lambda_pair * loss_pair
                logs["G/pair"] = loss_pair.item()
                region_losses = (  # (log name, weight, loss over each pair's changed pixels)
                    ("region", lc.lambda_pair_region, lambda: paired_region_l1(x_pair, pair[1], pair[0], threshold=lc.pair_threshold)),
                    ("shift", lc.lambda_pair_shift, lambda: paired_shift_l1(x_pair, pair[1], pair[0], threshold=lc.pair_threshold, radius=lc.pair_shift_radius)),
                    ("texture", lc.lambda_pair_texture, lambda: paired_texture_l1(x_pair, pair[1], pair[0], threshold=lc.pair_threshold)),
                )
                for name, weight, term in region_losses:
                    if weight > 0:
                        value = term()
                        loss = loss + weight * value
                        logs[f"G/pair_{name}"] = value.item()
                if self.PC is not None:
                    changed = _changed_pixels(pair[0], pair[1], lc.pair_threshold, grow=2)
                    self.PC.requires_grad_(False)
                    value = pair_critic_g_loss(self.PC(pair[0], x_pair), changed)
                    loss = loss + lc.lambda_pair_critic * value
                    logs["G/pair_critic"] = value.item()
            self.opt_G.zero_grad(set_to_none=True)
            self._backward_step(loss, self.opt_G, self.G, self.scaler_G)
        finally:
            self.D.requires_grad_(True)
            if self.PC is not None:
                self.PC.requires_grad_(True)
        if self.PC is not None and pair is not None:
            logs["D/pair_critic"] = self._pair_critic_step(pair[0], pair[1], x_pair.detach(), changed)
        self.g_steps += 1
        self.dist.broadcast_buffers(self.G)
        self._update_ema()
        return logs

    @property
    def _pc_lr(self) -> float:
        return self.cfg.loss.pair_critic_lr or self.cfg.optim.d_lr

    def _pair_critic_step(self, source: Tensor, target: Tensor, fake: Tensor, changed: Tensor) -> float:
        """One update of the pair patch critic on a pair batch's true targets and G's edits."""
        assert self.PC is not None and self.opt_PC is not None
        loss = pair_critic_loss(self.PC(source, target), self.PC(source, fake), changed)
        self.opt_PC.zero_grad(set_to_none=True)
        self._backward_step(loss, self.opt_PC, self.PC, None)
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.cfg.optim.ema_decay
        decay = min(decay, (1.0 + self.g_steps) / (10.0 + self.g_steps))  # warm-up
        ema_p = list(self.G_ema.parameters())
        p = [q.detach() for q in self.G.parameters()]
        torch._foreach_lerp_(ema_p, p, 1.0 - decay)
        for be, bg in zip(self.G_ema.buffers(), self.G.buffers()):
            be.copy_(bg)

    # -------------------------------------------------------------- loop
    def _log(self, text: str) -> None:
        if not self.dist.main:
            return
        with open(self.run_dir / "train.log", "a") as fh:
            fh.write(text + "\n")

    def _open_tensorboard(self) -> None:
        if not (self.cfg.log.tensorboard and self.dist.main):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:
            return
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.start_step + 1)

    def run(self, on_step: Callable[[StepInfo], None] | None) -> TrainSummary:
        cfg = self.cfg
        iters = cfg.optim.iters
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.toml").write_text(config_to_toml(cfg))
        self.dist.barrier()
        self._open_tensorboard()
        self._log(
            f"# start step {self.start_step} / {iters}: {len(self.ds)} images, {self.ds.num_pairs} pairs, "
            f"attributes {','.join(self.attributes)}, device {self.device}, precision {self.precision}, "
            f"channels_last {self.channels_last}, world {self.dist.world}"
        )
        t0 = time.perf_counter()
        smoothed = 0.0
        last_ckpt: Path | None = None
        samples: list[Path] = []
        step = self.start_step
        avg: dict[str, float] = {}
        stop = iters if cfg.run.max_steps <= 0 else min(iters, self.start_step + cfg.run.max_steps)
        for step in range(self.start_step + 1, stop + 1):
            ts = time.perf_counter()
            factor = lr_factor(step, iters, cfg.optim.decay_iters)
            for group in self.opt_G.param_groups:
                group["lr"] = cfg.optim.g_lr * factor
            for group in self.opt_D.param_groups:
                group["lr"] = cfg.optim.d_lr * factor
            for group in self.opt_PC.param_groups if self.opt_PC is not None else []:
                group["lr"] = self._pc_lr * factor
            self.G.train()
            self.D.train()
            x_real, label_org = self._batch()
            c_trg = sample_target_labels(label_org.cpu(), self.groups, self.label_gen).to(self.device)
            self.losses.update(self.d_step(x_real, label_org, c_trg))
            if step % cfg.optim.n_critic == 0:
                self.losses.update(self.g_step(x_real, label_org, c_trg))
            for k, v in self.losses.items():
                avg[k] = v if k not in avg else 0.9 * avg[k] + 0.1 * v
            dt = time.perf_counter() - ts
            smoothed = dt if step == self.start_step + 1 else 0.95 * smoothed + 0.05 * dt
            event = ""
            if self.dist.main and (step % cfg.log.sample_every == 0 or step == iters) and cfg.log.sample_count > 0:
                path = self.run_dir / "samples" / f"step_{step:07d}.png"
                self.G_ema.eval()
                _save_grid(path, self.G_ema, self.sample_x, self.sample_c, self.attributes, self.groups)
                samples.append(path)
                event = "sample"
            if cfg.run.max_minutes > 0 and step < stop:
                over = time.perf_counter() - t0 > 60.0 * cfg.run.max_minutes
                if self.dist.all_true(over):
                    stop = step  # time budget spent: checkpoint now, resume later
            if step % cfg.run.save_every == 0 or step == stop:
                rng_ranks = self.dist.gather(self._rng_state())
                if self.dist.main:
                    last_ckpt = self.save_checkpoint(step, rng_ranks)
                self.dist.barrier()
                event = "checkpoint"
            if step % cfg.log.log_every == 0 or step == stop:
                self._log(
                    f"step {step}/{iters} lr {cfg.optim.g_lr * factor:.3g} {smoothed:.3f}s/it "
                    + " ".join(f"{k} {v:.4f}" for k, v in sorted(avg.items()))
                )
                if self.writer is not None:
                    for k, v in avg.items():
                        self.writer.add_scalar(k, v, step)
                    self.writer.add_scalar("lr", cfg.optim.g_lr * factor, step)
                    self.writer.add_scalar("sec_per_iter", smoothed, step)
            if on_step is not None:
                on_step(StepInfo(step, iters, dict(self.losses), cfg.optim.g_lr * factor, smoothed, event, self.start_step))
            if step >= stop:
                break
        seconds = time.perf_counter() - t0
        done = step - self.start_step
        if self.writer is not None:
            self.writer.close()
        if done == 0 and self.dist.main:  # nothing to do: make sure a bundle exists
            last_ckpt = find_checkpoint(self.run_dir) if (self.run_dir / "checkpoints").is_dir() else self.save_checkpoint(step)
        self._log(f"# end step {step}: {seconds:.1f}s, {seconds / max(done, 1):.3f}s/it")
        self.store.close()
        if self.pair_store is not None:
            self.pair_store.close()
        self.dist.close()
        return TrainSummary(
            run_dir=self.run_dir,
            start_step=self.start_step,
            step=step,
            iters=iters,
            seconds=seconds,
            sec_per_iter=seconds / max(done, 1),
            losses=avg,
            checkpoint=last_ckpt,
            bundle=self.run_dir,
            device=str(self.device),
            precision=self.precision,
            num_images=len(self.ds),
            num_pairs=self.ds.num_pairs,
            attributes=list(self.attributes),
            samples=samples,
        )


def train(cfg: TrainConfig, on_step: Callable[[StepInfo], None] | None = None) -> TrainSummary:
    """Train (or resume) a StarGAN model as described by ``cfg``; return a :class:`TrainSummary`.

    ``on_step(StepInfo)`` is called after every iteration (rank 0 and others alike). Raises
    :class:`StarcliError` subclasses for bad configs and datasets. Never prints.
    """
    validate_config(cfg)
    trainer = _Trainer(cfg)
    return trainer.run(on_step)


def resume_config(run: str | Path) -> dict[str, Any]:
    """The config dict stored in a run's (or checkpoint's) newest ``train_state.pt``."""
    state = load_checkpoint_state(run)
    cfg = state.get("config")
    if not isinstance(cfg, dict):
        raise ModelError(f"{run}: checkpoint has no config")
    return cfg

