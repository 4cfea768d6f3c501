"""Model store, bundles, official checkpoint import and `models pull` against a local server."""

from __future__ import annotations

import http.server
import io
import os
import socket
import stat
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from starcli import models
from starcli.errors import ModelError
from starcli.stargan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

ATTRS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("STARCLI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("STARCLI_MODEL", raising=False)


def _official_pair(folder: Path, conv_dim=8, repeat_num=1, image_size=32, seed=0, drop_nbt=False) -> Path:
    torch.manual_seed(seed)
    g = Generator(GeneratorConfig(conv_dim=conv_dim, c_dim=5, repeat_num=repeat_num))
    d = Discriminator(DiscriminatorConfig(image_size=image_size, conv_dim=conv_dim, c_dim=5, repeat_num=2))
    folder.mkdir(parents=True, exist_ok=True)
    g_state = g.state_dict()
    if drop_nbt:  # PyTorch 0.3 files have no num_batches_tracked
        g_state = {k: v for k, v in g_state.items() if not k.endswith("num_batches_tracked")}
    torch.save(g_state, folder / "1000-G.ckpt")
    torch.save(d.state_dict(), folder / "1000-D.ckpt")
    return folder / "1000-G.ckpt"


def _outputs(model: models.StarganModel) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    c = torch.tensor([[1, 0, 0, 1, 1], [0, 1, 0, 0, 1]], dtype=torch.float32)
    with torch.no_grad():
        return model.generator(x, c), model.discriminator(x)[1]


def test_official_checkpoint_to_bundle_round_trip_is_exact(tmp_path):
    g_path = _official_pair(tmp_path / "ckpt")
    official = models.load(g_path, attributes=ATTRS)
    assert official.discriminator is not None, "sibling -D.ckpt must be picked up"
    folder = models.import_official(g_path, ATTRS, "tiny")
    bundle = models.load("tiny")
    assert folder == models.store_dir() / "tiny"
    assert bundle.spec.attributes == ATTRS
    assert bundle.spec.groups == [["Black_Hair", "Blond_Hair", "Brown_Hair"]]
    assert bundle.spec.image_size == 32
    for a, b in zip(_outputs(official), _outputs(bundle)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pytorch03_checkpoint_without_num_batches_tracked_loads(tmp_path):
    g_path = _official_pair(tmp_path / "old", drop_nbt=True)
    model = models.load(g_path, attributes=ATTRS)
    assert model.generator.config == GeneratorConfig(conv_dim=8, c_dim=5, repeat_num=1)


def test_bundle_in_fp16_loads_as_float32(tmp_path):
    g_path = _official_pair(tmp_path / "ckpt")
    model = models.load(g_path, attributes=ATTRS)
    models.save_bundle(model, tmp_path / "half", dtype=torch.float16)
    half = models.load(tmp_path / "half")
    assert next(half.generator.parameters()).dtype == torch.float32
    torch.testing.assert_close(_outputs(half)[0], _outputs(model)[0], atol=2e-2, rtol=0)


def test_saved_bundle_has_ordinary_permissions(tmp_path):
    """A bundle written through a temporary folder is readable by others like a plain mkdir's
    (umask 022: folder 0755, files 0644), not mkdtemp's 0700."""
    model = models.load(_official_pair(tmp_path / "ckpt"), attributes=ATTRS)
    old = os.umask(0o022)
    try:
        folder = models.save_bundle(model, tmp_path / "bundle")
    finally:
        os.umask(old)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(f.stat().st_mode) for f in folder.iterdir()} == {0o644}


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, not a checkpoint"), "checkpoint"),
        (lambda p: p.write_bytes(_official_bytes()[:3000]), "checkpoint"),
        (lambda p: torch.save({"main.0.weight": torch.zeros(8, 8, 3, 3)}, p), "main.0.weight"),
    ],
    ids=["zero-bytes", "text", "truncated", "wrong-shape"],
)
def test_bad_checkpoints_give_one_line_errors_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "bad-G.ckpt"
    make(path)
    with pytest.raises(ModelError) as info:
        models.load(path, attributes=ATTRS)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message


def _official_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save(Generator(GeneratorConfig(conv_dim=8, c_dim=5, repeat_num=1)).state_dict(), buffer)
    return buffer.getvalue()


def test_wrong_number_of_attributes_is_an_error(tmp_path):
    g_path = _official_pair(tmp_path / "ckpt")
    with pytest.raises(ModelError, match="5 labels but 2 attribute names"):
        models.load(g_path, attributes=["Male", "Young"])
    with pytest.raises(ModelError, match="--attrs"):
        models.load(g_path)


