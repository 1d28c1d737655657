"""DynamoDB backend of the signup/login throttles (``store.base.ThrottleStore``), in the accounts'
table.

| pk               | sk         | holds                                                        |
|------------------|------------|--------------------------------------------------------------|
| ``THROTTLE#<k>`` | ``<bucket>`` | attempts of an address or hashed email in a window, ``ttl`` |
| ``FAIL#<key>``   | ``FAIL``   | consecutive failed logins of a hashed email, ``last_at``, ``ttl`` |

Counting is a conditional ``UpdateItem`` (``count < limit``), atomic per item.
"""

from __future__ import annotations

import time

from botocore.exceptions import ClientError

from store.base import ThrottleStore
from store.dynamodb import DynamoTable, _condition_failed
from store.dynamodb_jobs import _number


class DynamoThrottles(DynamoTable, ThrottleStore):
    def hit(self, key: str, bucket: str, limit: int, expires_at: int) -> tuple[bool, int]:
        try:
            answer = self._call(
                self.table.update_item,
                Key={"pk": f"THROTTLE#{key}", "sk": bucket},
                UpdateExpression="ADD #c :one SET #t = if_not_exists(#t, :ttl)",
                ConditionExpression="attribute_not_exists(#c) OR #c < :limit",
                ExpressionAttributeNames={"#c": "count", "#t": "ttl"},
                ExpressionAttributeValues={":one": 1, ":ttl": expires_at, ":limit": limit},
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return False, limit
            raise
        return True, int(answer["Attributes"]["count"])

    def failures(self, key: str) -> tuple[int, float | None]:
        item = self._get(f"FAIL#{key}", "FAIL")
        if item is None or int(item.get("ttl", 0)) < time.time():  # TTL deletes lazily
            return 0, None
        return int(item["count"]), float(item["last_at"])

    def add_failure(self, key: str, at: float, expires_at: int) -> int:
        answer = self._call(
            self.table.update_item,
            Key={"pk": f"FAIL#{key}", "sk": "FAIL"},
            UpdateExpression="ADD #c :one SET last_at = :at, #t = :ttl",
            ExpressionAttributeNames={"#c": "count", "#t": "ttl"},
            ExpressionAttributeValues={":one": 1, ":at": _number(at), ":ttl": expires_at},
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["count"])

    def clear_failures(self, key: str) -> None:
        self._call(self.table.delete_item, Key={"pk": f"FAIL#{key}", "sk": "FAIL"})
