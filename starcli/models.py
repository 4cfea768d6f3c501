"""Models: bundles on disk, the user's model store, the registry of downloadable weights.

``load(name_or_path)`` accepts a bundle folder, a training run folder, a registered or installed
model name, or an official ``<iter>-G.ckpt`` file (with ``attributes=``).  Nothing here unpickles
arbitrary objects: bundles are safetensors + JSON, official checkpoints are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import Tensor, nn

from .errors import ModelError
from .spec import ModelSpec, default_groups
from .stargan import (
    Discriminator,
    Generator,
    complete_state_dict,
    infer_discriminator_config,
    infer_generator_config,
)

CARD_NAME = "model.json"
GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
#: The model used when neither ``--model`` nor config names one: embedded in the package.
DEFAULT_MODEL = "synth-64"
EMBEDDED_DIR = Path(__file__).parent / "assets" / "models"
CELEBA_ATTRIBUTES = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]


@dataclass
class StarganModel:
    """A loaded model: card, generator (eval mode, per-image InstanceNorm) and optional critic.

    ``generator(x, c)``: x ``(N, 3, S, S)`` in ``[-1, 1]``, c ``(N, C)`` 0/1 -> ``(N, 3, S, S)``
    in ``[-1, 1]``.  ``discriminator(x) -> (out_src, out_cls)`` or None.
    """

    spec: ModelSpec
    generator: Generator
    discriminator: Discriminator | None = None
    source: Path | None = None

    @property
    def attributes(self) -> list[str]:
        return self.spec.attributes


@dataclass(frozen=True)
class RegistryEntry:
    """A downloadable model: an archive URL holding official ``<iter>-G.ckpt`` / ``-D.ckpt``."""

    name: str
    url: str
    attributes: list[str]
    image_size: int
    description: str
    license: str
    sha256: str | None = None  # of the archive, when known
    member_prefix: str = "200000"


#: URLs from the official StarGAN download script (download.sh, yunjey/stargan).
REGISTRY: dict[str, RegistryEntry] = {
    "celeba-128": RegistryEntry(
        name="celeba-128",
        url="https://www.dropbox.com/s/7e966qq0nlxwte4/celeba-128x128-5attrs.zip?dl=1",
        attributes=CELEBA_ATTRIBUTES,
        image_size=128,
        description="Official StarGAN v1 trained on CelebA, 128x128, 200k iterations",
        license="MIT (StarGAN code and released weights, yunjey/stargan); CelebA is for non-commercial research",
    ),
    "celeba-256": RegistryEntry(
        name="celeba-256",
        url="https://www.dropbox.com/s/zdq6roqf63m0v5f/celeba-256x256-5attrs.zip?dl=1",
        attributes=CELEBA_ATTRIBUTES,
        image_size=256,
        description="Official StarGAN v1 trained on CelebA, 256x256, 200k iterations",
        license="MIT (StarGAN code and released weights, yunjey/stargan); CelebA is for non-commercial research",
    ),
}


# ----------------------------------------------------------------------------------------------
# Locations
# ----------------------------------------------------------------------------------------------


def starcli_home() -> Path:
    """``$STARCLI_HOME`` if set, else the user data dir (e.g. ``~/.local/share/starcli``)."""
    env = os.environ.get("STARCLI_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("starcli"))


def store_dir() -> Path:
    """Folder of the user's installed model bundles."""
    return starcli_home() / "models"


def is_bundle(path: Path) -> bool:
    return (path / CARD_NAME).is_file()


@dataclass
class ModelInfo:
    """One entry of ``starcli models list``."""

    name: str
    location: str  # "embedded", "installed" or "registry"
    path: Path | None
    spec: ModelSpec | None
    description: str = ""
    is_default: bool = False
    error: str | None = None


