"""Errors that carry their HTTP status (STYLE §6).

Every failure a client can cause is one of these; ``api.app`` maps them to the single JSON
error shape of SPEC §4. Anything else reaching the handler is a bug and becomes a 500.
"""

from __future__ import annotations


class VerityError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.headers = headers or {}
        self.details = details or {}


class BadRequest(VerityError):
    status, code = 400, "bad_request"


class NotFound(VerityError):
    status, code = 404, "not_found"


class MethodNotAllowed(VerityError):
    status, code = 405, "method_not_allowed"


class TooLarge(VerityError):
    status, code = 413, "payload_too_large"


class UnsupportedMedia(VerityError):
    status, code = 415, "unsupported_media_type"


class BadMedia(VerityError):
    """The bytes claim a supported type but cannot be decoded (truncated, corrupt, empty)."""

    status, code = 422, "invalid_media"


class InvalidInput(VerityError):
    status, code = 422, "invalid_input"


class ServiceUnavailable(VerityError):
    status, code = 503, "service_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("Retry-After", str(retry_after_s))


class ModelError(Exception):
    """Raised by the export side; not an HTTP error."""


class ParityError(ModelError):
    """An export disagrees with its source framework beyond the stated tolerance."""

    def __init__(self, model_id: str, max_abs_diff: float, tolerance: float, where: str) -> None:
        super().__init__(
            f"{model_id}: ONNX output differs from the source model by {max_abs_diff:.3g} "
            f"(tolerance {tolerance:.3g}) at {where}"
        )
        self.model_id = model_id
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance
        self.where = where


class Unauthorized(VerityError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers.setdefault("WWW-Authenticate", 'Bearer realm="verity"')


class Forbidden(VerityError):
    status, code = 403, "forbidden"


class Conflict(VerityError):
    status, code = 409, "conflict"


class QuotaExceeded(VerityError):
    status, code = 429, "rate_limited"


class StoreUnavailable(ServiceUnavailable):
    """The account store failed: fail closed (SPEC §5), never a free pass."""

    code = "store_unavailable"
