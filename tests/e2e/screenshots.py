"""Screenshots of the page's main states into docs/screenshots/ (the README shows them).

    .venv/bin/python -m tests.e2e.screenshots

Runs the page's browser tests (tests/e2e/test_page.py: a real ``bentoml serve`` with the test
session's tiny models, Debian's Chromium) with ``VERITY_SCREENSHOTS_DIR`` set, so each test saves
the state it reaches. The results come from tiny development models: the dev banner and the
``dev_weights`` warning are in the pictures on purpose.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
OUT = PROJECT_ROOT / "docs" / "screenshots"


def main() -> int:
    os.environ["VERITY_SCREENSHOTS_DIR"] = str(OUT)
    code = pytest.main([str(PROJECT_ROOT / "tests" / "e2e" / "test_page.py"), "-q", "-p", "no:cacheprovider"])
    print(f"screenshots in {OUT}: {sorted(p.name for p in OUT.glob('*.png'))}")  # noqa: T201
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
