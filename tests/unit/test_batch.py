"""The batch runner's pure parts: the shard partition, which shard a task is, where its results
go, manifest lines, folder listing, the crash-safe results file and the progress switch. The
runner itself, on real media and models, is tests/e2e/test_batch.py."""

from __future__ import annotations

import io
import json
import logging
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch.cli import parser
from batch.items import collect, list_folder, read_manifest
from batch.progress import Progress, configure_logging
from batch.results import ResultsFile, scan
from batch.s3_output import s3_results_uri, summary_uri
from batch.shards import WHOLE, Shard, choose_shard, parse_shard, results_path, shard_of, summary_path
from batch.summary import Tally
from batch.usage import UsageError
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.unit

CAP = 3600  # the job frame cap the manifest checks options against


# --- shards -----------------------------------------------------------------------------------------


@given(
    ids=st.lists(st.text(min_size=1, max_size=40), unique=True, max_size=100),
    count=st.integers(min_value=1, max_value=32),
)
def test_shards_are_disjoint_and_together_hold_every_item(ids: list[str], count: int) -> None:
    shards = [Shard(index, count) for index in range(count)]
    held = [[item for item in ids if shard.holds(item)] for shard in shards]
    assert sorted(item for part in held for item in part) == sorted(ids)  # complete, nothing twice
    for item in ids:
        assert sum(shard.holds(item) for shard in shards) == 1  # disjoint


def test_the_partition_never_changes() -> None:
    """Tasks of one run may run different releases (a retry after a deploy): the shard of an id
    is part of the results' format, pinned here."""
    assert [shard_of(item, 10) for item in ("a", "img0.jpg", "clips/2026/x.mp4")] == [0, 1, 9]
    assert shard_of("a", 1_000_003) == 441830


def test_shard_flag_env_and_their_order() -> None:
    cloud = {"CLOUD_RUN_TASK_INDEX": "3", "CLOUD_RUN_TASK_COUNT": "10"}
    assert choose_shard(None, None, {}) == WHOLE
    assert choose_shard("2/5", None, cloud) == Shard(2, 5)  # the flag wins
    assert choose_shard(None, None, cloud) == Shard(3, 10)
    assert choose_shard(None, 4, {"AWS_BATCH_JOB_ARRAY_INDEX": "1"}) == Shard(1, 4)
    assert choose_shard(None, 1, {}) == WHOLE


@pytest.mark.parametrize(
    ("flag", "shards", "env", "says"),
    [
        ("3", None, {}, "INDEX/COUNT"),
        ("a/4", None, {}, "whole number"),
        ("4/4", None, {}, "0..count-1"),
        ("0/0", None, {}, "0..count-1"),
        ("-1/3", None, {}, "0..count-1"),
        (None, None, {"AWS_BATCH_JOB_ARRAY_INDEX": "2"}, "--shards N"),
        (None, 4, {}, "AWS_BATCH_JOB_ARRAY_INDEX"),
        (None, None, {"CLOUD_RUN_TASK_INDEX": "1"}, "CLOUD_RUN_TASK_COUNT"),
        (None, 3, {"AWS_BATCH_JOB_ARRAY_INDEX": "3"}, "0..count-1"),
    ],
)
def test_bad_shards_are_refused_in_words(flag, shards, env, says) -> None:
    with pytest.raises(UsageError, match=says):
        choose_shard(flag, shards, env)


def test_each_shard_writes_its_own_file(tmp_path: Path) -> None:
    assert results_path("out/results.jsonl", WHOLE) == Path("out/results.jsonl")
    assert results_path("out/results.jsonl", parse_shard("3/10")) == Path(
        "out/results.shard-0003-of-0010.jsonl"
    )
    assert results_path(f"{tmp_path}", WHOLE) == tmp_path / "results.jsonl"  # a folder
    assert results_path("runs/today/", Shard(0, 2)) == Path("runs/today/results.shard-0000-of-0002.jsonl")
    assert summary_path(Path("out/results.shard-0003-of-0010.jsonl")) == Path(
        "out/results.shard-0003-of-0010.summary.json"
    )


