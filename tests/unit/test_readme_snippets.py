"""What the README shows works as shown: its configuration table names every setting (and none
that does not exist), and its webhook receiver snippet accepts what Verity sends and refuses a
forgery."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config import Settings
from webhooks.signing import new_secret, sign_headers

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"


def _expand(name: str) -> list[str]:
    """``VERITY_RATE_LIMIT_{IMAGE,AUDIO}_PER_MIN`` -> both names."""
    match = re.search(r"\{([A-Z0-9_,]+)\}", name)
    if not match:
        return [name]
    return [n for part in match.group(1).split(",") for n in _expand(name.replace(match.group(0), part, 1))]


def configuration_names() -> set[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    names = re.findall(r"`(VERITY_[A-Z0-9_{},]+)`", " ".join(first_cells))
    return {expanded for name in names for expanded in _expand(name)}


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    settings = {f"VERITY_{name.upper()}" for name in Settings.model_fields}
    listed = configuration_names()
    assert sorted(settings - listed) == [], "settings missing from the README's Configuration table"
    assert sorted(listed - settings) == [], (
        "the README's Configuration table names settings that do not exist"
    )


def receiver_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    snippet = [b for b in blocks if b.startswith("# webhook receiver")]
    assert len(snippet) == 1, "the README has no (or several) webhook receiver snippets"
    return snippet[0]


def test_readme_webhook_receiver_verifies_what_verity_sends() -> None:
    namespace: dict = {}
    exec(compile(receiver_snippet(), "README.md", "exec"), namespace)  # the README's own code
    handle = namespace["handle"]
    secret = new_secret()
    body = json.dumps(
        {"type": "job.succeeded", "data": {"id": "job_1", "result": {"verdict": "REAL"}}}
    ).encode()
    headers = sign_headers(secret, "msg_1", datetime.now(UTC), body)
    event = handle(secret, headers, body)
    assert event["type"] == "job.succeeded" and event["data"]["result"]["verdict"] == "REAL"
    assert handle(secret, headers, body.replace(b"REAL", b"FAKE")) is None  # altered in transit
    assert handle(new_secret(), headers, body) is None  # signed by someone else
