"""Standard Webhooks signatures (https://www.standardwebhooks.com).

Receivers verify with any Standard Webhooks library, so the signing itself is the
``standardwebhooks`` package's, never our own HMAC code: the signed content is
``{webhook-id}.{webhook-timestamp}.{body}``, HMAC-SHA256 with the endpoint's secret, sent as
``webhook-signature: v1,<base64>``. The timestamp lets receivers refuse replays (the package
accepts 5 minutes either way); the id lets them drop duplicates, so retries reuse it.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime
from math import floor
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["SECRET_PREFIX", "USER_AGENT", "WebhookVerificationError", "new_secret", "sign_headers", "verify"]

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the standard asks for 24 to 64 random bytes
USER_AGENT = "Verity-Webhooks/1"
# An id goes into a header and into the signed content: printable ASCII only, and no "." so the
# "{id}.{timestamp}.{body}" content cannot be read two ways.
_MSG_ID = re.compile(r"[\x21-\x2d\x2f-\x7e]{1,255}")


def new_secret() -> str:
    """A fresh endpoint secret, ``whsec_`` + base64 of 32 random bytes: shown to the client once."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def sign_headers(secret: str, msg_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    """The headers of one delivery: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``.

    ``msg_id`` must stay the same across retries of one event (receivers deduplicate on it);
    ``timestamp`` is the attempt's time, so a retry hours later is not refused as a replay. A naive
    datetime is read as UTC, as the package does. ``body`` is signed byte for byte: send exactly it.
    """
    if not _MSG_ID.fullmatch(msg_id):
        raise ValueError("a webhook id is 1-255 printable ASCII characters without spaces or dots")
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    signature = Webhook(secret).sign(msg_id, timestamp, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(floor(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def verify(secret: str, headers: dict[str, str], body: bytes) -> Any:
    """What a receiver does: check the signature and timestamp, return the parsed JSON body.

    Raises ``WebhookVerificationError`` on a missing header, a bad signature or a timestamp more
    than 5 minutes away. Header names are matched case-insensitively.
    """
    return Webhook(secret).verify(body, headers)
