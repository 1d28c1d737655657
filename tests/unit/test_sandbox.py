"""Decoder processes see none of the service's secrets and run under kernel limits
(media/sandbox.py), and OpenCV's FFmpeg keeps its whitelists whatever an operator adds."""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import pytest

import media.video_decode
from errors import BadMedia
from media import sandbox
from media.tools import run_tool

pytestmark = pytest.mark.unit

SECRETS = {
    "VERITY_JWT_SECRET": "s3cret-value-for-the-test",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-for-the-test",
}


def run_python(code: str, tmp_path: Path, timeout_s: float = 30):
    return run_tool(
        [sys.executable, "-c", code],
        kind="test",
        deadline=time.monotonic() + timeout_s,
        timeout_s=timeout_s,
        source=tmp_path,
        code="corrupt_video",
        needed_by="the test",
    )


def test_ffmpeg_and_ffprobe_get_no_secrets(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    done = run_python("import os; print(repr(dict(os.environ)))", tmp_path)
    env = ast.literal_eval(done.stdout.decode())
    assert not set(SECRETS) & set(env) and "PATH" in env
    assert all(value not in done.stdout.decode() for value in SECRETS.values())


def test_decoders_run_under_limits(tmp_path):
    code = (
        "import resource as r; print([r.getrlimit(x)[0] for x in "
        "(r.RLIMIT_AS, r.RLIMIT_NOFILE, r.RLIMIT_CORE, r.RLIMIT_CPU, r.RLIMIT_FSIZE)])"
    )
    address_space, files, core, cpu, written = ast.literal_eval(run_python(code, tmp_path, 5).stdout.decode())
    assert address_space == sandbox.DEFAULT_MEMORY_MB * sandbox.MB
    assert files == sandbox.OPEN_FILES and core == 0 and 5 <= cpu <= 60
    assert written == sandbox.FILE_WRITE_MB * sandbox.MB


def test_a_decoder_that_balloons_is_stopped_by_the_kernel(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "_memory_mb", 512)
    with pytest.raises(BadMedia) as refused:
        run_python("x = bytearray(2 * 1024 ** 3)", tmp_path)  # 2 GB past a 512 MB address space
    assert refused.value.status == 422


def test_the_decoding_child_gets_no_secrets(tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    script = "import os, sys; sys.stdout.write(repr(dict(os.environ)))"
    monkeypatch.setattr(media.video_decode, "_child_command", lambda: [sys.executable, "-c", script])
    child = media.video_decode.DecoderChild("mp4", tmp_path, cpu_s=10)
    out, _ = child.process.communicate(timeout=30)
    env = ast.literal_eval(out.decode())
    assert not set(SECRETS) & set(env)
    assert env["OPENCV_FFMPEG_CAPTURE_OPTIONS"].endswith(
        "protocol_whitelist;file|format_whitelist;mov|enable_drefs;0"
    )


def test_an_operators_capture_options_keep_the_whitelists(monkeypatch):
    operator = "rtsp_transport;tcp|protocol_whitelist;http,https,file|format_whitelist;hls"
    merged = dict(
        item.split(";", 1) for item in media.video_decode._capture_options("mp4", operator).split("|")
    )
    assert merged == {
        "rtsp_transport": "tcp",
        "protocol_whitelist": "file",
        "format_whitelist": "mov",
        "enable_drefs": "0",
    }
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", operator)
    media.video_decode.restrict_ffmpeg_in_process()
    import os

    assert "protocol_whitelist;file|" in os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"]


def test_a_decoders_own_words_stay_in_the_log(tmp_path, caplog):
    """ffmpeg's stderr (paths, offsets, addresses) is logged, not sent to the client."""
    import logging

    with caplog.at_level(logging.INFO), pytest.raises(BadMedia) as refused:
        run_python(
            "import sys; sys.stderr.write('[mov @ 0x55d1c0ffee00] moov atom not found\\n'); sys.exit(1)",
            tmp_path,
        )
    assert "0x55d1c0ffee00" not in refused.value.message and "corrupt" in refused.value.message
    assert "0x55d1c0ffee00" in caplog.text
