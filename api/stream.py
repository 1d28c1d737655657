"""Live analysis over a WebSocket: ``POST /v1/stream/token``, then ``/v1/stream?token=...``.

The client sends frames (binary JPEG/PNG messages, or text ``{"frame": "data:image/...;base64,..."}``)
and gets one JSON message per frame:

* ``{"type": "result", "seq", "verdict", "fake_probability", "threshold", "faces", "width",
  "height", "rolling", "model", "timing_ms", "warnings"}`` for an analysed frame: the image
  pipeline with ``faces=auto`` (the same decode limits, face finder and model as
  ``POST /v1/detect/image``), plus a rolling verdict over the last ``VERITY_STREAM_WINDOW``
  analysed frames that had a face;
* ``{"type": "dropped", "seq", "reason": "busy" | "rate"}`` for a frame not analysed because the
  previous one still was (one frame in flight per session, never a queue: a live feed wants the
  newest frame, not a backlog) or because it came sooner than ``VERITY_STREAM_MAX_FPS`` allows;
* ``{"type": "error", "seq", "error": {"code", "message"}}`` for a bad frame; the session goes on.

``seq`` counts the client's frames in arrival order from 0. The session ends with close 1000
after ``VERITY_STREAM_IDLE_TIMEOUT_S`` without a frame or ``VERITY_STREAM_MAX_SESSION_S`` in all,
4429 when the user's quota runs out or they hold ``VERITY_STREAM_MAX_SESSIONS_PER_USER`` sessions
on this instance already, 1008 at the handshake without a valid token (``auth.middleware``).

Metering: one quota unit buys ``VERITY_STREAM_FRAMES_PER_UNIT`` analysed frames, taken as the
first frame of each group is admitted; dropped and refused frames are free. Results are not
kept in the history (a camera makes thousands).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import FastAPI, Request
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

import metrics
from api import account_routes
from api.openapi import error_responses
from api.payload import decode_data_url
from auth.accounts import Accounts
from auth.principal import Principal
from auth.quotas import Meter, consume
from auth.stream_tokens import STREAM_PATH, issue_stream_token
from config import Settings
from detect.engine import Engine
from detect.image import detect_image
from errors import InvalidInput, QuotaExceeded, ServiceUnavailable, TooLarge, VerityError, public_message
from models.postprocess import verdict_for

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_TRY_LATER = 4429  # the private-use range: "too many requests", as HTTP's 429
_FRAME_OUTCOMES = {"result": "analysed", "dropped": "dropped", "error": "rejected"}


@dataclass
class Rolling:
    """The verdict over the last ``size`` analysed frames that had a face: the mean of their
    probabilities, so one noisy frame does not flip a live verdict."""

    size: int
    probabilities: deque[float] = field(default_factory=deque)

    def add(self, probability: float | None) -> None:
        if probability is None:
            return
        self.probabilities.append(probability)
        while len(self.probabilities) > self.size:
            self.probabilities.popleft()

    def document(self, threshold: float, uncertain_band: float) -> dict[str, Any]:
        if not self.probabilities:
            return {"verdict": "NO_FACE", "fake_probability": None, "frames": 0}
        mean = sum(self.probabilities) / len(self.probabilities)
        return {
            "verdict": verdict_for(mean, threshold, uncertain_band),
            "fake_probability": round(mean, 6),
            "frames": len(self.probabilities),
        }


class SessionCounter:
    """Open sessions per user on this instance (the limit is per instance: a session lives on
    the instance that accepted it)."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def try_open(self, user_id: str, limit: int) -> bool:
        if self._open.get(user_id, 0) >= limit:
            return False
        self._open[user_id] = self._open.get(user_id, 0) + 1
        return True

    def close(self, user_id: str) -> None:
        left = self._open.get(user_id, 1) - 1
        if left > 0:
            self._open[user_id] = left
        else:
            self._open.pop(user_id, None)


class QuotaSpent(Exception):
    """The user's quota refused the next frame: the session ends with 4429."""

    def __init__(self, error: VerityError) -> None:
        super().__init__(error.message)
        self.error = error