def test_unknown_model_lists_known_names():
    with pytest.raises(ModelError, match="unknown model 'nope'.*celeba-128"):
        models.load("nope")
    with pytest.raises(ModelError, match="starcli models pull celeba-128"):
        models.load("celeba-128")


def test_export_official_round_trip(tmp_path):
    g_path = _official_pair(tmp_path / "ckpt")
    models.import_official(g_path, ATTRS, "tiny")
    written = models.export_model("tiny", tmp_path / "export", official=True)
    assert [p.name for p in written] == ["tiny-G.ckpt", "tiny-D.ckpt"]
    again = models.load(written[0], attributes=ATTRS)
    torch.testing.assert_close(_outputs(again)[0], _outputs(models.load("tiny"))[0], rtol=0, atol=0)


def test_remove_model(tmp_path):
    models.import_official(_official_pair(tmp_path / "ckpt"), ATTRS, "tiny")
    models.remove_model("tiny")
    with pytest.raises(ModelError):
        models.remove_model("tiny")


# ---------------------------------------------------------------------------------------------
# pull against a local HTTP server
# ---------------------------------------------------------------------------------------------


def _archive_bytes(tmp_path: Path) -> bytes:
    """An archive shaped like the official release: 200000-G.ckpt / -D.ckpt, default G size."""
    torch.manual_seed(0)
    folder = tmp_path / "release"
    folder.mkdir()
    torch.save(Generator(GeneratorConfig(conv_dim=64, c_dim=5, repeat_num=6)).state_dict(), folder / "200000-G.ckpt")
    torch.save(Discriminator(DiscriminatorConfig(image_size=128, conv_dim=8, c_dim=5, repeat_num=6)).state_dict(), folder / "200000-D.ckpt")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in ("200000-G.ckpt", "200000-D.ckpt"):
            zf.write(folder / name, name)
    return buffer.getvalue()


class _Server:
    """Serves ``routes`` (path -> (body, claimed length)) on 127.0.0.1 in a thread."""

    def __init__(self, routes: dict[str, tuple[bytes, int]]):
        routes_ = routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                if path not in routes_:
                    self.send_error(404)
                    return
                body, length = routes_[path]
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_pull_downloads_verifies_and_installs(tmp_path):
    body = _archive_bytes(tmp_path)
    seen = []
    with _Server({"/celeba.zip": (body, len(body))}) as server:
        folder = models.pull_model("celeba-128", url=server.url + "/celeba.zip", on_progress=lambda d, t: seen.append((d, t)))
    model = models.load("celeba-128")
    assert folder == models.store_dir() / "celeba-128"
    assert model.spec.attributes == ATTRS and model.spec.image_size == 128
    assert len(model.spec.provenance["archive_sha256"]) == 64
    assert seen[-1] == (len(body), len(body))
    assert not [p for p in models.store_dir().iterdir() if p.name.startswith(".")], "temp files left behind"


def test_pull_truncated_download_installs_nothing(tmp_path):
    body = _archive_bytes(tmp_path)
    with _Server({"/celeba.zip": (body[: len(body) // 2], len(body))}) as server:
        with pytest.raises(ModelError, match="truncated|interrupted"):
            models.pull_model("celeba-128", url=server.url + "/celeba.zip", timeout=5)
    assert not (models.store_dir() / "celeba-128").exists()
    assert not [p for p in models.store_dir().iterdir()], "partial download left in the store"


def test_pull_rejects_an_archive_of_the_wrong_architecture(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        state = io.BytesIO()
        torch.save(Generator(GeneratorConfig(conv_dim=8, c_dim=5, repeat_num=1)).state_dict(), state)
        zf.writestr("200000-G.ckpt", state.getvalue())
    body = buffer.getvalue()
    with _Server({"/x.zip": (body, len(body)), "/page": (b"<html>not found</html>", 22)}) as server:
        with pytest.raises(ModelError, match="architecture"):
            models.pull_model("celeba-128", url=server.url + "/x.zip")
        with pytest.raises(ModelError, match="not a valid zip"):
            models.pull_model("celeba-128", url=server.url + "/page")
        with pytest.raises(ModelError, match="HTTP 404"):
            models.pull_model("celeba-128", url=server.url + "/missing.zip")
    assert not (models.store_dir() / "celeba-128").exists()


def test_pull_unreachable_host_is_a_clear_error():
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ModelError, match="unreachable or offline"):
        models.pull_model("celeba-128", url=f"http://127.0.0.1:{port}/celeba.zip", timeout=2)


def test_pull_unknown_name():
    with pytest.raises(ModelError, match="registered models are celeba-128, celeba-256"):
        models.pull_model("celeba-512")
