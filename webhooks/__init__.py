"""Signed webhook delivery, one attempt at a time.

The pure parts a worker calls: ``targets`` (may this URL be reached at all? the SSRF guard),
``signing`` (Standard Webhooks headers) and ``delivery`` (one POST to the checked address, and
the retry policy). Durable queueing and retries live with the store.
"""

from __future__ import annotations

from webhooks.delivery import Attempt, deliver, is_retryable, retry_delay_s
from webhooks.signing import WebhookVerificationError, new_secret, sign_headers, verify
from webhooks.targets import (
    TargetRefused,
    WebhookTarget,
    check_webhook_url,
    host_allowed,
    refusal_reason,
    resolve_target,
)

__all__ = [
    "Attempt",
    "TargetRefused",
    "WebhookTarget",
    "WebhookVerificationError",
    "check_webhook_url",
    "deliver",
    "host_allowed",
    "is_retryable",
    "new_secret",
    "refusal_reason",
    "resolve_target",
    "retry_delay_s",
    "sign_headers",
    "verify",
]
