"""StarGAN v1 generator and discriminator (Choi et al., CVPR 2018).

The modules follow the paper's architecture and keep the parameter names, shapes, zero padding
and InstanceNorm settings of the reference implementation, so reference checkpoints load with
``strict=True``.  This module does no I/O and picks no device.

Conventions: images are ``(N, 3, H, W)`` float in ``[-1, 1]``; labels are ``(N, C)`` float 0/1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GeneratorConfig:
    """Shape of a generator: first conv width, number of labels, residual blocks, and the width of
    the optional full-resolution detail head (0: none, the official architecture)."""

    conv_dim: int = 64
    c_dim: int = 5
    repeat_num: int = 6
    detail_dim: int = 0


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Shape of a discriminator: input side in pixels, first conv width, labels, strided convs."""

    image_size: int = 128
    conv_dim: int = 64
    c_dim: int = 5
    repeat_num: int = 6


class InstanceNorm(nn.InstanceNorm2d):
    """``InstanceNorm2d(affine=True, track_running_stats=True)`` as in the reference code.

    The reference test script never calls ``.eval()``, so its released behaviour normalises each
    image by its own statistics.  In eval mode this layer does the same *without* touching the
    running buffers (``per_image_stats=True``, the default); set it to False to use the stored
    running statistics instead.  Train mode is plain ``InstanceNorm2d`` (buffers update with
    momentum 0.1).
    """

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=True, track_running_stats=True)
        self.per_image_stats = True

    def forward(self, x: Tensor) -> Tensor:
        if self.training or not self.per_image_stats:
            return super().forward(x)
        return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class ResidualBlock(nn.Module):
    """Two 3x3 conv + InstanceNorm layers with an identity shortcut; keeps (N, dim, H, W)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim_in, dim_out, kernel_size=3, stride=1, padding=1, bias=False),
            InstanceNorm(dim_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim_out, dim_out, kernel_size=3, stride=1, padding=1, bias=False),
            InstanceNorm(dim_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.main(x)


class Generator(nn.Module):
    """Image + target labels -> translated image.

    Encoder (7x7 conv, two stride-2 4x4 convs), ``repeat_num`` residual blocks at 1/4
    resolution, decoder (two stride-2 4x4 transposed convs, 7x7 conv, tanh).

    ``forward(x, c)``: x ``(N, 3, H, W)`` in ``[-1, 1]`` with H, W multiples of 4; c ``(N, C)``
    0/1 floats.  Returns ``(N, 3, H, W)`` in ``[-1, 1]``.

    With ``detail_dim > 0`` a detail head (three 3x3 convs, ``detail_dim`` wide) sees the decoder's
    last features together with the encoder's first ones, both at full resolution, and adds its
    output before the tanh: a skip path that gives the output the input's fine texture and edges,
    which the 1/4-resolution bottleneck blurs. Its last conv starts at zero, so a generator grown
    from one without the head starts from that generator's exact output
    (:func:`load_grown_generator`).

    >>> g = Generator(GeneratorConfig(conv_dim=8, c_dim=2, repeat_num=1)).eval()
    >>> g(torch.zeros(1, 3, 16, 16), torch.tensor([[1.0, 0.0]])).shape
    torch.Size([1, 3, 16, 16])
    """

    def __init__(self, config: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        self.config = config
        dim = config.conv_dim
        layers: list[nn.Module] = [
            nn.Conv2d(3 + config.c_dim, dim, kernel_size=7, stride=1, padding=3, bias=False),
            InstanceNorm(dim),
            nn.ReLU(inplace=True),
        ]
        for _ in range(2):  # down-sampling
            layers += [
                nn.Conv2d(dim, dim * 2, kernel_size=4, stride=2, padding=1, bias=False),
                InstanceNorm(dim * 2),
                nn.ReLU(inplace=True),
            ]
            dim *= 2
        layers += [ResidualBlock(dim, dim) for _ in range(config.repeat_num)]  # bottleneck
        for _ in range(2):  # up-sampling
            layers += [
                nn.ConvTranspose2d(dim, dim // 2, kernel_size=4, stride=2, padding=1, bias=False),
                InstanceNorm(dim // 2),
                nn.ReLU(inplace=True),
            ]
            dim //= 2
        layers += [nn.Conv2d(dim, 3, kernel_size=7, stride=1, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.detail: nn.Sequential | None = None
        if config.detail_dim > 0:
            d = config.detail_dim
            self.detail = nn.Sequential(
                nn.Conv2d(2 * config.conv_dim, d, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(d, d, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(d, 3, kernel_size=3, padding=1),
            )
            nn.init.zeros_(self.detail[-1].weight)
            nn.init.zeros_(self.detail[-1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        c = c.to(x.dtype).view(c.size(0), c.size(1), 1, 1).expand(-1, -1, x.size(2), x.size(3))
        inp = torch.cat([x, c], dim=1)
        if self.detail is None:
            return self.main(inp)
        first = self.main[:3](inp)  # encoder features at full resolution (N, conv_dim, H, W)
        last = self.main[3:-2](first)  # decoder features at full resolution (N, conv_dim, H, W)
        return torch.tanh(self.main[-2](last) + self.detail(torch.cat([last, first], dim=1)))


def load_grown_generator(generator: Generator, state: Mapping[str, Tensor]) -> None:
    """Load ``state`` into ``generator``; when the state has no detail head and the generator has
    one, the head keeps its initialisation (zero output: the result equals the source generator's).
    Any other mismatch raises ``RuntimeError`` as ``load_state_dict`` does."""
    missing = [k for k in generator.state_dict() if k not in state]
    grow = bool(missing) and all(k.startswith("detail.") for k in missing) and not any(k.startswith("detail.") for k in state)
    result = generator.load_state_dict(state, strict=not grow)
    if grow and result.unexpected_keys:
        raise RuntimeError(f"Unexpected key(s) in state_dict: {', '.join(result.unexpected_keys)}")


class Discriminator(nn.Module):
    """PatchGAN critic with an auxiliary attribute classifier.

    ``forward(x)``: x ``(N, 3, S, S)`` in ``[-1, 1]`` with ``S == config.image_size``.  Returns
    ``(out_src, out_cls)``: real/fake patch scores ``(N, 1, S/2^r, S/2^r)`` and attribute logits
    ``(N, C)``.
    """

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()):
        super().__init__()
        self.config = config
        dim = config.conv_dim
        layers: list[nn.Module] = [nn.Conv2d(3, dim, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.01)]
        for _ in range(1, config.repeat_num):
            layers += [nn.Conv2d(dim, dim * 2, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            dim *= 2
        self.main = nn.Sequential(*layers)
        final_side = config.image_size // 2**config.repeat_num
        self.conv1 = nn.Conv2d(dim, 1, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(dim, config.c_dim, kernel_size=final_side, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.main(x)
        out_cls = self.conv2(h)
        return self.conv1(h), out_cls.view(out_cls.size(0), out_cls.size(1))


# ----------------------------------------------------------------------------------------------
# Architecture from a state dict
# ----------------------------------------------------------------------------------------------


def infer_generator_config(state: Mapping[str, Tensor]) -> GeneratorConfig:
    """Read ``conv_dim``, ``c_dim``, ``repeat_num`` and ``detail_dim`` off a generator state dict's shapes.

    Raises ``ValueError`` if the keys are not those of a StarGAN generator.
    """
    try:
        first = state["main.0.weight"]  # (conv_dim, 3 + c_dim, 7, 7)
    except KeyError:
        raise ValueError("no 'main.0.weight': not a StarGAN generator state dict") from None
    if first.dim() != 4 or tuple(first.shape[2:]) != (7, 7) or first.shape[1] <= 3:
        raise ValueError(f"main.0.weight has shape {tuple(first.shape)}, expected (D, 3+C, 7, 7)")
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("main.") and ".main." in k}
    detail = state.get("detail.0.weight")  # (detail_dim, 2 * conv_dim, 3, 3) when there is a head
    return GeneratorConfig(conv_dim=int(first.shape[0]), c_dim=int(first.shape[1]) - 3, repeat_num=len(blocks),
                           detail_dim=0 if detail is None else int(detail.shape[0]))


def infer_discriminator_config(state: Mapping[str, Tensor]) -> DiscriminatorConfig:
    """Read the discriminator shape (image side, width, labels, depth) off a state dict."""
    try:
        first, cls = state["main.0.weight"], state["conv2.weight"]  # (D,3,4,4), (C, D*2^(r-1), k, k)
    except KeyError:
        raise ValueError("no 'main.0.weight'/'conv2.weight': not a StarGAN discriminator state dict") from None
    convs = [k for k in state if k.startswith("main.") and k.endswith(".weight")]
    repeat_num = len(convs)
    image_size = int(cls.shape[-1]) * 2**repeat_num
    return DiscriminatorConfig(image_size=image_size, conv_dim=int(first.shape[0]), c_dim=int(cls.shape[0]), repeat_num=repeat_num)


def complete_state_dict(module: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return ``state`` with the ``num_batches_tracked`` buffers that PyTorch 0.3 files lack.

    Any other missing or unexpected key is left for ``load_state_dict(strict=True)`` to report.
    """
    completed = dict(state)
    for name, buffer in module.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in completed:
            completed[name] = torch.zeros_like(buffer)
    return completed


def config_dict(config: GeneratorConfig | DiscriminatorConfig) -> dict[str, int]:
    """Plain dict of a config dataclass (for model cards and checkpoints). A generator without a
    detail head leaves ``detail_dim`` out, so its card reads as before the head existed."""
    d = asdict(config)
    if d.get("detail_dim", None) == 0:
        del d["detail_dim"]
    return d
