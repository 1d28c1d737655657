"""``python -m infra.local_aws``: the uploads bucket and the jobs queue + dead-letter queue of
``infra/aws/template.yaml``, made on a local endpoint (moto, LocalStack) for the AWS mode on one
machine. Idempotent: existing resources are left as they are. The DynamoDB table is made by the
service itself (``VERITY_DYNAMODB_CREATE_TABLE=true``).

Reads the same settings as the service (``VERITY_S3_BUCKET``, ``VERITY_S3_ENDPOINT_URL``,
``VERITY_SQS_QUEUE_URL``, ``VERITY_SQS_ENDPOINT_URL``, ``VERITY_AWS_REGION``) and refuses to run
against AWS itself (no endpoint set): there, the template makes them.
"""

from __future__ import annotations

import json
import logging
import sys

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from config import Settings
from config.startup import StartupError, settings_or_exit, startup_or_exit
from logs import configure_logging

log = logging.getLogger("infra.local_aws")

MAX_RECEIVE_COUNT = 5  # as the template's RedrivePolicy
DLQ_RETENTION_S = 14 * 86400


def queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def provision(settings: Settings) -> dict[str, str]:
    if not (settings.s3_endpoint_url and settings.sqs_endpoint_url):
        raise StartupError(
            "infra.local_aws only makes resources on a local endpoint: set VERITY_S3_ENDPOINT_URL and "
            "VERITY_SQS_ENDPOINT_URL (on AWS, deploy infra/aws/template.yaml instead)"
        )
    if not (settings.s3_bucket and settings.sqs_queue_url):
        raise StartupError("set VERITY_S3_BUCKET and VERITY_SQS_QUEUE_URL to the names to make")
    try:
        s3 = boto3.client("s3", region_name=settings.aws_region, endpoint_url=settings.s3_endpoint_url)
        try:
            s3.create_bucket(Bucket=settings.s3_bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        sqs = boto3.client("sqs", region_name=settings.aws_region, endpoint_url=settings.sqs_endpoint_url)
        name = queue_name(settings.sqs_queue_url)
        dlq_url = sqs.create_queue(
            QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_S)}
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
        # Visibility as long as a lease: a message comes back when its worker went silent.
        attributes = {"VisibilityTimeout": str(settings.job_lease_s), "RedrivePolicy": json.dumps(redrive)}
        queue_url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except (BotoCoreError, ClientError) as exc:
        raise StartupError(f"could not make the local AWS resources: {exc}") from exc
    made = {"bucket": settings.s3_bucket, "queue_url": queue_url, "dead_letter_queue_url": dlq_url}
    log.info("local AWS resources ready: %s", made)
    return made


def main() -> None:
    settings = settings_or_exit()
    configure_logging(settings)
    made = startup_or_exit(lambda: provision(settings))
    sys.stdout.write(json.dumps(made) + "\n")


if __name__ == "__main__":
    main()