def _error(exc: VerityError) -> dict[str, Any]:
    return {"code": exc.code, "message": public_message(exc)}


def frame_bytes(message: dict[str, Any], max_bytes: int) -> bytes:
    """A frame's bytes from a WebSocket message: binary as it is, text as ``{"frame": data URL}``."""
    data = message.get("bytes")
    if data is None:
        text = message.get("text") or ""
        if len(text) > max_bytes * 4 // 3 + 1024:  # base64 of a frame over the cap
            raise TooLarge(f"a frame is at most {max_bytes} bytes", code="file_too_large")
        try:
            document = json.loads(text)
        except ValueError:
            raise InvalidInput(
                'a text message must be JSON {"frame": "data:image/...;base64,..."}', code="invalid_frame"
            ) from None
        if not isinstance(document, dict) or not isinstance(document.get("frame"), str):
            raise InvalidInput('a text message must be JSON {"frame": "data:..."}', code="invalid_frame")
        data = decode_data_url(document["frame"])
    if len(data) > max_bytes:
        raise TooLarge(f"a frame is at most {max_bytes} bytes", code="file_too_large")
    if not data:
        raise InvalidInput("an empty frame", code="invalid_frame")
    return data


def result_message(seq: int, result: dict[str, Any], rolling: Rolling, settings: Settings) -> dict[str, Any]:
    rolling.add(result["fake_probability"])
    return {
        "type": "result",
        "seq": seq,
        "verdict": result["verdict"],
        "fake_probability": result["fake_probability"],
        "threshold": result["threshold"],
        "faces": result["faces"],
        "width": result["media"]["width"],
        "height": result["media"]["height"],
        "rolling": rolling.document(result["threshold"], settings.uncertain_band),
        "model": result["model"],
        "timing_ms": result["timing_ms"],
        "warnings": result["warnings"],
    }


class StreamSession:
    """One WebSocket: frames in, one message out per frame, one frame analysed at a time."""

    def __init__(
        self,
        websocket: WebSocket,
        engine: Engine,
        accounts: Accounts,
        principal: Principal,
        settings: Settings,
    ) -> None:
        self.websocket = websocket
        self.engine = engine
        self.accounts = accounts
        self.settings = settings
        self.principal = principal
        self.rolling = Rolling(self.settings.stream_window)
        self.analysed = 0
        self.busy = False
        self.last_admitted = 0.0
        self._send_lock = anyio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        # Every frame is answered here exactly once, so this is where frames are counted.
        outcome = _FRAME_OUTCOMES.get(message["type"])
        if outcome is not None and message.get("seq") is not None:
            metrics.stream_frame(outcome)
        async with self._send_lock:  # the reader and the analysis both answer
            if self.websocket.application_state == WebSocketState.CONNECTED:
                await self.websocket.send_text(json.dumps(message, separators=(",", ":")))

    async def run(self) -> None:
        settings = self.settings
        await self.send(
            {
                "type": "ready",
                "max_fps": settings.stream_max_fps,
                "max_frame_bytes": settings.stream_max_frame_bytes,
                "window": settings.stream_window,
                "idle_timeout_s": settings.stream_idle_timeout_s,
                "max_session_s": settings.stream_max_session_s,
                "frames_per_unit": settings.stream_frames_per_unit,
            }
        )
        deadline = time.monotonic() + settings.stream_max_session_s
        seq = -1
        async with anyio.create_task_group() as group:
            while True:
                wait = min(settings.stream_idle_timeout_s, deadline - time.monotonic())
                message = None
                with anyio.move_on_after(max(wait, 0)):
                    message = await self.websocket.receive()
                if message is None:
                    ended = "session length limit reached" if time.monotonic() >= deadline else "idle timeout"
                    await self.close(CLOSE_NORMAL, ended)
                    break
                if message["type"] == "websocket.disconnect":
                    break
                seq += 1
                try:
                    data = frame_bytes(message, settings.stream_max_frame_bytes)
                except VerityError as exc:
                    await self.send({"type": "error", "seq": seq, "error": _error(exc)})
                    continue
                now = time.monotonic()
                if self.busy:
                    await self.send({"type": "dropped", "seq": seq, "reason": "busy"})
                    continue
                if now - self.last_admitted < 1.0 / settings.stream_max_fps:
                    await self.send({"type": "dropped", "seq": seq, "reason": "rate"})
                    continue
                self.last_admitted = now
                self.busy = True
                group.start_soon(self.analyse, seq, data, group.cancel_scope)
            group.cancel_scope.cancel()  # a frame still in analysis has no one to answer to

    async def analyse(self, seq: int, data: bytes, session: anyio.CancelScope) -> None:
        try:
            if self.analysed % self.settings.stream_frames_per_unit == 0:
                await self.admit()
            result = await detect_image(
                self.engine, data, model_id=None, explain=False, faces="auto", provenance=False
            )
            self.analysed += 1
            await self.send(result_message(seq, result, self.rolling, self.settings))
        except QuotaSpent as spent:
            await self.send({"type": "error", "seq": seq, "error": _error(spent.error)})
            await self.close(CLOSE_TRY_LATER, spent.error.code)
            session.cancel()
        except VerityError as exc:
            await self.send({"type": "error", "seq": seq, "error": _error(exc)})
        finally:
            self.busy = False

    async def admit(self) -> None:
        """One unit of the day (and of the stream's minute) for the next group of frames."""
        meter = Meter("stream", self.settings.rate_limit_stream_per_min)
        outcome = await anyio.to_thread.run_sync(
            consume, self.accounts.store, self.principal.user, meter, self.settings, self.accounts.clock()
        )
        if not outcome.decision.allowed:
            daily = outcome.decision.scope == "daily"
            what = "daily" if daily else "per-minute stream"
            raise QuotaSpent(
                QuotaExceeded(
                    f"{what} limit reached; retry in {outcome.retry_after_s} s",
                    code="daily_quota_exceeded" if daily else "rate_limited",
                )
            )

    async def close(self, code: int, reason: str) -> None:
        async with self._send_lock:
            if self.websocket.application_state == WebSocketState.CONNECTED:
                await self.websocket.close(code, reason[:120])


