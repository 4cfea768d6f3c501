"""Video: probe, streamed read/write, audio copy, time range, resume, bad input, memory.

Clips are built from a real photo (tests/data/astronaut.png, public domain): a pan/zoom at an
odd size (321x241) with and without a sine audio track.  The generator is a random tiny StarGAN
(so the face region visibly changes); the detector is dlib (~17 ms per frame here).
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from starcli import video as V
from starcli.errors import InputError

DATA = Path(__file__).parent / "data"
SIZE = (321, 241)
FACE_CENTER = (0.44, 0.3)  # astronaut's face, fractions of the photo


def _astronaut() -> np.ndarray:
    import imageio.v3 as iio

    return np.ascontiguousarray(iio.imread(DATA / "astronaut.png")[..., :3])


def _clip(path: Path, seconds: float = 1.2, fps: float = 25, **kw) -> Path:
    kw.setdefault("zoom", (1.4, 1.7))
    kw.setdefault("center", FACE_CENTER)
    return V.render_pan_clip(_astronaut(), path, SIZE, seconds, fps, **kw)


def _frames(path: Path) -> list[np.ndarray]:
    return [f for b in V.read_frames(V.probe(path)) for f in b]


def _audio_md5(path: Path) -> str:
    res = subprocess.run([V.ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a", "-c", "copy", "-f", "md5", "-"],
                         capture_output=True, check=True)
    return res.stdout.decode().strip()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The clips are tiny: one torch thread avoids spinning thread pools fighting the ffmpeg
    processes (and other work) for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "audio": _clip(folder / "pan_audio.mp4", audio=True),
        "silent": _clip(folder / "pan_silent.mov", audio=False),
    }


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir):
    from starcli.config import load_config
    from starcli.pipeline import Pipeline

    cfg = load_config(None, overrides={"translate.model": str(tiny_model_dir), "translate.set": ["hair=blond"],
                                       "translate.backend": "cpu"}, search_cwd=False)
    return Pipeline(cfg)


def _cfg(pipeline, **video):
    import copy

    cfg = copy.deepcopy(pipeline.cfg)
    for k, v in video.items():
        setattr(cfg.video, k, v)
    return cfg


# ---------------------------------------------------------------------------------------------
# probe and read


def test_probe_reports_stream_properties(clips):
    info = V.probe(clips["audio"])
    assert (info.width, info.height) == SIZE
    assert info.codec == "h264" and info.frames == 30 and info.rate == 25 and not info.vfr
    assert info.has_audio and info.audio_codecs == ("aac",)
    assert abs(info.duration - 1.2) < 0.05
    silent = V.probe(clips["silent"])
    assert not silent.has_audio and silent.frames == 30


def test_read_frames_streams_in_bounded_batches(clips):
    info = V.probe(clips["audio"])
    sizes = [len(b) for b in V.read_frames(info, batch_frames=7)]
    assert sizes == [7, 7, 7, 7, 2]
    first = next(iter(V.read_frames(info, batch_frames=4)))[0]
    assert first.shape == (241, 321, 3) and first.dtype == np.uint8


def test_read_frames_range_and_skip_are_exact(clips):
    info = V.probe(clips["silent"])
    full = _frames(clips["silent"])
    part = [f for b in V.read_frames(info, start=0.4, end=0.8) for f in b]
    assert len(part) == 10
    assert _psnr(part[0], full[10]) > 40  # same frame as the whole decode's frame 10
    skipped = [f for b in V.read_frames(info, skip_frames=12) for f in b]
    assert len(skipped) == 18 and np.array_equal(skipped[0], full[12])


# ---------------------------------------------------------------------------------------------
# end to end


def _face_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    from starcli.detect import DlibDetector

    face = DlibDetector().detect([frame])[0][0]
    return tuple(int(round(v)) for v in face.box)  # type: ignore[return-value]


def test_process_video_keeps_everything_but_the_face(clips, pipeline, tmp_path):
    src = clips["audio"]
    out = tmp_path / "out" / "pan_audio.mp4"
    out.parent.mkdir()
    events = []
    report = V.process_video(src, out, pipeline, pipeline.cfg, on_event=events.append)
    assert out.is_file() and not (out.parent / f".{out.name}.starcli-work").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp files left
    info = V.probe(out)
    assert (info.width, info.height) == SIZE and info.frames == 30 and info.rate == 25
    assert abs(info.duration - 1.2) < 0.05
    assert info.codec == "h264" and info.pix_fmt == "yuv444p"  # odd size: 4:4:4, no rescale
    assert _audio_md5(out) == _audio_md5(src)  # audio stream copied bit for bit
    assert report.frames == 30 and report.faces >= 28 and report.tracks == 1
    assert [e.kind for e in events][0] == "start" and events[-1].kind == "done"
    assert max(e.frames_done for e in events if e.kind == "progress") == 30
    ins, outs = _frames(src), _frames(out)
    x0, y0, x1, y1 = _face_box(ins[0])
    inner = np.abs(ins[0][y0:y1, x0:x1].astype(int) - outs[0][y0:y1, x0:x1].astype(int)).mean()
    assert inner > 8, "the face region should have changed"
    # away from the face (outside the region its crop covers), only codec noise
    from starcli.pipeline import FrameJob

    for a, b in zip(ins[::7], outs[::7]):
        job = FrameJob(pixels=a, faces=pipeline.detect([a])[0])
        pipeline.align([job])
        rx0, ry0, rx1, ry1 = job.region
        keep = np.ones(a.shape[:2], bool)
        keep[ry0:ry1, rx0:rx1] = False
        assert keep.sum() > 5000
        assert _psnr(a[keep], b[keep]) > 32


def test_video_without_audio_and_other_rate(clips, pipeline, tmp_path):
    out = tmp_path / "pan_silent.mov"
    V.process_video(clips["silent"], out, pipeline, pipeline.cfg)
    info = V.probe(out)
    assert not info.has_audio and info.frames == 30 and (info.width, info.height) == SIZE


@pytest.mark.parametrize("ext, codec, audio", [(".mkv", "h264", True), (".avi", "mpeg4", True),
                                               (".webm", "vp9", True), (".gif", "gif", False)])
def test_containers_keep_format_size_frames_and_audio(ext, codec, audio, pipeline, tmp_path):
    fps = 10 if ext == ".gif" else 25
    src = _clip(tmp_path / f"in{ext}", seconds=0.6, fps=fps, audio=audio)
    out = tmp_path / "out" / f"in{ext}"
    out.parent.mkdir()
    V.process_video(src, out, pipeline, pipeline.cfg)
    i, o = V.probe(src), V.probe(out)
    assert o.codec == codec and (o.width, o.height) == SIZE and o.frames == i.frames and o.rate == i.rate
    assert o.has_audio == audio
    if audio:
        assert _audio_md5(out) == _audio_md5(src)


def test_vfr_input_gives_constant_rate_without_drift(pipeline, tmp_path):
    # 25 fps for 0.8 s, then every other frame (12.5 fps) for 0.8 s: variable frame rate
    cfr = _clip(tmp_path / "cfr.mp4", seconds=1.6, audio=True, pan=0.3)
    vfr = tmp_path / "vfr.mp4"
    subprocess.run([V.ffmpeg_exe(), "-v", "error", "-y", "-i", str(cfr), "-vf", "select='lt(n,20)+not(mod(n,2))'",
                    "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv444p", "-crf", "12", "-c:a", "copy",
                    str(vfr)], check=True)
    info = V.probe(vfr)
    assert info.vfr and info.frames == 30
    out = tmp_path / "out.mp4"
    V.process_video(vfr, out, pipeline, pipeline.cfg)
    o = V.probe(out)
    assert not o.vfr and abs(o.duration - info.duration) < 0.1 and o.frames == round(info.duration * float(info.rate))
    assert _audio_md5(out) == _audio_md5(vfr)
    # the last frame shows what the source shows at that time (no drift): compare with the CFR source
    ref = _frames(cfr)
    last = _frames(out)[-1]
    t_last = (o.frames - 1) / float(o.rate)
    best = int(np.argmax([_psnr(last, r) for r in ref]))
    assert abs(best / 25.0 - t_last) <= 0.1


def test_colour_tags_and_matrix_are_kept(tmp_path):
    tags = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv"]
    src = V.render_pan_clip(_astronaut(), tmp_path / "hd.mp4", (320, 180), 0.4, 25, codec_args=[
        "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", "-vf", V.color_args("tv,bt709")[0], *tags])
    info = V.probe(src)
    assert info.colorspace == "tv,bt709"
    frames = _frames(src)
    with V.SegmentWriter(tmp_path, ".mp4", 320, 180, info.rate, V.VideoOptions(), 100, colorspace=info.colorspace) as w:
        for f in frames:
            w.write(f)
    out = tmp_path / "seg_00000.mp4"
    assert V.probe(out).colorspace == "tv,bt709"
    back = _frames(out)
    assert min(_psnr(a, b) for a, b in zip(frames, back)) > 30
    assert abs(np.mean([b.astype(float).mean((0, 1)) - a.astype(float).mean((0, 1)) for a, b in zip(frames, back)],
                       axis=0)).max() < 1.5  # no colour shift (4:2:0 itself costs ~1 level on this photo)


@pytest.mark.parametrize("segment, total", [(12, 25), (8, 25), (10, 25)])
def test_segments_join_without_timing_gaps(segment, total, clips, tmp_path):
    """x264 segments join frame-exact, also when the last one would be a 1-frame tail."""
    info = V.probe(clips["audio"])
    frames = _frames(clips["audio"])[:total]
    counts = []
    with V.SegmentWriter(tmp_path, ".mp4", info.width, info.height, info.rate, V.VideoOptions(), segment,
                         on_segment=lambda k, n: counts.append(n), total_frames=total) as w:
        for f in frames:
            w.write(f)
    assert sum(counts) == total and min(counts) >= V.MIN_TAIL_FRAMES
    out = tmp_path / "joined.mp4"
    V.concat_segments(sorted(tmp_path.glob("seg_*.mp4")), out, ".mp4", info, 0.0, total / 25, counts, info.rate)
    o = V.probe(out)
    assert o.frames == total and o.fps == 25 and not o.vfr
    back = _frames(out)
    assert min(_psnr(a, b) for a, b in zip(frames, back)) > 32


def test_detect_every_other_frame_still_edits_every_frame(pipeline, tmp_path, monkeypatch):
    calls = []
    real = pipeline.detect

    class Counting:
        def __getattr__(self, name):
            return getattr(pipeline, name)

        def detect(self, frames):
            calls.append(len(frames))
            return real(frames)

    src = _clip(tmp_path / "e.mkv", seconds=0.64)
    report = V.process_video(src, tmp_path / "o.mkv", Counting(), _cfg(pipeline, detect_every=2, region_detect=False))
    assert report.frames == 16 and sum(calls) == 8 and report.faces == 16
    assert report.full_detections == 8 and report.region_detections == 0


def test_region_detection_between_full_frames_follows_the_moving_face(pipeline, tmp_path, monkeypatch):
    """Default video detection: the whole frame every detect_every frames, regions around the
    tracked faces on the others; the face (moving across the clip) is found on every frame,
    with the landmarks a full-frame detection gives."""
    full_calls, region_calls = [], []
    real_detect, real_regions = pipeline.detect, pipeline.detect_regions
    seen: dict[int, object] = {}

    class Counting:
        def __getattr__(self, name):
            return getattr(pipeline, name)

        def detect(self, frames):
            full_calls.append(len(frames))
            return real_detect(frames)

        def detect_regions(self, frame, boxes):
            faces = real_regions(frame, boxes)
            region_calls.append((frame, faces))
            return faces

    src = _clip(tmp_path / "r.mkv", seconds=0.64)
    report = V.process_video(src, tmp_path / "o.mkv", Counting(), _cfg(pipeline, detect_every=8, smooth=False))
    assert report.frames == 16 and report.faces == 16 and report.bridged == 0
    assert sum(full_calls) == 2 == report.full_detections and report.region_detections == 14
    assert len(region_calls) == 15  # frame 8 (whole-frame detection) also rescans its tracked face's region
    for frame, faces in region_calls:
        assert len(faces) == 1
        ref = real_detect([frame])[0][0]
        for k, (x, y) in ref.landmarks.items():
            assert abs(faces[0].landmarks[k][0] - x) <= 2.0 and abs(faces[0].landmarks[k][1] - y) <= 2.0, k


def test_scene_cut_gets_a_whole_frame_detection(pipeline, tmp_path):
    """A cut from one shot to another between whole-frame detections: the new shot's face is
    searched on the whole frame at once (not only where the old face was), so every frame of
    both shots is edited."""
    import imageio.v3 as iio

    shots = [(_astronaut(), FACE_CENTER), (np.ascontiguousarray(iio.imread(DATA / "grace_hopper.jpg")[..., :3]), (0.52, 0.38))]
    frames = []
    for k, (img, center) in enumerate(shots):
        clip = V.render_pan_clip(img, tmp_path / f"shot{k}.mkv", SIZE, 0.4, 25, zoom=(1.8, 1.9), center=center)
        frames += _frames(clip)
    src = tmp_path / "cut.mkv"
    h, w = frames[0].shape[:2]
    subprocess.run([V.ffmpeg_exe(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                    "-framerate", "25", "-i", "-", "-c:v", "ffv1", str(src)], input=np.stack(frames).tobytes(), check=True)
    report = V.process_video(src, tmp_path / "o.mkv", pipeline, _cfg(pipeline, detect_every=100))
    assert report.frames == 20 and report.scene_cuts == 1
    assert report.full_detections == 2 and report.region_detections == 18  # frame 0 and the cut
    assert report.faces == 20 and report.tracks == 2


def test_fps_option_resamples_to_a_new_constant_rate(clips, pipeline, tmp_path):
    out = tmp_path / "half.mp4"
    report = V.process_video(clips["audio"], out, pipeline, _cfg(pipeline, fps=12.5))
    info = V.probe(out)
    assert report.frames == 15 and info.frames == 15 and info.rate == Fraction(25, 2)
    assert abs(info.duration - 1.2) < 0.1 and _audio_md5(out) == _audio_md5(clips["audio"])


def test_start_end_selects_a_time_range(clips, pipeline, tmp_path):
    out = tmp_path / "range.mp4"
    report = V.process_video(clips["audio"], out, pipeline, _cfg(pipeline, start=0.4, end=1.0))
    info = V.probe(out)
    assert report.frames == 15 and info.frames == 15 and abs(info.duration - 0.6) < 0.06
    assert info.has_audio


def test_interrupted_run_resumes_from_last_segment(pipeline, tmp_path):
    src = _clip(tmp_path / "long.mp4", seconds=1.6, audio=True)
    out = tmp_path / "out" / "long.mp4"
    out.parent.mkdir()
    cfg = _cfg(pipeline, segment_seconds=0.4)
    work = out.parent / f".{out.name}.starcli-work"

    def kill_after_first_segment(ev):
        if ev.kind == "progress" and ev.frames_done >= 16:  # frames 0-15 are with the encoder
            deadline = time.time() + 20
            while not (work / "seg_00000.mp4").exists() and time.time() < deadline:
                time.sleep(0.02)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        V.process_video(src, out, pipeline, cfg, on_event=kill_after_first_segment)
    assert not out.exists()  # never a partial output in place
    assert (work / "seg_00000.mp4").exists() and not list(work.glob("*.partial*"))
    report = V.process_video(src, out, pipeline, cfg)
    assert report.resumed_frames >= 10 and report.frames == 40
    info = V.probe(out)
    assert info.frames == 40 and _audio_md5(out) == _audio_md5(src) and not work.exists()


def test_changed_settings_restart_cleanly(pipeline, tmp_path):
    src = _clip(tmp_path / "c.mp4", seconds=0.8)
    out = tmp_path / "o" / "c.mp4"
    out.parent.mkdir()
    work = out.parent / f".{out.name}.starcli-work"
    work.mkdir()
    (work / "job.json").write_text('{"key": "other", "segments": [3]}')
    (work / "seg_00000.mp4").write_bytes(b"stale")
    report = V.process_video(src, out, pipeline, pipeline.cfg)
    assert report.resumed_frames == 0 and V.probe(out).frames == 20


def test_video_without_faces_is_copied_unchanged(pipeline, tmp_path):
    src = _clip(tmp_path / "suit.mp4", seconds=0.6, audio=True, center=(0.5, 0.85), zoom=(2.0, 2.0))
    out = tmp_path / "o" / "suit.mp4"
    out.parent.mkdir()
    report = V.process_video(src, out, pipeline, pipeline.cfg)
    assert report.faces == 0 and report.copied and "no faces" in report.note
    assert hashlib.md5(out.read_bytes()).digest() == hashlib.md5(src.read_bytes()).digest()


# ---------------------------------------------------------------------------------------------
# bad input: one-line errors naming the file, nothing left behind


def _bad_inputs(folder: Path) -> dict[str, Path]:
    ff = V.ffmpeg_exe()
    good = _clip(folder / "good.mp4", seconds=0.8, audio=True)
    text = folder / "text.mp4"
    text.write_text("this is not a video\n")
    audio_only = folder / "audio_only.mp4"
    subprocess.run([ff, "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", str(audio_only)],
                   check=True)
    data = good.read_bytes()
    truncated = folder / "truncated.mp4"  # moov at the end: cut off
    truncated.write_bytes(data[: len(data) // 2])
    faststart = folder / "faststart.mp4"
    subprocess.run([ff, "-v", "error", "-y", "-i", str(good), "-c", "copy", "-movflags", "+faststart", str(faststart)],
                   check=True)
    fs = faststart.read_bytes()
    truncated_fs = folder / "truncated_faststart.mp4"  # header intact, half of the frames missing
    truncated_fs.write_bytes(fs[: len(fs) // 2])
    corrupt = folder / "corrupt.mp4"  # garbage over the middle of the frame data
    rng = np.random.default_rng(0)
    buf = bytearray(fs)
    mid = len(buf) // 2
    buf[mid: mid + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    corrupt.write_bytes(bytes(buf))
    unsupported = folder / "unsupported.avi"  # an AVI whose codec tag no decoder knows
    avi = _clip(folder / "tmp.avi", seconds=0.4)
    raw = avi.read_bytes()
    for tag in (b"FMP4", b"XVID", b"xvid", b"fmp4"):
        raw = raw.replace(tag, b"ZZZ9")
    unsupported.write_bytes(raw)
    avi.unlink()
    zero = folder / "zero.mp4"  # a video stream with no frame
    subprocess.run([ff, "-v", "error", "-y", "-f", "lavfi", "-i", "color=size=64x48:rate=25", "-frames:v", "0",
                    "-c:v", "libx264", str(zero)], check=False)
    return {"good": good, "text": text, "audio_only": audio_only, "truncated": truncated,
            "truncated_faststart": truncated_fs, "corrupt": corrupt, "unsupported": unsupported, "zero": zero}


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    return _bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name, message", [
    ("text", "not a readable video"),
    ("audio_only", "has no video stream"),
    ("truncated", "not a readable video"),
    ("truncated_faststart", "corrupt"),  # "corrupt video data" or "truncated or corrupt"
    ("corrupt", "corrupt"),
    ("unsupported", "unsupported video codec"),
    ("zero", "no video"),
])
def test_bad_input_is_one_line_error_and_leaves_nothing(name, message, bad_inputs, pipeline, tmp_path):
    src = bad_inputs[name]
    if not src.exists():
        pytest.skip("this ffmpeg cannot write a zero-frame file")
    out = tmp_path / "o" / ("out" + src.suffix)
    out.parent.mkdir()
    with pytest.raises(InputError) as info:
        V.process_video(src, out, pipeline, pipeline.cfg)
    text = str(info.value)
    assert text.startswith(str(src)) and message in text and "\n" not in text
    assert list(out.parent.iterdir()) == []


def test_codec_that_does_not_fit_the_container_is_a_config_error(clips, pipeline, tmp_path):
    from starcli.errors import ConfigError

    with pytest.raises(ConfigError, match="video.codec"):
        V.process_video(clips["audio"], tmp_path / "x.webm", pipeline, _cfg(pipeline, codec="libx264"))


# ---------------------------------------------------------------------------------------------
# memory


def _peak_rss_growth(fn) -> tuple[float, object]:
    import psutil

    proc = psutil.Process()

    def rss() -> int:
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        result = fn()
    finally:
        done.set()
        th.join()
    return (peak[0] - base) / 2**20, result


def test_decoder_never_runs_ahead_of_a_slow_consumer(clips, pipeline, tmp_path, monkeypatch):
    """Bounded queues: with a slow processing stage, at most queue_depth + 2 batches are decoded
    and not yet processed (the memory bound's decode side)."""
    yielded, processed, ahead = [0], [0], []
    real = V.read_frames

    def counting(*a, **kw):
        for batch in real(*a, **kw):
            yielded[0] += 1
            yield batch

    class Slow:
        def __init__(self, p):
            self.p = p

        def __getattr__(self, name):
            return getattr(self.p, name)

        def detect(self, frames):
            time.sleep(0.15)
            ahead.append(yielded[0] - processed[0])
            processed[0] += 1
            return self.p.detect(frames)

    monkeypatch.setattr(V, "read_frames", counting)
    cfg = _cfg(pipeline, batch_frames=2, queue_depth=1, detect_every=1)
    report = V.process_video(clips["silent"], tmp_path / "o.mov", Slow(pipeline), cfg)
    assert report.frames == 30 and processed[0] == 15
    assert max(ahead) <= 1 + 2


@pytest.mark.slow
def test_memory_stays_bounded(pipeline, tmp_path):
    """The Python process's RSS growth while processing 4 s of 640x360 stays far below the size
    of the decoded clip (at most (2*depth+5)*batch frames are alive)."""
    src = V.render_pan_clip(_astronaut(), tmp_path / "m.mp4", (640, 360), 4.0, 25, zoom=(3.0, 3.0),
                            center=(0.5, 0.85), codec_args=["-c:v", "libx264", "-preset", "ultrafast", "-crf", "30"])
    cfg = _cfg(pipeline, batch_frames=4, queue_depth=1)
    _peak_rss_growth(lambda: V.process_video(src, tmp_path / "warm.mp4", pipeline, _cfg(pipeline, end=0.5)))
    growth, report = _peak_rss_growth(lambda: V.process_video(src, tmp_path / "o.mp4", pipeline, cfg))
    clip_mb = 100 * 640 * 360 * 3 / 2**20  # 66 MB decoded
    assert report.frames == 100
    assert growth < 0.5 * clip_mb, f"RSS grew {growth:.0f} MB for a {clip_mb:.0f} MB clip"


# ---------------------------------------------------------------------------------------------
# command line: folders mixing photos and videos, a bad video does not stop the batch


def test_cli_translates_a_folder_of_photos_and_videos(tiny_model_dir, bad_inputs, clips, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from starcli.cli import app

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(DATA / "astronaut.png", src / "astronaut.png")
    shutil.copy(clips["audio"], src / "clip.mp4")
    shutil.copy(bad_inputs["text"], src / "broken.mp4")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["translate", str(src), "--model", str(tiny_model_dir), "--set", "hair=blond",
                                   "--backend", "cpu", "-o", str(out), "--start", "0.2", "--end", "0.6", "--crf", "23"],
                             env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    assert res.exit_code == 1, res.output  # one file failed, the others were done
    assert "broken.mp4: not a readable video" in res.output
    assert "clip.mp4: 10 frames" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "clip.mp4"]
    info = V.probe(out / "clip.mp4")
    assert info.frames == 10 and info.has_audio and (info.width, info.height) == SIZE
