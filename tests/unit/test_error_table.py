"""The README's error table is the code's: every code the runtime can raise is listed in
``errors.ERROR_CODES`` with the status it is raised with, nothing listed is stale, and the
README holds exactly the table rendered from it (``python -m errors``)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import errors
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.unit

RUNTIME_DIRS = (
    "api",
    "auth",
    "batch",
    "blobs",
    "config",
    "detect",
    "faces",
    "infra",
    "jobs",
    "media",
    "models",
    "store",
    "webhooks",
)
RUNTIME_FILES = ("errors.py", "service.py", "logs.py")
# Error classes by name, for the status an exception is raised with.
ERROR_CLASSES = {
    name: cls
    for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, errors.VerityError)
}
# Helpers that render an error or raise one of a known class with the code they are given.
RENDERERS = {"error_response", "error_document"}
CODE_PASSING = {"run_tool": errors.BadMedia}
# Built with the request's media kind (api/payload.py: code=f"missing_{kind}").
DYNAMIC = {"missing_image", "missing_audio", "missing_video"}


def runtime_sources() -> Iterator[Path]:
    for folder in RUNTIME_DIRS:
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            if "export" not in path.relative_to(PROJECT_ROOT).parts:  # export-time, no HTTP
                yield path
    for name in RUNTIME_FILES:
        yield PROJECT_ROOT / name


def _strings(node: ast.AST) -> list[str]:
    """A constant string, or both branches of ``a if cond else b``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    return []


def raised_codes() -> dict[str, set[int | None]]:
    """code -> the statuses it is raised with (None where the raising helper does not say)."""
    found: dict[str, set[int | None]] = {}

    def add(code: str, status: int | None) -> None:
        found.setdefault(code, set()).add(status)

    for path in runtime_sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in RENDERERS:
                args = [a for a in node.args if isinstance(a, ast.Constant)]
                statuses = [a.value for a in args if isinstance(a.value, int)]
                for code in (a.value for a in args if isinstance(a.value, str)):
                    if re.fullmatch(r"[a-z]+(_[a-z]+)+", code):
                        add(code, statuses[0] if statuses else None)
                continue
            cls = ERROR_CLASSES.get(name) or CODE_PASSING.get(name)
            codes = [c for k in node.keywords if k.arg == "code" for c in _strings(k.value)]
            if name in ERROR_CLASSES and not any(k.arg == "code" for k in node.keywords):
                codes = [cls.code]  # raised with its class's own code
            for code in codes:
                add(code, cls.status if cls else None)
    return found


def test_every_raised_code_is_listed_with_its_status() -> None:
    raised = raised_codes()
    assert len(raised) > 40, sorted(raised)  # the scan sees the code base, not an empty folder
    unlisted = sorted(set(raised) - set(errors.ERROR_CODES))
    assert not unlisted, f"codes raised but missing from errors.ERROR_CODES: {unlisted}"
    wrong = {
        code: (sorted(s for s in statuses if s), errors.ERROR_CODES[code][0])
        for code, statuses in raised.items()
        if {s for s in statuses if s is not None} - {errors.ERROR_CODES[code][0]}
    }
    assert not wrong, f"raised with another status than the table says (raised, listed): {wrong}"


def test_nothing_listed_is_stale() -> None:
    stale = sorted(set(errors.ERROR_CODES) - set(raised_codes()) - DYNAMIC)
    assert not stale, f"listed in errors.ERROR_CODES but raised nowhere: {stale}"
    payload = (PROJECT_ROOT / "api" / "payload.py").read_text(encoding="utf-8")
    assert 'code=f"missing_{kind}"' in payload


def test_readme_holds_the_generated_table() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- error-codes:start -->\n(.*?)\n<!-- error-codes:end -->", readme, re.S)
    assert match, "README.md lacks the <!-- error-codes:start/end --> block"
    generated = subprocess.run(
        [sys.executable, "-m", "errors"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert match.group(1).strip() == generated, "README's error table is stale: paste `python -m errors`"