@pytest.mark.parametrize(
    ("output", "shard", "uri"),
    [
        ("s3://b/runs/2026-11-30/", WHOLE, "s3://b/runs/2026-11-30/results.jsonl"),
        ("s3://b/runs/2026-11-30", WHOLE, "s3://b/runs/2026-11-30/results.jsonl"),  # a folder too
        ("s3://b/out/", Shard(3, 10), "s3://b/out/results.shard-0003-of-0010.jsonl"),
        ("s3://b/", WHOLE, "s3://b/results.jsonl"),
        ("s3://b", Shard(0, 2), "s3://b/results.shard-0000-of-0002.jsonl"),
        ("s3://b/runs/out.jsonl", WHOLE, "s3://b/runs/out.jsonl"),
        ("s3://b/out.jsonl", Shard(1, 4), "s3://b/out.shard-0001-of-0004.jsonl"),
    ],
)
def test_each_shard_writes_its_own_s3_object(output: str, shard: Shard, uri: str) -> None:
    assert s3_results_uri(output, shard) == uri
    assert summary_uri(uri) == uri.removesuffix(".jsonl") + ".summary.json"


# --- items ------------------------------------------------------------------------------------------


def test_a_folder_lists_every_file_sorted_by_relative_path(tmp_path: Path) -> None:
    for name in ("b.jpg", "a/z.wav", "a/b/c.mp4", ".hidden", ".git/config", "a/.DS_Store"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert list_folder(tmp_path) == ["a/b/c.mp4", "a/z.wav", "b.jpg"]
    items = collect(str(tmp_path), modality="image", max_frames_cap=CAP, list_s3=_no_s3)
    assert (items[0].id, items[0].source, items[0].modality) == (
        "a/b/c.mp4",
        str(tmp_path / "a/b/c.mp4"),
        "image",
    )


def _no_s3(location: str) -> list[tuple[str, str]]:
    raise AssertionError(f"listed {location}")


def _manifest(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_manifest_lines_become_items(tmp_path: Path) -> None:
    path = _manifest(
        tmp_path,
        {"id": "one", "path": "media/a.jpg"},
        "",
        {"id": "two", "path": "/abs/b.mp4", "modality": "video", "options": {"fps": 2, "strategy": "frames"}},
        {"id": "three", "uri": "s3://bucket/key/c.wav"},
        {"id": "four", "uri": "file:///srv/media/d%20e.jpg", "modality": "image"},
    )
    items = read_manifest(path, modality=None, max_frames_cap=CAP)
    assert [(i.id, i.source, i.modality) for i in items] == [
        ("one", str(tmp_path / "media/a.jpg"), None),  # relative to the manifest's folder
        ("two", "/abs/b.mp4", "video"),
        ("three", "s3://bucket/key/c.wav", None),
        ("four", "/srv/media/d e.jpg", "image"),
    ]
    assert items[1].options == {"fps": 2, "strategy": "frames"}
    assert read_manifest(path, modality="audio", max_frames_cap=CAP)[0].modality == "audio"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ({"path": "a.jpg"}, "'id' must be a non-empty string"),
        ({"id": 7, "path": "a.jpg"}, "'id' must be a non-empty string"),
        ({"id": "x"}, "exactly one of 'path' and 'uri'"),
        ({"id": "x", "path": "a", "uri": "s3://b/k"}, "exactly one of 'path' and 'uri'"),
        ({"id": "x", "uri": "http://example.com/a.jpg"}, "'uri' must be"),
        ({"id": "x", "path": "a", "modality": "hologram"}, "'modality' must be one of"),
        ({"id": "x", "path": "a", "modalty": "image"}, "unknown keys \\['modalty'\\]"),
        ({"id": "x", "path": "a", "modality": "video", "options": {"fps": 99}}, "options.fps"),
        ({"id": "x", "path": "a", "modality": "image", "options": {"fsp": 1}}, "options.fsp"),
        ({"id": "x", "path": "a", "modality": "video", "options": {"max_frames": 4000}}, "max_frames"),
        ({"id": "x", "path": "a", "options": []}, "'options' must be an object"),
        ({"id": "first", "path": "again"}, "id 'first' again \\(first on line 1\\)"),
    ],
)
def test_a_bad_manifest_line_refuses_the_run_naming_it(tmp_path: Path, line, says) -> None:
    path = _manifest(tmp_path, {"id": "first", "path": "a.jpg"}, line)
    with pytest.raises(UsageError, match=f"manifest.jsonl:2: .*{says}"):
        read_manifest(path, modality=None, max_frames_cap=CAP)