def list_models() -> list[ModelInfo]:
    """Embedded bundles, installed bundles and registry entries (not yet downloaded)."""
    infos: list[ModelInfo] = []
    seen: set[str] = set()
    for location, root in (("embedded", EMBEDDED_DIR), ("installed", store_dir())):
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if is_bundle(p)):
            try:
                spec = ModelSpec.load(folder / CARD_NAME)
                infos.append(ModelInfo(folder.name, location, folder, spec, spec.description))
            except ModelError as exc:
                infos.append(ModelInfo(folder.name, location, folder, None, error=str(exc)))
            seen.add(folder.name)
    for entry in REGISTRY.values():
        if entry.name not in seen:
            infos.append(ModelInfo(entry.name, "registry", None, None, entry.description + " (run: starcli models pull " + entry.name + ")"))
    default = default_model_name()
    for info in infos:
        info.is_default = info.name == default
    return infos


def default_model_name() -> str:
    """``$STARCLI_MODEL`` if set, else :data:`DEFAULT_MODEL` (the embedded model)."""
    return os.environ.get("STARCLI_MODEL") or DEFAULT_MODEL


def resolve(name_or_path: str | Path) -> Path:
    """Find a model: an existing path, else an installed or embedded name.

    Raises :class:`ModelError` listing the known names, and says to ``pull`` registry models.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    name = str(name_or_path)
    for root in (store_dir(), EMBEDDED_DIR):
        if is_bundle(root / name):
            return root / name
    known = sorted({m.name for m in list_models()})
    if name in REGISTRY:
        raise ModelError(f"model '{name}' is not downloaded yet: run `starcli models pull {name}`")
    raise ModelError(f"unknown model '{name}': not a path and not one of {', '.join(known)}")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load(name_or_path: str | Path | None = None, attributes: list[str] | None = None, *, with_discriminator: bool = True) -> StarganModel:
    """Load a model by name or path (``None``: the default model).

    - a bundle folder (``model.json`` + safetensors), e.g. a training run folder;
    - an installed, embedded or pulled model name (``starcli models list``);
    - an official ``<iter>-G.ckpt``: ``attributes`` gives the label names in order; a sibling
      ``<iter>-D.ckpt`` is loaded too when present.

    >>> model = load()                      # doctest: +SKIP
    >>> model.spec.attributes[:2]           # doctest: +SKIP
    ['Black_Hair', 'Blond_Hair']
    """
    path = resolve(name_or_path if name_or_path is not None else default_model_name())
    if path.is_dir():
        if not is_bundle(path):
            raise ModelError(f"{path}: folder has no {CARD_NAME}: not a starcli model bundle or run folder")
        model = load_bundle(path, with_discriminator=with_discriminator)
        if attributes is not None and list(attributes) != model.spec.attributes:
            raise ModelError(f"{path}: model attributes are {model.spec.attributes}, not {list(attributes)}")
        return model
    if attributes is None:
        raise ModelError(f"{path}: an official checkpoint has no attribute names: pass attributes (--attrs A,B,...) in label order")
    return load_official(path, attributes, with_discriminator=with_discriminator)


def _read_checkpoint(path: Path) -> dict[str, Tensor]:
    """Read an official ``.ckpt`` (plain state dict) safely; one-line errors naming the file."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise ModelError(f"{path}: empty file (0 bytes), not a checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "zip" in reason.lower() or "central directory" in reason.lower() or isinstance(exc, EOFError):
            reason = f"truncated or not a PyTorch checkpoint ({reason})"
        raise ModelError(f"{path}: cannot load checkpoint: {reason}") from None
    except Exception as exc:  # pickle errors of non-checkpoints come in many types
        raise ModelError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:120]})") from None
    if isinstance(state, Mapping) and "G" in state and isinstance(state["G"], Mapping):
        state = state["G"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a state dict of tensors (found {type(state).__name__})")
    return {k: v for k, v in state.items()}


def _load_strict(module: nn.Module, state: Mapping[str, Tensor], path: Path | str) -> None:
    """``load_state_dict(strict=True)`` with float32 casting and a one-line error."""
    state = complete_state_dict(module, {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0]
        raise ModelError(f"{path}: weights do not fit the architecture: {detail[:300]}") from None


def _build(cls: type, infer: Callable[[Mapping[str, Tensor]], object], state: Mapping[str, Tensor], path: Path | str) -> nn.Module:
    """Infer the architecture from ``state``'s shapes, build ``cls`` and load strictly (eval,
    no gradients); one-line :class:`ModelError` naming ``path`` on any mismatch."""
    try:
        config = infer(state)
    except ValueError as exc:
        raise ModelError(f"{path}: {exc}") from None
    module = cls(config)
    _load_strict(module, state, path)
    return module.eval().requires_grad_(False)


def build_generator(state: Mapping[str, Tensor], path: Path | str) -> Generator:
    return _build(Generator, infer_generator_config, state, path)


def build_discriminator(state: Mapping[str, Tensor], path: Path | str) -> Discriminator:
    return _build(Discriminator, infer_discriminator_config, state, path)


def load_official(g_path: Path, attributes: list[str], *, name: str | None = None, with_discriminator: bool = True) -> StarganModel:
    """Load an official ``<iter>-G.ckpt`` (and its sibling ``<iter>-D.ckpt`` if present)."""
    g_path = Path(g_path)
    generator = build_generator(_read_checkpoint(g_path), g_path)
    discriminator = None
    d_path = g_path.with_name(g_path.name.replace("-G.", "-D.")) if "-G." in g_path.name else None
    if with_discriminator and d_path is not None and d_path.is_file():
        discriminator = build_discriminator(_read_checkpoint(d_path), d_path)
        if discriminator.config.c_dim != generator.config.c_dim:
            raise ModelError(f"{d_path}: discriminator has {discriminator.config.c_dim} labels, generator {generator.config.c_dim}")
    if len(attributes) != generator.config.c_dim:
        raise ModelError(f"{g_path}: generator has {generator.config.c_dim} labels but {len(attributes)} attribute names were given ({', '.join(attributes)})")
    image_size = discriminator.config.image_size if discriminator is not None else 128
    spec = ModelSpec(
        name=name or g_path.stem.replace("-G", ""),
        attributes=list(attributes),
        image_size=image_size,
        generator=generator.config,
        discriminator=discriminator.config if discriminator is not None else None,
        groups=default_groups(list(attributes)),
        default_source={a: 0 for a in attributes},
        provenance={"source": str(g_path.name), "kind": "official StarGAN v1 checkpoint"},
        license="see the checkpoint's origin",
    )
    return StarganModel(spec, generator, discriminator, g_path)


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: cannot read weights ({str(exc).splitlines()[0][:200]})") from None


def load_bundle(folder: Path, *, with_discriminator: bool = True) -> StarganModel:
    """Load a bundle folder written by :func:`save_bundle`."""
    spec = ModelSpec.load(folder / CARD_NAME)
    g_file = folder / GENERATOR_FILE
    if not g_file.is_file():
        raise ModelError(f"{folder}: bundle has no {GENERATOR_FILE}")
    generator = build_generator(_read_safetensors(g_file), g_file)
    if generator.config != spec.generator:
        raise ModelError(f"{g_file}: weights are {generator.config}, card says {spec.generator}")
    discriminator = None
    d_file = folder / DISCRIMINATOR_FILE
    if with_discriminator and d_file.is_file():
        discriminator = build_discriminator(_read_safetensors(d_file), d_file)
    return StarganModel(spec, generator, discriminator, folder)


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


def _state_for_file(module: nn.Module, dtype: torch.dtype | None) -> dict[str, Tensor]:
    state = {}
    for key, value in module.state_dict().items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        state[key] = value.contiguous()
    return state


def save_bundle(model: StarganModel, folder: Path, *, dtype: torch.dtype | None = None, overwrite: bool = False) -> Path:
    """Write ``model`` as a bundle folder atomically (temp folder, then rename).

    ``dtype=torch.float16`` halves the size (weights are cast back to float32 on load).
    """
    from safetensors.torch import save

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise ModelError(f"{folder}: already exists (use overwrite / --force to replace it)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # a plain mkdir and open() (not mkdtemp / safetensors' save_file, which make 0700 / 0600):
    # the bundle gets the permissions of any folder the user creates
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        (tmp / GENERATOR_FILE).write_bytes(save(_state_for_file(model.generator, dtype), metadata={"format": "pt"}))
        if model.discriminator is not None:
            (tmp / DISCRIMINATOR_FILE).write_bytes(save(_state_for_file(model.discriminator, dtype), metadata={"format": "pt"}))
        spec = replace(model.spec, discriminator=model.discriminator.config if model.discriminator is not None else None)
        spec.save(tmp / CARD_NAME)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def import_official(g_path: Path, attributes: list[str], name: str, *, image_size: int | None = None, overwrite: bool = False, provenance: dict | None = None, license: str | None = None, description: str = "") -> Path:
    """Turn an official checkpoint into a bundle in the user's store; returns its folder."""
    _check_name(name)
    model = load_official(Path(g_path), attributes, name=name)
    spec = model.spec
    if image_size is not None:
        spec.image_size = image_size
    if provenance:
        spec.provenance.update(provenance)
    if license:
        spec.license = license
    spec.description = description or spec.description
    return save_bundle(model, store_dir() / name, overwrite=overwrite)


def export_model(
    name_or_path: str | Path,
    dest: Path,
    *,
    official: bool = False,
    dtype: torch.dtype | None = None,
    name: str | None = None,
    card_updates: Mapping[str, object] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Copy a model out: a bundle folder, or (``official=True``) ``<name>-G.ckpt``/``-D.ckpt``
    plain state dicts that the official StarGAN code loads.

    For bundles, ``dtype=torch.float16`` halves the weights, ``name`` renames the model and
    ``card_updates`` (e.g. ``{"quality": {...}, "description": ...}``) are merged into the card.
    """
    model = load(name_or_path)
    if not official:
        spec = model.spec
        if name:
            spec.name = name
        for key, value in (card_updates or {}).items():
            if key not in {"description", "license", "provenance", "quality", "recipe", "default_source", "edit_mode"}:
                raise ModelError(f"card field '{key}' cannot be set on export")
            current = getattr(spec, key)
            setattr(spec, key, {**current, **value} if isinstance(current, dict) and isinstance(value, Mapping) else value)
        return [save_bundle(model, Path(dest), dtype=dtype, overwrite=overwrite)]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, module in (("G", model.generator), ("D", model.discriminator)):
        if module is None:
            continue
        target = dest / f"{model.spec.name}-{suffix}.ckpt"
        _atomic_torch_save(module.state_dict(), target)
        written.append(target)
    return written


def _atomic_torch_save(obj: object, target: Path) -> None:
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def remove_model(name: str) -> Path:
    """Delete an installed model from the store (embedded models cannot be removed)."""
    folder = store_dir() / name
    if not is_bundle(folder):
        if is_bundle(EMBEDDED_DIR / name):
            raise ModelError(f"model '{name}' is embedded in the package and cannot be removed")
        raise ModelError(f"model '{name}' is not installed in {store_dir()}")
    shutil.rmtree(folder)
    return folder


def _check_name(name: str) -> None:
    if not name or any(c in name for c in "/\\:") or name.startswith("."):
        raise ModelError(f"invalid model name {name!r}: use letters, digits, '-', '_' and '.'")


# ----------------------------------------------------------------------------------------------
# Download
# ----------------------------------------------------------------------------------------------

ProgressCallback = Callable[[int, int | None], None]  # (bytes done, total or None)


def _download(url: str, target: Path, on_progress: ProgressCallback | None, timeout: float) -> str:
    """Stream ``url`` to ``target``; returns the sha256.  Raises ModelError on network errors
    and on a body shorter than its Content-Length."""
    digest = hashlib.sha256()
    done = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "starcli"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(target, "wb") as out:
            total_header = response.headers.get("Content-Length")
            total = int(total_header) if total_header and total_header.isdigit() else None
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(done, total)
    except urllib.error.HTTPError as exc:
        raise ModelError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelError(f"{url}: download failed, host unreachable or offline ({reason})") from None
    except Exception as exc:  # http.client.IncompleteRead and friends
        raise ModelError(f"{url}: download interrupted after {done} bytes ({type(exc).__name__})") from None
    if total is not None and done != total:
        raise ModelError(f"{url}: download truncated: got {done} of {total} bytes")
    return digest.hexdigest()


def _extract_checkpoints(archive: Path, workdir: Path, source: str) -> tuple[Path, Path | None]:
    """Unzip ``*-G.ckpt`` (and ``*-D.ckpt``) from an official archive into ``workdir``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            g_names = sorted(n for n in names if n.endswith("-G.ckpt"))
            if not g_names:
                raise ModelError(f"{source}: archive holds no '<iter>-G.ckpt' (found: {', '.join(names[:5]) or 'nothing'})")
            g_name = g_names[-1]
            d_name = g_name.replace("-G.ckpt", "-D.ckpt")
            g_path = Path(zf.extract(g_name, workdir))
            d_path = Path(zf.extract(d_name, workdir)) if d_name in names else None
    except zipfile.BadZipFile:
        raise ModelError(f"{source}: downloaded file is not a valid zip archive (truncated or an error page)") from None
    return g_path, d_path


def pull_model(name: str, *, url: str | None = None, on_progress: ProgressCallback | None = None, timeout: float = 30.0, force: bool = False) -> Path:
    """Download a registered model, verify it, install it as a bundle; returns its folder.

    The archive goes to a temp file that is deleted afterwards; the bundle appears only after
    verification (sha256 when the registry knows it, else structure: every key and shape of the
    expected architecture loads strictly).  ``url`` overrides the registry URL (mirrors, tests).
    """
    if name not in REGISTRY:
        raise ModelError(f"unknown model '{name}': registered models are {', '.join(sorted(REGISTRY))}")
    entry = REGISTRY[name]
    target = store_dir() / name
    if is_bundle(target) and not force:
        return target
    source = url or entry.url
    store_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=store_dir()) as tmp_name:
        tmp = Path(tmp_name)
        archive = tmp / "download.zip"
        sha256 = _download(source, archive, on_progress, timeout)
        if entry.sha256 and sha256 != entry.sha256:
            raise ModelError(f"{source}: checksum mismatch (sha256 {sha256[:12]}..., expected {entry.sha256[:12]}...)")
        g_path, _ = _extract_checkpoints(archive, tmp / "x", source)
        model = load_official(g_path, entry.attributes, name=name)
        expected = (64, len(entry.attributes), 6)
        got = (model.generator.config.conv_dim, model.generator.config.c_dim, model.generator.config.repeat_num)
        if got != expected:
            raise ModelError(f"{source}: generator architecture {got} is not the expected (conv_dim, c_dim, repeat_num) {expected}")
        if model.discriminator is not None and model.discriminator.config.image_size != entry.image_size:
            raise ModelError(f"{source}: discriminator is for {model.discriminator.config.image_size}px, expected {entry.image_size}px")
        spec = model.spec
        spec.image_size = entry.image_size
        spec.description = entry.description
        spec.license = entry.license
        spec.provenance = {"url": entry.url, "archive_sha256": sha256, "kind": "official StarGAN v1 release", "checkpoint": g_path.name}
        return save_bundle(model, target, overwrite=True)


__all__ = [
    "DEFAULT_MODEL",
    "REGISTRY",
    "ModelInfo",
    "RegistryEntry",
    "StarganModel",
    "export_model",
    "import_official",
    "list_models",
    "load",
    "load_bundle",
    "load_official",
    "pull_model",
    "remove_model",
    "save_bundle",
    "store_dir",
]