def add_stream_routes(app: FastAPI, settings: Settings) -> None:
    """``POST /v1/stream/token`` and the ``/v1/stream`` WebSocket on ``app``."""
    sessions = SessionCounter()

    @app.post(
        "/v1/stream/token",
        tags=["stream"],
        responses=error_responses(401, 403),
        summary="A single-use token to open the live stream WebSocket",
    )
    async def stream_token(request: Request, principal: account_routes.DetectPrincipal) -> dict[str, Any]:
        """Open `/v1/stream?token=...` with it within `expires_in` seconds (a browser cannot set
        headers on a WebSocket)."""
        accounts: Accounts = request.app.state.accounts
        token, ttl = issue_stream_token(settings, principal, accounts.clock().timestamp())
        return {"token": token, "expires_in": ttl, "url": f"{STREAM_PATH}?token={token}"}

    @app.websocket(STREAM_PATH)
    async def stream(websocket: WebSocket) -> None:
        principal: Principal = websocket.scope["state"]["principal"]  # the token's (auth.middleware)
        accounts: Accounts = websocket.app.state.accounts
        engine: Engine | None = getattr(websocket.app.state, "engine", None)
        await websocket.accept()
        if engine is None:
            starting = ServiceUnavailable("the service is starting", code="starting")
            await websocket.send_text(json.dumps({"type": "error", "seq": None, "error": _error(starting)}))
            await websocket.close(1013, "the service is starting; retry shortly")  # 1013: try again later
            return
        if not sessions.try_open(principal.user_id, settings.stream_max_sessions_per_user):
            await websocket.close(
                CLOSE_TRY_LATER, f"at most {settings.stream_max_sessions_per_user} open streams per user"
            )
            return
        try:
            with metrics.stream_session():
                await StreamSession(websocket, engine, accounts, principal, settings).run()
        except WebSocketDisconnect:
            pass  # the client left; nothing to answer
        finally:
            sessions.close(principal.user_id)