def test_a_media_file_given_as_manifest_says_how_it_was_read(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    with pytest.raises(UsageError, match="read as a JSONL manifest"):
        collect(str(path), modality=None, max_frames_cap=CAP, list_s3=_no_s3)
    with pytest.raises(UsageError, match="no such file or folder"):
        collect(str(tmp_path / "nope"), modality=None, max_frames_cap=CAP, list_s3=_no_s3)


# --- results ----------------------------------------------------------------------------------------


def test_a_partial_last_line_is_cut_and_its_item_runs_again(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.jsonl"
    tally = Tally()
    results = ResultsFile.open(path, tally.add)  # creates the folder too
    results.append({"id": "a", "source": "a", "modality": "image", "result": {"verdict": "REAL"}})
    results.append({"id": "b\nc", "source": "b", "modality": None, "error": {"code": "empty_file"}})
    results.close()
    complete = path.read_bytes()
    assert complete.count(b"\n") == 2  # a newline inside an id stays escaped: one line per item
    with path.open("ab") as handle:
        handle.write(b'{"id": "c", "source": "c", "result": {"verd')  # killed mid-write
    seen: list[str] = []
    assert scan(path, lambda line: seen.append(line["id"])) == (len(complete), path.stat().st_size)
    tally = Tally()
    results = ResultsFile.open(path, tally.add)
    assert path.read_bytes() == complete
    results.append({"id": "c", "source": "c", "modality": "image", "result": {"verdict": "FAKE"}})
    results.close()
    assert tally.ids == {"a", "b\nc"}
    assert tally.by_modality == {"image": {"REAL": 1}, "unknown": {"error": 1}}
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a", "b\nc", "c"]


@pytest.mark.parametrize("content", [b"id,verdict\nx,REAL\n", b'{"id": "x"}\n', b"[]\n"])
def test_a_file_the_runner_did_not_write_is_never_appended_to(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=r"results\.jsonl:1 is not a line of a batch run"):
        ResultsFile.open(path, lambda line: None)
    assert path.read_bytes() == content


def test_an_unwritable_output_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="cannot write"):
        ResultsFile.open(tmp_path / "file" / "results.jsonl", lambda line: None)


# --- progress ---------------------------------------------------------------------------------------


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_rate_and_eta(root_logging) -> None:
    stream = _Terminal()
    assert configure_logging("INFO", stream) is True
    progress = Progress(2, tty=True, stream=stream)
    progress.advance({"id": "a", "result": {}})
    logging.getLogger("batch").info("a line above the bar")
    progress.advance({"id": "b", "error": {}})
    progress.close()
    shown = stream.getvalue()
    assert "2/2" in shown and "item/s" in shown and "errors=1" in shown
    assert "INFO a line above the bar" in shown


def test_elsewhere_every_log_line_is_json(root_logging) -> None:
    stream = io.StringIO()
    assert configure_logging("INFO", stream) is False
    progress = Progress(1, tty=False, stream=stream)
    progress.advance({"id": "a", "result": {}})
    progress.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[-1]["message"] == "progress 1/1"
    assert lines[-1]["done"] == 1 and lines[-1]["total"] == 1 and "items_per_s" in lines[-1]


# --- the README -------------------------------------------------------------------------------------


def test_the_readme_commands_are_valid_commands() -> None:
    """Every ``python -m batch`` line of the README's "Batch runs" block parses, with a shard."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Batch runs\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the Batch runs section lost its commands"
    commands = [line for line in block.group(1).splitlines() if "python -m batch" in line]
    assert len(commands) >= 5
    for command in commands:
        words = shlex.split(command)
        env: dict[str, str] = {}
        while "=" in words[0]:  # the variables set before the command
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        assert words[:3] == [".venv/bin/python", "-m", "batch"], command
        args = parser().parse_args(words[3:])  # an unknown flag exits the test
        choose_shard(args.shard, args.shards, env)
