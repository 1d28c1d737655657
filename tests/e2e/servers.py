"""Start, probe and stop real server process trees for the e2e tests.

``bentoml serve`` runs a circus arbiter (the process we start) that spawns one worker per service.
Circus calls ``os.setsid()`` in every worker (circus/process.py), so the workers live in their own
sessions and process groups: signalling our process group reaches the arbiter only. The arbiter
stops its workers on SIGTERM; whatever is still alive after the grace period is killed by the PIDs
recorded from our own process tree, never by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import PROJECT_ROOT, TEST_PASSWORD, Account, unique_email

log = logging.getLogger(__name__)

BIN_DIR = Path(sys.executable).parent
READY_PATH = "/health/ready"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_home(shared_home: Path, dest: Path) -> Path:
    """A BENTOML_HOME for one server that shares the test session's model store.

    BentoML keeps its Prometheus multiprocess directory at ``$BENTOML_HOME/prometheus_multiproc_dir``
    and every ``bentoml serve`` empties it on start (``bentoml.serving.ensure_prometheus_dir``), so
    two servers on one home wipe each other's metrics. Each server gets its own home; ``models``
    links to the session's store, so the tiny models are exported once.
    """
    dest.mkdir(parents=True, exist_ok=True)
    (shared_home / "models").mkdir(parents=True, exist_ok=True)
    link = dest / "models"
    if not link.exists():
        link.symlink_to(shared_home / "models", target_is_directory=True)
    return dest


def server_env(bentoml_home: Path) -> dict[str, str]:
    """The test process's environment (VERITY_*, BENTOML_DO_NOT_TRACK) plus what a server needs."""
    env = dict(os.environ)
    # Under `make test`, MAKEFLAGS carries that make's flags and command-line variables into any
    # nested make; a server (and `make serve`) must see only its own command line.
    for variable in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(variable, None)
    env["BENTOML_HOME"] = str(bentoml_home)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join((str(BIN_DIR), env.get("PATH", "")))
    return env


def with_env(base: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    """``base`` with ``changes`` applied: a value sets the variable, None removes it."""
    env = dict(base)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


class ServerProcess:
    """One started command (``bentoml serve`` or ``make serve``) and the process tree under it.

    Each server keeps its accounts in a SQLite file (and its development JWT secret, and its
    uploads) of its own, next to its log: never the in-process tests' store, never ``var/``.
    ``env`` adds settings; a value of None removes that variable."""

    def __init__(
        self,
        argv: list[str],
        *,
        port: int,
        bentoml_home: Path,
        log_path: Path,
        env: dict[str, str | None] | None = None,
    ) -> None:
        self.argv = argv
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.bentoml_home = bentoml_home
        self.log_path = log_path
        self._log_file = log_path.open("wb")
        self._stopped = False
        self._seen: dict[int, psutil.Process] = {}
        self.sqlite_path = log_path.parent / "verity.db"
        environment = server_env(bentoml_home)
        environment["VERITY_SQLITE_PATH"] = str(self.sqlite_path)
        environment["VERITY_DEV_SECRET_PATH"] = str(log_path.parent / "dev-secret")
        environment["VERITY_BLOB_DIR"] = str(log_path.parent / "blobs")
        self._environment = with_env(environment, env or {})
        self._respawned = False
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        log.info("starting %s (log: %s)", " ".join(self.argv), self.log_path)
        return subprocess.Popen(
            self.argv,
            cwd=PROJECT_ROOT,
            env=self._environment,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our own process group: stopping it touches nothing else
        )

    def _lost_a_port_race(self) -> bool:
        """BentoML's supervisor binds control ports it picked at random; another process can take
        one first ("Address already in use"): a start-up accident, not what a test checks."""
        self._log_file.flush()
        return b"Address already in use" in self.log_path.read_bytes()[-20_000:]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tree(self) -> list[psutil.Process]:
        """The root process and all of its live descendants (remembered for ``stop``)."""
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        self._seen.update((p.pid, p) for p in procs)
        return procs

    def _ours(self) -> list[psutil.Process]:
        """Every process of our tree seen so far that still runs; psutil compares creation times,
        so a recycled PID is never mistaken for ours."""
        self.tree()
        return [p for p in self._seen.values() if p.is_running()]

    def log_tail(self, lines: int = 60) -> str:
        self._log_file.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Poll ``/health/ready`` until it answers 200; fail the test with the log tail if not."""
        started = time.monotonic()
        last = "no answer yet"
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while time.monotonic() - started < timeout_s:
                if self.proc.poll() is not None and not self._respawned and self._lost_a_port_race():
                    log.warning("%s lost a port race at start; starting it once more", self.url)
                    self._respawned = True
                    self.proc = self._spawn()
                    continue
                if self.proc.poll() is not None:
                    pytest.fail(
                        f"{' '.join(self.argv)} exited with {self.proc.returncode} before it was ready; "
                        f"log tail:\n{self.log_tail()}"
                    )
                self.tree()
                try:
                    response = client.get(READY_PATH)
                    if response.status_code == 200:
                        elapsed = time.monotonic() - started
                        log.info("%s ready after %.1f s", self.url, elapsed)
                        return elapsed
                    last = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                time.sleep(0.5)
        self.stop()
        pytest.fail(
            f"{' '.join(self.argv)} not ready after {timeout_s:.0f} s (last: {last}); "
            f"log tail:\n{self.log_tail()}"
        )

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM our process group, then SIGKILL whatever of our tree outlives the grace period."""
        if self._stopped:
            return
        self._stopped = True
        procs = self._ours()  # recorded before the arbiter reaps its workers
        if self.proc.poll() is None:  # once reaped, the group id may belong to someone else
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        if alive:
            log.warning("killing %s, still alive %.0f s after SIGTERM", [p.pid for p in alive], grace_s)
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
            for proc in alive:  # circus workers sit in their own sessions: kill them by PID
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.kill()
            psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log_file.close()
        log.info("stopped %s (exit %s)", " ".join(self.argv), self.proc.returncode)


def bentoml_serve(
    shared_home: Path, workdir: Path, env: dict[str, str | None] | None = None
) -> ServerProcess:
    """``bentoml serve service:Verity`` on a free loopback port, with its own model home (a copy
    of ``shared_home``'s models), log and state under ``workdir``; started, not yet ready."""
    port = free_port()
    return ServerProcess(
        [str(BIN_DIR / "bentoml"), "serve", "service:Verity", "--host", "127.0.0.1", "--port", str(port)],
        port=port,
        bentoml_home=server_home(shared_home, workdir / "bentoml-home"),
        log_path=workdir / "server.log",
        env=env,
    )


def signup_over_http(url: str, email: str | None = None, password: str = TEST_PASSWORD) -> Account:
    """``POST /v1/auth/signup`` on a running server; the answer carries the key, shown once."""
    email = email or unique_email("e2e")
    response = httpx.post(f"{url}/v1/auth/signup", json={"email": email, "password": password}, timeout=30)
    assert response.status_code == 201, response.text
    body = response.json()
    return Account(body["user"]["id"], body["user"]["email"], password, body["api_key"]["key"])
