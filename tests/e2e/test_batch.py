"""``python -m batch`` as a user runs it: a subprocess over real media (images, a WAV, an MP4
and hostile files) with the session's tiny models, its output read back. Killed with SIGKILL in
the middle and run again, every item is answered exactly once; an S3 prefix is read from a real
``moto_server``. Runs that need no model (dry runs, refusals) stop before any model is opened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from detect.results import DetectionResult
from tests.audio_factory import encode as encode_audio
from tests.audio_factory import speech_like
from tests.e2e.servers import BIN_DIR, PROJECT_ROOT, server_env, with_env
from tests.media_factory import jpeg_bytes, png_header_only
from tests.store import conftest as store_fixtures
from tests.video_factory import pattern_frames, write_opencv

pytestmark = pytest.mark.e2e

aws_env = store_fixtures.aws_env
moto_server = store_fixtures.moto_server

RUN_TIMEOUT_S = 120
# Hostile files and what their lines must say.
HOSTILE = {
    "hostile/noise.jpg": "unsupported_media_type",  # a .jpg name, random bytes
    "hostile/empty.jpg": "unsupported_media_type",
    "hostile/truncated.jpg": "corrupt_image",
    "hostile/bomb.png": "too_many_pixels",  # a header claiming 50000 x 50000 pixels
}


def _files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def env(model_store, bentoml_home: Path) -> dict[str, str]:
    return server_env(bentoml_home)


def batch(env: dict[str, str], *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN_DIR / "python"), "-m", "batch", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        **kwargs,
    )


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_folder_of_mixed_and_hostile_media(env: dict[str, str], tmp_path: Path) -> None:
    media = _files(
        tmp_path / "media",
        {
            "a.jpg": jpeg_bytes(64, 48, seed=1),
            "people/b.jpg": jpeg_bytes(80, 60, seed=2),
            "call.wav": encode_audio(speech_like(1.0), 16_000, "wav"),
            "clip.mp4": write_opencv(pattern_frames(6), fps=5),
            "hostile/noise.jpg": os.urandom(2048),
            "hostile/empty.jpg": b"",
            "hostile/truncated.jpg": jpeg_bytes(64, 48)[:300],
            "hostile/bomb.png": png_header_only(50_000, 50_000),
        },
    )
    output = tmp_path / "out" / "results.jsonl"
    run = batch(env, "--input", str(media), "--output", str(output))
    assert run.returncode == 0, run.stderr[-3000:]  # bad items do not fail the run

    lines = {line["id"]: line for line in lines_of(output)}
    assert sorted(lines) == sorted(["a.jpg", "people/b.jpg", "call.wav", "clip.mp4", *HOSTILE])
    for item_id, code in HOSTILE.items():
        assert lines[item_id]["error"]["code"] == code, lines[item_id]
        assert lines[item_id]["error"]["message"]
        assert "result" not in lines[item_id]
    for item_id, modality in {"a.jpg": "image", "people/b.jpg": "image", "call.wav": "audio"}.items():
        line = lines[item_id]
        assert line["source"] == str(media / item_id) and line["modality"] == modality
        DetectionResult.model_validate(line["result"])  # the API's own result shape
        assert line["result"]["modality"] == modality
        assert line["result"]["signature"]["alg"] == "EdDSA"  # signed, as the API's are
    video = lines["clip.mp4"]["result"]
    assert video["modality"] == "video" and video["media"]["frames_analyzed"] > 0

    summary = json.loads((tmp_path / "out" / "results.summary.json").read_text())
    assert summary["status"] == "completed" and summary["shard"] == "0/1"
    assert summary["items"] == summary["answered"] == 8 and summary["remaining"] == 0
    assert summary["errors_by_code"] == {
        "unsupported_media_type": 2,
        "corrupt_image": 1,
        "too_many_pixels": 1,
    }
    assert sum(summary["by_modality"]["image"].values()) == 4  # 2 pictures, the truncated one, the bomb
    assert summary["by_modality"]["image"]["error"] == 2
    assert summary["by_modality"]["unknown"] == {"error": 2}
    assert summary["this_run"]["answered"] == 8 and summary["this_run"]["items_per_s"] > 0

    # Not a terminal: every log line is JSON, progress and the summary among them.
    logged = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]
    assert any(entry["message"] == "progress 8/8" for entry in logged)
    assert logged[-1]["summary"]["answered"] == 8

    again = batch(env, "--input", str(media), "--output", str(output))
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(lines_of(output)) == 8  # nothing answered twice
    assert "8 already answered" in again.stderr and "onnx session ready" not in again.stderr


def test_a_folder_of_texts(env: dict[str, str], tmp_path: Path) -> None:
    """.txt and .md files are text by their names; their bytes are checked as the API checks them."""
    essay = "The committee met on Tuesday to review the budget and postponed the vote. " * 40
    media = _files(
        tmp_path / "texts",
        {
            "essay.txt": essay.encode(),
            "notes.md": ("# Notes\n\n" + essay[:600]).encode(),
            "short.txt": b"Too short.",
            "binary.txt": b"\x00\x01\x02 not text",
            "latin1.txt": "caf\u00e9 ".encode("latin-1") * 10,
        },
    )
    output = tmp_path / "out.jsonl"
    run = batch(env, "--input", str(media), "--output", str(output))
    assert run.returncode == 0, run.stderr[-3000:]
    lines = {line["id"]: line for line in lines_of(output)}
    assert {k: v["modality"] for k, v in lines.items()} == dict.fromkeys(lines, "text")
    result = lines["essay.txt"]["result"]
    DetectionResult.model_validate(result)
    assert (
        result["media"]["windows"] == len(result["segments"]) >= 2 and result["signature"]["alg"] == "EdDSA"
    )
    assert lines["notes.md"]["result"]["media"]["format"] == "markdown"
    assert lines["short.txt"]["result"]["verdict"] == "NOT_APPLICABLE"
    assert lines["binary.txt"]["error"]["code"] == "not_text"
    assert lines["latin1.txt"]["error"]["code"] == "invalid_text_encoding"


def test_killed_mid_run_then_resumed_answers_every_item_once(env: dict[str, str], tmp_path: Path) -> None:
    count = 300  # enough that the run outlasts the poll that kills it by far
    media = _files(tmp_path / "media", {f"{i:03d}.jpg": jpeg_bytes(48, 48, seed=i) for i in range(count)})
    output = tmp_path / "results.jsonl"
    args = [str(BIN_DIR / "python"), "-m", "batch", "--input", str(media), "--output", str(output)]
    first = subprocess.Popen(
        [*args, "--concurrency", "2"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: the kill reaches any decoder child too
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not (output.exists() and output.read_bytes().count(b"\n") >= 3):
            assert first.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no results appeared"
            time.sleep(0.01)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    before = output.read_bytes().count(b"\n")
    assert 3 <= before < count, "the kill must land mid-run"
    with output.open("ab") as handle:
        handle.write(b'{"id": "119.jpg", "source": "x", "res')  # as if killed inside a write

    again = batch(env, "--input", str(media), "--output", str(output))
    assert again.returncode == 0, again.stderr[-3000:]
    ids = [line["id"] for line in lines_of(output)]  # every line parses: the torn one is gone
    assert sorted(ids) == [f"{i:03d}.jpg" for i in range(count)]  # each exactly once
    assert "dropped a partial last line" in again.stderr
    summary = json.loads((tmp_path / "results.summary.json").read_text())
    assert summary["answered"] == count and summary["this_run"]["skipped_as_answered"] == before


def test_dry_runs_list_each_shard_and_run_nothing(env: dict[str, str], tmp_path: Path) -> None:
    media = _files(tmp_path / "media", {f"{i}.jpg": jpeg_bytes(32, 32, seed=i) for i in range(12)})
    (tmp_path / "media" / "note.bin").write_text("not media")  # a .txt would be text
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"id": f"item-{i}", "path": f"media/{i}.jpg", "modality": "image"}) + "\n"
            for i in range(12)
        )
    )
    whole = batch(env, "--input", str(media), "--output", str(tmp_path / "out.jsonl"), "--dry-run")
    assert whole.returncode == 0, whole.stderr
    listed = [json.loads(line) for line in whole.stdout.splitlines()]
    assert [entry["id"] for entry in listed] == sorted([*(f"{i}.jpg" for i in range(12)), "note.bin"])
    assert {entry["id"]: entry["modality"] for entry in listed}["note.bin"] is None
    assert {entry["modality"] for entry in listed if entry["id"] != "note.bin"} == {"image"}

    shards: list[set[str]] = []
    for index in range(3):  # as three Cloud Run tasks see it
        task = with_env(env, {"CLOUD_RUN_TASK_INDEX": str(index), "CLOUD_RUN_TASK_COUNT": "3"})
        run = batch(task, "--input", str(manifest), "--output", str(tmp_path / "out.jsonl"), "--dry-run")
        assert run.returncode == 0, run.stderr
        assert f"out.shard-000{index}-of-0003.jsonl" in run.stderr
        shards.append({json.loads(line)["id"] for line in run.stdout.splitlines()})
    assert set.union(*shards) == {f"item-{i}" for i in range(12)}
    assert sum(len(shard) for shard in shards) == 12  # disjoint

    limited = batch(
        env, "--input", str(manifest), "--output", str(tmp_path / "out.jsonl"), "--dry-run", "--limit", "5"
    )
    assert len(limited.stdout.splitlines()) == 5
    assert not list(tmp_path.glob("out*"))  # nothing written


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--input", "{tmp}/nope", "--output", "{tmp}/r.jsonl"], "no such file or folder"),
        (["--input", "{tmp}", "--output", "{tmp}/r.jsonl", "--shard", "7/4"], "0..count-1"),
        (["--input", "{tmp}/media", "--output", "{tmp}/file/r.jsonl"], "cannot write"),
        (["--input", "{tmp}/media", "--output", "{tmp}/media/r.jsonl"], "lies inside --input"),
        (["--input", "{tmp}/bad.jsonl", "--output", "{tmp}/r.jsonl"], "bad.jsonl:2: not JSON"),
        (["--input", "{tmp}", "--output", "s3:///out/"], "no bucket named"),
        (["--input", "{tmp}", "--output", "{tmp}/r.jsonl", "--publish-every", "0"], "--publish-every"),
    ],
)
def test_a_command_that_cannot_run_exits_2_with_one_line(
    env: dict[str, str], tmp_path: Path, args: list[str], says: str
) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "path": "a.jpg"}\n{"id": \n')
    run = batch(env, *(arg.format(tmp=tmp_path) for arg in args))
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and says in run.stderr, run.stderr


def s3_env(env: dict[str, str], moto_server) -> dict[str, str]:
    """The run's environment with moto's fake credentials (``aws_env``) and endpoint."""
    credentials = {name: os.environ[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return {**env, **credentials, "VERITY_S3_ENDPOINT_URL": moto_server.endpoint}


def s3_lines(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == b"" or body.endswith(b"\n")  # only whole lines, ever
    return [json.loads(line) for line in body.splitlines()]


def test_an_s3_prefix(env: dict[str, str], moto_server, tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name=store_fixtures.REGION, endpoint_url=moto_server.endpoint)
    s3.create_bucket(Bucket="media")
    for key, data in {
        "run/a.jpg": jpeg_bytes(64, 48, seed=1),
        "run/sub/b.jpg": jpeg_bytes(64, 48, seed=2),
        "run/junk.bin": b"\x00" * 64,
        "run/": b"",  # a console's folder marker
        "other/c.jpg": jpeg_bytes(64, 48, seed=3),
    }.items():
        s3.put_object(Bucket="media", Key=key, Body=data)
    task = {**s3_env(env, moto_server), "AWS_BATCH_JOB_ARRAY_INDEX": "0"}
    # One shard of one: an AWS Batch array child with --shards 1 runs everything.
    run = batch(task, "--input", "s3://media/run", "--output", str(tmp_path), "--shards", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = {line["id"]: line for line in lines_of(tmp_path / "results.jsonl")}
    assert sorted(lines) == ["a.jpg", "junk.bin", "sub/b.jpg"]
    assert lines["sub/b.jpg"]["source"] == "s3://media/run/sub/b.jpg"
    assert lines["sub/b.jpg"]["result"]["verdict"] in ("REAL", "FAKE", "UNCERTAIN")
    assert lines["junk.bin"]["error"]["code"] == "unsupported_media_type"

    missing = tmp_path / "manifest.jsonl"
    missing.write_text(json.dumps({"id": "gone", "uri": "s3://media/run/gone.jpg"}) + "\n")
    run = batch(task, "--input", str(missing), "--output", str(tmp_path / "m.jsonl"), "--shards", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    assert lines_of(tmp_path / "m.jsonl")[0]["error"]["code"] == "file_not_found"


def test_a_manifest_to_an_s3_output_as_the_readme_runs_it(
    env: dict[str, str], moto_server, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", region_name=store_fixtures.REGION, endpoint_url=moto_server.endpoint)
    s3.create_bucket(Bucket="bucket")
    media = _files(
        tmp_path / "media",
        {"a.jpg": jpeg_bytes(64, 48, seed=1), "b.jpg": jpeg_bytes(64, 48, seed=2), "bad.jpg": b"nope"},
    )
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"id": name, "path": str(media / name)}) + "\n" for name in sorted(os.listdir(media))
        )
        # There, but every read fails (EIO): unreadable even to root, which ignores permissions.
        + json.dumps({"id": "unreadable", "path": "/proc/self/mem"})
        + "\n"
    )
    task = {**s3_env(env, moto_server), "TMPDIR": str(tmp_path)}
    # The README's command, word for word (the bucket is moto's).
    command = ["--input", str(manifest), "--output", "s3://bucket/runs/2026-11-30/", "--modality", "auto"]
    run = batch(task, *command)
    assert run.returncode == 0, run.stderr[-3000:]

    lines = {line["id"]: line for line in s3_lines(s3, "bucket", "runs/2026-11-30/results.jsonl")}
    assert sorted(lines) == ["a.jpg", "b.jpg", "bad.jpg", "unreadable"]
    DetectionResult.model_validate(lines["a.jpg"]["result"])
    assert lines["bad.jpg"]["error"]["code"] == "unsupported_media_type"
    assert lines["unreadable"]["error"] == {
        "code": "file_unreadable",
        "message": "cannot read /proc/self/mem: Input/output error",
    }
    summary = json.loads(
        s3.get_object(Bucket="bucket", Key="runs/2026-11-30/results.summary.json")["Body"].read()
    )
    assert summary["results"] == "s3://bucket/runs/2026-11-30/results.jsonl"
    assert summary["answered"] == 4
    assert summary["errors_by_code"] == {"unsupported_media_type": 1, "file_unreadable": 1}
    assert not list(tmp_path.glob("verity-batch-*")), "the working copy was left behind"

    again = batch(task, *command)  # the rerun answers nothing twice
    assert again.returncode == 0, again.stderr[-3000:]
    assert "4 already answered" in again.stderr and "onnx session ready" not in again.stderr
    assert len(s3_lines(s3, "bucket", "runs/2026-11-30/results.jsonl")) == 4

    dry = batch(task, *command, "--dry-run")
    assert dry.returncode == 0 and dry.stdout == "", dry.stderr


def test_cloud_run_tasks_from_an_s3_prefix_to_an_s3_prefix(env: dict[str, str], moto_server) -> None:
    s3 = boto3.client("s3", region_name=store_fixtures.REGION, endpoint_url=moto_server.endpoint)
    s3.create_bucket(Bucket="bucket")
    names = [f"m/{i}.jpg" for i in range(9)]
    for i, name in enumerate(names):
        s3.put_object(Bucket="bucket", Key=f"media/{name}", Body=jpeg_bytes(40, 40, seed=i))
    task_env = s3_env(env, moto_server)
    seen: list[str] = []
    for index in range(3):  # every task of a three-task Cloud Run Job
        task = with_env(task_env, {"CLOUD_RUN_TASK_INDEX": str(index), "CLOUD_RUN_TASK_COUNT": "3"})
        run = batch(task, "--input", "s3://bucket/media/", "--output", "s3://bucket/out/")
        assert run.returncode == 0, run.stderr[-3000:]
        key = f"out/results.shard-000{index}-of-0003.jsonl"
        seen += [line["id"] for line in s3_lines(s3, "bucket", key)]
        s3.head_object(Bucket="bucket", Key=f"out/results.shard-000{index}-of-0003.summary.json")
    assert sorted(seen) == sorted(names)  # disjoint and complete

    # The README's own task, 3 of 10: its one object, holding exactly its shard's items.
    task = with_env(task_env, {"CLOUD_RUN_TASK_INDEX": "3", "CLOUD_RUN_TASK_COUNT": "10"})
    run = batch(task, "--input", "s3://bucket/media/", "--output", "s3://bucket/out/")
    assert run.returncode == 0, run.stderr[-3000:]
    from batch.shards import shard_of

    shard = s3_lines(s3, "bucket", "out/results.shard-0003-of-0010.jsonl")
    assert sorted(line["id"] for line in shard) == sorted(n for n in names if shard_of(n, 10) == 3)


def test_an_s3_output_killed_mid_run_then_resumed_answers_every_item_once(
    env: dict[str, str], moto_server, tmp_path: Path
) -> None:
    s3 = boto3.client("s3", region_name=store_fixtures.REGION, endpoint_url=moto_server.endpoint)
    s3.create_bucket(Bucket="bucket")
    # Enough items that the run outlasts its first few publications by seconds: 80 tiny pictures
    # were once all answered inside the first 0.2 s publication, and the kill landed after the end.
    count = 600
    media = _files(tmp_path / "media", {f"{i:03d}.jpg": jpeg_bytes(48, 48, seed=i) for i in range(count)})
    args = ["--input", str(media), "--output", "s3://bucket/out/", "--publish-every", "0.05"]
    first = subprocess.Popen(
        [str(BIN_DIR / "python"), "-m", "batch", *args, "--concurrency", "2"],
        cwd=PROJECT_ROOT,
        env={**s3_env(env, moto_server), "TMPDIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while (
            len(s3_lines(s3, "bucket", "out/results.jsonl") if _exists(s3, "out/results.jsonl") else []) < 3
        ):
            assert first.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no results were published"
            time.sleep(0.05)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    before = len(s3_lines(s3, "bucket", "out/results.jsonl"))
    assert 3 <= before < count, "the kill must land mid-run"

    assert len(list(tmp_path.glob("verity-batch-*"))) == 1  # what the killed task could not remove
    again = batch({**s3_env(env, moto_server), "TMPDIR": str(tmp_path)}, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not list(tmp_path.glob("verity-batch-*"))  # the rerun cleared it
    ids = [line["id"] for line in s3_lines(s3, "bucket", "out/results.jsonl")]
    assert sorted(ids) == [f"{i:03d}.jpg" for i in range(count)]  # each exactly once
    summary = json.loads(s3.get_object(Bucket="bucket", Key="out/results.summary.json")["Body"].read())
    assert summary["answered"] == count and summary["this_run"]["skipped_as_answered"] == before


def _exists(s3: Any, key: str) -> bool:
    return "Contents" in s3.list_objects_v2(Bucket="bucket", Prefix=key)


@pytest.mark.parametrize(
    ("output", "says"),
    [
        ("s3://no-such-bucket/out/", "no such bucket"),
        ("s3://media/run/out/", "lies under --input"),
    ],
)
def test_an_s3_output_that_cannot_be_written_exits_2(
    env: dict[str, str], moto_server, output: str, says: str
) -> None:
    s3 = boto3.client("s3", region_name=store_fixtures.REGION, endpoint_url=moto_server.endpoint)
    s3.create_bucket(Bucket="media")
    s3.put_object(Bucket="media", Key="run/a.jpg", Body=jpeg_bytes(32, 32))
    run = batch(s3_env(env, moto_server), "--input", "s3://media/run/", "--output", output)
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and says in run.stderr, run.stderr
