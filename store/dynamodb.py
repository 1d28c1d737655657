"""DynamoDB backend (boto3), one table, on-demand capacity, TTL on counters.

Table layout (partition key ``pk``, sort key ``sk``, TTL attribute ``ttl``):

| pk                 | sk               | holds                                              |
|--------------------|------------------|----------------------------------------------------|
| ``USER#<id>``      | ``PROFILE``      | the user                                           |
| ``EMAIL#<email>``  | ``EMAIL``        | ``user_id`` (makes emails unique, conditional put) |
| ``KEY#<digest>``   | ``KEY``          | the API key record (lookup by digest)              |
| ``USER#<id>``      | ``KEY#<key id>`` | ``digest`` (lists a user's keys)                   |
| ``USER#<id>``      | ``DAY#<date>``   | ``count`` of requests that UTC day, ``ttl``        |
| ``USER#<id>``      | ``MIN#<bucket>`` | ``count`` for one endpoint-minute, ``ttl``         |
| ``USER#<id>``      | ``TOTAL``        | ``count`` of requests ever                         |
| ``USER#<id>``      | ``STATS``        | ``<modality>#<verdict>`` counters                  |
| ``USER#<id>``      | ``DET#<det id>`` | one history item (ULID ids sort by time)           |

Quotas are conditional ``UpdateItem`` calls (``count < limit``), atomic per item, so concurrent
requests can never overshoot a limit.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.conditions import Attr, Key
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from errors import Conflict, StoreUnavailable
from store.base import Store
from store.records import ApiKey, Detection, Page, QuotaDecision, User

# The table's layout: what `ensure_table` creates and what infra/aws/template.yaml must declare
# (tests/unit/test_infra.py holds the two together).
KEY_SCHEMA = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
ATTRIBUTE_DEFINITIONS = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "S"},
]
BILLING_MODE = "PAY_PER_REQUEST"
TTL_ATTRIBUTE = "ttl"

# The day's and minute's quota counters outlive a deleted account until their TTL removes them:
# deleting and re-creating an account (an external identity comes back with the same id) must not
# reset the day's quota. The lifetime count (TOTAL) goes with the account.
QUOTA_COUNTERS = ("DAY#", "MIN#")

_USER_FIELDS = ("id", "email", "password_hash", "created_at", "role", "daily_limit", "disabled")
_KEY_FIELDS = (
    "id",
    "user_id",
    "name",
    "digest",
    "display_prefix",
    "created_at",
    "last_used_at",
    "revoked_at",
    "expires_at",
    "scopes",  # a list; absent on keys made before scopes existed
)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _condition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _refused_by_condition(exc: ClientError) -> bool:
    """A condition said no (a conflict to report), as opposed to an outage or a throttle. A
    transaction can also be cancelled by a conflicting concurrent write or throttling, which
    must fail closed like any other outage rather than pass as a condition."""
    if _condition_failed(exc):
        return True
    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return False
    reasons = exc.response.get("CancellationReasons") or []
    return any(reason.get("Code") == "ConditionalCheckFailed" for reason in reasons)


class DynamoTable:
    """One DynamoDB table (single-table design) and the calls every store over it makes: outages
    become ``StoreUnavailable``; a refusing condition is raised as is for the caller to read."""

    def __init__(
        self,
        table: str,
        *,
        region: str,
        endpoint_url: str | None = None,
        create_table: bool = False,
        max_attempts: int = 3,
        timeout_s: float = 5.0,
    ) -> None:
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            max_pool_connections=64,
        )
        self._resource = boto3.resource(
            "dynamodb", region_name=region, endpoint_url=endpoint_url, config=config
        )
        self.table_name = table
        if create_table:
            self.ensure_table()
        self.table = self._resource.Table(table)

    # ------------------------------------------------------------------------------------------
    def ensure_table(self) -> None:
        client = self._resource.meta.client
        try:
            client.create_table(
                TableName=self.table_name,
                KeySchema=KEY_SCHEMA,
                AttributeDefinitions=ATTRIBUTE_DEFINITIONS,
                BillingMode=BILLING_MODE,
            )
            client.get_waiter("table_exists").wait(TableName=self.table_name)
            client.update_time_to_live(
                TableName=self.table_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise StoreUnavailable(f"cannot create table {self.table_name}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"DynamoDB unreachable: {exc}") from exc

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if _refused_by_condition(exc):
                raise
            raise StoreUnavailable(f"DynamoDB error: {exc.response['Error']['Code']}") from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"DynamoDB unreachable: {exc}") from exc

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        item = self._call(self.table.get_item, Key={"pk": pk, "sk": sk}, ConsistentRead=True).get("Item")
        return {k: _plain(v) for k, v in item.items()} if item else None

    def _query_all(self, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._call(self.table.query, **kwargs)
            items.extend({k: _plain(v) for k, v in item.items()} for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _transact(self, items: list[dict[str, Any]]) -> None:
        # The resource's client serializes Python values itself (boto3 registers its
        # TypeSerializer on it for every operation, TransactWriteItems included): pass them as is.
        client = self._resource.meta.client
        bodies = [
            {op: {**body, "TableName": self.table_name}} for entry in items for op, body in entry.items()
        ]
        self._call(client.transact_write_items, TransactItems=bodies)


class DynamoDBStore(DynamoTable, Store):
    @staticmethod
    def _user(item: dict[str, Any] | None) -> User | None:
        if item is None:
            return None
        return User(**{k: item.get(k) for k in _USER_FIELDS if k in item})

    @staticmethod
    def _key(item: dict[str, Any] | None) -> ApiKey | None:
        if item is None:
            return None
        key = ApiKey(**{k: item.get(k) for k in _KEY_FIELDS})
        if key.scopes is not None:
            key.scopes = [str(scope) for scope in key.scopes]
        return key

    @staticmethod
    def _key_items(key: ApiKey) -> list[dict[str, Any]]:
        record = {k: getattr(key, k) for k in _KEY_FIELDS if getattr(key, k) is not None}
        return [
            {
                "Put": {
                    "Item": {"pk": f"KEY#{key.digest}", "sk": "KEY", **record},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {"Put": {"Item": {"pk": f"USER#{key.user_id}", "sk": f"KEY#{key.id}", "digest": key.digest}}},
        ]

    # accounts --------------------------------------------------------------------------------
    def create_user(self, user: User, first_key: ApiKey | None) -> None:
        profile = {k: getattr(user, k) for k in _USER_FIELDS if getattr(user, k) is not None}
        try:
            self._transact(
                [
                    {
                        "Put": {
                            "Item": {"pk": f"EMAIL#{user.email}", "sk": "EMAIL", "user_id": user.id},
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {"Put": {"Item": {"pk": f"USER#{user.id}", "sk": "PROFILE", **profile}}},
                    *(self._key_items(first_key) if first_key is not None else []),
                ]
            )
        except ClientError as exc:
            raise Conflict("an account with this email already exists", code="email_taken") from exc

    def get_user(self, user_id: str) -> User | None:
        return self._user(self._get(f"USER#{user_id}", "PROFILE"))

    def get_user_by_email(self, email: str) -> User | None:
        pointer = self._get(f"EMAIL#{email}", "EMAIL")
        return self.get_user(pointer["user_id"]) if pointer else None

    def list_users(self, limit: int, cursor: str | None) -> Page:
        # Admin-only and rare: a filtered scan is simpler than a GSI and fine at this scale.
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"FilterExpression": Attr("sk").eq("PROFILE")}
        while True:
            page = self._call(self.table.scan, **kwargs)
            items.extend({k: _plain(v) for k, v in i.items()} for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        users = sorted((u for u in map(self._user, items) if u and u.id > (cursor or "")), key=lambda u: u.id)
        return Page(users[:limit], users[limit - 1].id if len(users) > limit else None)

    def update_user(
        self, user_id: str, *, daily_limit: int | None = None, disabled: bool | None = None
    ) -> User | None:
        sets, values = [], {}
        if daily_limit is not None:
            sets.append("daily_limit = :l")
            values[":l"] = daily_limit
        if disabled is not None:
            sets.append("disabled = :d")
            values[":d"] = disabled
        if sets:
            try:
                self._call(
                    self.table.update_item,
                    Key={"pk": f"USER#{user_id}", "sk": "PROFILE"},
                    UpdateExpression="SET " + ", ".join(sets),
                    ExpressionAttributeValues=values,
                    ConditionExpression="attribute_exists(pk)",
                )
            except ClientError:
                return None
        return self.get_user(user_id)

    def delete_user(self, user_id: str) -> bool:
        user = self.get_user(user_id)
        if user is None:
            return False
        items = self._query_all(KeyConditionExpression=Key("pk").eq(f"USER#{user_id}"))
        try:
            with self.table.batch_writer() as batch:
                for item in items:
                    if item["sk"].startswith(QUOTA_COUNTERS):
                        continue  # left to their TTL: see QUOTA_COUNTERS
                    if item["sk"].startswith("KEY#"):
                        batch.delete_item(Key={"pk": f"KEY#{item['digest']}", "sk": "KEY"})
                    batch.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})
                batch.delete_item(Key={"pk": f"EMAIL#{user.email}", "sk": "EMAIL"})
        except (ClientError, BotoCoreError) as exc:
            raise StoreUnavailable(f"DynamoDB error deleting user: {exc}") from exc
        return True

    # keys ------------------------------------------------------------------------------------
    def add_key(self, key: ApiKey) -> None:
        self._transact(self._key_items(key))

    def get_key_by_digest(self, digest: str) -> ApiKey | None:
        return self._key(self._get(f"KEY#{digest}", "KEY"))

    def list_keys(self, user_id: str) -> list[ApiKey]:
        pointers = self._query_all(
            KeyConditionExpression=Key("pk").eq(f"USER#{user_id}") & Key("sk").begins_with("KEY#")
        )
        keys = [self.get_key_by_digest(p["digest"]) for p in pointers]
        return sorted((k for k in keys if k is not None), key=lambda k: k.id)

    def _key_by_id(self, user_id: str, key_id: str) -> ApiKey | None:
        pointer = self._get(f"USER#{user_id}", f"KEY#{key_id}")
        return self.get_key_by_digest(pointer["digest"]) if pointer else None

    def revoke_key(
        self, user_id: str, key_id: str, at: str, *, expires_at: str | None = None, only_active: bool = False
    ) -> ApiKey | None:
        key = self._key_by_id(user_id, key_id)
        if key is None:
            return None
        # Every write names the item it expects (attribute_exists): an unconditional update of a
        # key deleted meanwhile (its user deleted) would create a half record in its place.
        condition = "attribute_exists(pk)"
        if expires_at is None:
            update, values = "SET revoked_at = :at REMOVE expires_at", {":at": at}
        elif key.revoked_at is None:
            update, values = "SET expires_at = :e", {":e": expires_at}
        else:
            return None if only_active else key
        if only_active:
            condition += " AND attribute_not_exists(revoked_at) AND attribute_not_exists(expires_at)"
        try:
            self._call(
                self.table.update_item,
                Key={"pk": f"KEY#{key.digest}", "sk": "KEY"},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return None
            raise
        return self.get_key_by_digest(key.digest)

    def touch_key(self, key_id: str, digest: str, at: str) -> None:
        try:
            self._call(
                self.table.update_item,
                Key={"pk": f"KEY#{digest}", "sk": "KEY"},
                UpdateExpression="SET last_used_at = :at",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":at": at},
            )
        except ClientError as exc:
            if not _condition_failed(exc):
                raise  # a key deleted meanwhile has nothing to touch

    # quotas ----------------------------------------------------------------------------------
    def _increment(self, pk: str, sk: str, limit: int | None, ttl: int | None) -> int | None:
        """count += 1 if count < limit; the new count, or None when the limit refused it."""
        kwargs: dict[str, Any] = {
            "Key": {"pk": pk, "sk": sk},
            "UpdateExpression": "ADD #c :one" + (" SET #t = if_not_exists(#t, :ttl)" if ttl else ""),
            "ExpressionAttributeNames": {"#c": "count", **({"#t": "ttl"} if ttl else {})},
            "ExpressionAttributeValues": {":one": 1, **({":ttl": ttl} if ttl else {})},
            "ReturnValues": "UPDATED_NEW",
        }
        if limit is not None and limit <= 0:
            return None  # a limit of 0 admits nothing (the condition below would admit a first one)
        if limit is not None:
            kwargs["ConditionExpression"] = "attribute_not_exists(#c) OR #c < :limit"
            kwargs["ExpressionAttributeValues"][":limit"] = limit
        try:
            return int(self._call(self.table.update_item, **kwargs)["Attributes"]["count"])
        except ClientError as exc:
            if _condition_failed(exc):
                return None
            raise

    def _count(self, pk: str, sk: str) -> int:
        item = self._get(pk, sk)
        return int(item["count"]) if item else 0

    def consume(
        self,
        user_id: str,
        *,
        day: str,
        daily_limit: int,
        minute_bucket: str,
        minute_limit: int,
        expires_at: int,
    ) -> QuotaDecision:
        pk = f"USER#{user_id}"
        used_day = self._increment(pk, f"DAY#{day}", daily_limit, expires_at)
        if used_day is None:
            used_minute = self._count(pk, f"MIN#{minute_bucket}")
            return QuotaDecision(False, "daily", daily_limit, daily_limit, used_minute, minute_limit)
        used_minute = self._increment(pk, f"MIN#{minute_bucket}", minute_limit, expires_at)
        if used_minute is None:
            # Give the day's slot back: a refused request counts against no limit.
            self._call(
                self.table.update_item,
                Key={"pk": pk, "sk": f"DAY#{day}"},
                UpdateExpression="ADD #c :minus",
                ExpressionAttributeNames={"#c": "count"},
                ExpressionAttributeValues={":minus": -1},
            )
            return QuotaDecision(False, "minute", used_day - 1, daily_limit, minute_limit, minute_limit)
        self._increment(pk, "TOTAL", None, None)
        return QuotaDecision(True, None, used_day, daily_limit, used_minute, minute_limit)

    def usage(self, user_id: str, day: str) -> tuple[int, int]:
        return self._count(f"USER#{user_id}", f"DAY#{day}"), self._count(f"USER#{user_id}", "TOTAL")

    def charge(self, user_id: str, *, day: str, units: int, expires_at: int) -> int:
        pk = f"USER#{user_id}"
        used = 0
        for sk, ttl in ((f"DAY#{day}", expires_at), ("TOTAL", None)):
            kwargs: dict[str, Any] = {
                "Key": {"pk": pk, "sk": sk},
                "UpdateExpression": "ADD #c :units" + (" SET #t = if_not_exists(#t, :ttl)" if ttl else ""),
                "ExpressionAttributeNames": {"#c": "count", **({"#t": "ttl"} if ttl else {})},
                "ExpressionAttributeValues": {":units": units, **({":ttl": ttl} if ttl else {})},
                "ReturnValues": "UPDATED_NEW",
            }
            if units < 0:  # a give-back never takes a count below 0
                kwargs["ConditionExpression"] = "#c >= :need"
                kwargs["ExpressionAttributeValues"][":need"] = -units
            try:
                count = int(self._call(self.table.update_item, **kwargs)["Attributes"]["count"])
            except ClientError as exc:
                if not _condition_failed(exc):
                    raise
                count = self._count(pk, sk)  # holds less than the give-back: left as it is
            if sk.startswith("DAY#"):
                used = count
        return used

    # history ---------------------------------------------------------------------------------
    def add_detection(self, detection: Detection) -> None:
        pk = f"USER#{detection.user_id}"
        self._transact(
            [
                {
                    "Put": {
                        "Item": {
                            "pk": pk,
                            "sk": f"DET#{detection.id}",
                            "id": detection.id,
                            "created_at": detection.created_at,
                            "modality": detection.modality,
                            "verdict": detection.verdict,
                            **(
                                {"fake_probability": Decimal(str(detection.fake_probability))}
                                if detection.fake_probability is not None
                                else {}
                            ),
                            "model_id": detection.model_id,
                            "result": json.dumps(detection.result),
                        }
                    }
                },
                {
                    "Update": {
                        "Key": {"pk": pk, "sk": "STATS"},
                        "UpdateExpression": "ADD #s :one",
                        "ExpressionAttributeNames": {"#s": f"{detection.modality}#{detection.verdict}"},
                        "ExpressionAttributeValues": {":one": 1},
                    }
                },
            ]
        )

    @staticmethod
    def _detection(user_id: str, item: dict[str, Any]) -> Detection:
        return Detection(
            id=item["id"],
            user_id=user_id,
            created_at=item["created_at"],
            modality=item["modality"],
            verdict=item["verdict"],
            fake_probability=float(item["fake_probability"]) if "fake_probability" in item else None,
            model_id=item["model_id"],
            result=json.loads(item["result"]),
        )

    def get_detection(self, user_id: str, detection_id: str) -> Detection | None:
        item = self._get(f"USER#{user_id}", f"DET#{detection_id}")
        return self._detection(user_id, item) if item else None

    def list_detections(self, user_id: str, limit: int, cursor: str | None) -> Page:
        pk = f"USER#{user_id}"
        condition = Key("pk").eq(pk) & (
            Key("sk").between("DET#", f"DET#{cursor}") if cursor else Key("sk").begins_with("DET#")
        )
        page = self._call(
            self.table.query, KeyConditionExpression=condition, ScanIndexForward=False, Limit=limit + 2
        )
        items = [{k: _plain(v) for k, v in i.items()} for i in page.get("Items", [])]
        items = [i for i in items if i["id"] != cursor][: limit + 1]
        detections = [self._detection(user_id, i) for i in items[:limit]]
        return Page(detections, detections[-1].id if len(items) > limit else None)

    def delete_detection(self, user_id: str, detection_id: str) -> bool:
        pk = f"USER#{user_id}"
        item = self._get(pk, f"DET#{detection_id}")
        if item is None:
            return False
        try:
            self._transact(
                [
                    {
                        "Delete": {
                            "Key": {"pk": pk, "sk": f"DET#{detection_id}"},
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "Key": {"pk": pk, "sk": "STATS"},
                            "UpdateExpression": "ADD #s :minus",
                            "ExpressionAttributeNames": {"#s": f"{item['modality']}#{item['verdict']}"},
                            "ExpressionAttributeValues": {":minus": -1},
                        }
                    },
                ]
            )
        except ClientError:
            return False  # deleted concurrently
        return True

    def stats(self, user_id: str) -> dict[str, dict[str, int]]:
        item = self._get(f"USER#{user_id}", "STATS") or {}
        out: dict[str, dict[str, int]] = {}
        for name, count in item.items():
            if "#" not in name or name in ("pk", "sk") or not count:
                continue
            modality, verdict = name.split("#", 1)
            per = out.setdefault(modality, {"total": 0})
            per[verdict] = int(count)
            per["total"] += int(count)
        return out
