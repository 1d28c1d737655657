"""Deployment files, checked without a cloud account or a Docker engine: the AWS template passes
cfn-lint (offline) and matches the code (the table the store creates, real settings, handlers that
exist, exactly the permissions each function needs and no wildcards, a private uploads bucket, a
jobs queue that outlasts its worker); the Lambda image recipe installs only the runtime group,
copies files that exist, and names a handler that exists. The batch runner's specs (the Cloud Run
Job, the AWS Batch array job) run a command its own parser accepts, shard, retry, stop, and reach
only the media and results prefixes, without the token secret."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from batch.shards import Shard, choose_shard
from config import Settings
from store import dynamodb
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.unit

TEMPLATE = PROJECT_ROOT / "infra" / "aws" / "template.yaml"
DOCKERFILE = PROJECT_ROOT / "infra" / "aws_lambda" / "Dockerfile"
SETTINGS = {f"VERITY_{name.upper()}" for name in Settings.model_fields}
FUNCTIONS = ("ApiFunction", "WorkerFunction")
HANDLERS = {"ApiFunction": "infra.aws_lambda.handler.http", "WorkerFunction": "infra.aws_lambda.handler.sqs"}
UPLOADS = "UploadsBucket/uploads/*"  # objects under the upload prefix, and nothing else in the bucket
TABLE_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:BatchWriteItem",
    "dynamodb:TransactWriteItems",
}
PERMISSIONS = {  # resource -> actions, per function
    "ApiFunction": {
        "Table": TABLE_ACTIONS,
        # Signed upload forms carry the API role's credentials: S3 checks PutObject against it.
        UPLOADS: {"s3:PutObject", "s3:GetObject", "s3:DeleteObject"},
        "JobsQueue": {"sqs:SendMessage"},
    },
    "WorkerFunction": {
        "Table": TABLE_ACTIONS,
        UPLOADS: {"s3:GetObject", "s3:DeleteObject"},
        # The first three: what the SQS event source mapping polls with.
        "JobsQueue": {
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:ChangeMessageVisibility",
        },
    },
}


def _template() -> dict[str, Any]:
    from cfnlint.decode import decode

    template, problems = decode(str(TEMPLATE))
    assert not problems, problems
    return template


def _resources(kind: str) -> list[dict[str, Any]]:
    return [r for r in _template()["Resources"].values() if r["Type"] == kind]


def _properties(name: str) -> dict[str, Any]:
    return _template()["Resources"][name]["Properties"]


def _environment(function: str) -> dict[str, Any]:
    """A function's variables as SAM deploys them: the Globals', then its own over them."""
    template = _template()
    shared = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    own = template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
    return {**shared, **own}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(function: str) -> list[dict[str, Any]]:
    """The inline policy statements of a function's role: SAM's ``Policies``, or those of the
    ``AWS::IAM::Role`` it names."""
    resources = _template()["Resources"]
    properties = resources[function]["Properties"]
    if "Role" in properties:
        assert "Policies" not in properties  # SAM would ignore them beside a Role
        (role, attribute) = properties["Role"]["Fn::GetAtt"]
        assert attribute == "Arn" and resources[role]["Type"] == "AWS::IAM::Role"
        documents = [p["PolicyDocument"] for p in resources[role]["Properties"]["Policies"]]
    else:
        documents = properties["Policies"]
    return [statement for document in documents for statement in document["Statement"]]


def _resource_name(resource: Any) -> str:
    """``!GetAtt X.Arn`` -> ``X``; ``!Sub "${X.Arn}/key"`` -> ``X/key``; anything else fails."""
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        name, attribute = resource["Fn::GetAtt"]
        assert attribute == "Arn", resource
        return str(name)
    if isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        match = re.fullmatch(r"\$\{(\w+)\.Arn\}(/.+)", resource["Fn::Sub"])
        assert match, resource
        return match[1] + match[2]
    raise AssertionError(f"not a resource of this stack: {resource!r}")


def _resolved(value: Any) -> Any:
    """Refs replaced by what a deployment would give them (parameter defaults, made-up names)."""
    if isinstance(value, dict) and "Ref" in value:
        name = value["Ref"]
        parameter = _template()["Parameters"].get(name)
        if name == "JwtSecret":
            return "k7Qv2pX9sLmN4rT8wYz1aB3cD5eF6gH0"
        if parameter is not None:
            return str(parameter["Default"])
        return "us-east-1" if name == "AWS::Region" else f"stack-{name.lower()}"
    assert not isinstance(value, dict | list), value
    return value


def _module_defines(module: str, attribute: str) -> bool:
    """Whether ``module`` (found the way the runtime imports it) binds ``attribute`` at its top
    level. The module is not executed: the Lambda handler opens every served model when imported."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, module
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            names.add(node.target.id)
    return attribute in names


def _denies_plain_http(document: dict[str, Any], service: str, resources: list[Any]) -> bool:
    return any(
        statement["Effect"] == "Deny"
        and statement["Principal"] == "*"
        and statement["Action"] == f"{service}:*"
        and statement["Resource"] == resources
        and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for statement in document["Statement"]
    )


def test_template_passes_cfn_lint() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    done = subprocess.run(
        [str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_template_table_is_the_one_the_store_creates() -> None:
    (table,) = _resources("AWS::DynamoDB::Table")
    props = table["Properties"]
    assert props["KeySchema"] == dynamodb.KEY_SCHEMA
    assert props["AttributeDefinitions"] == dynamodb.ATTRIBUTE_DEFINITIONS
    assert props["BillingMode"] == dynamodb.BILLING_MODE
    assert props["TimeToLiveSpecification"] == {"AttributeName": dynamodb.TTL_ATTRIBUTE, "Enabled": True}
    assert table["DeletionPolicy"] == "Retain"  # accounts outlive a stack deletion


def test_template_functions_are_the_api_and_the_worker() -> None:
    names = {name for name, r in _template()["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    assert names == set(FUNCTIONS)  # a new function needs its permissions and environment below


@pytest.mark.parametrize("function", FUNCTIONS)
def test_template_function_environment_is_real_production_settings(function: str) -> None:
    variables = _environment(function)
    assert set(variables) <= SETTINGS, sorted(set(variables) - SETTINGS)
    assert variables["VERITY_ENVIRONMENT"] == "production"
    assert variables["VERITY_STORE"] == "dynamodb"  # the handler refuses SQLite in production
    assert variables["VERITY_DYNAMODB_TABLE"] == {"Ref": "Table"}
    assert variables["VERITY_BLOBS"] == "s3"
    assert variables["VERITY_S3_BUCKET"] == {"Ref": "UploadsBucket"}
    assert variables["VERITY_UPLOAD_PREFIX"] == Settings.model_fields["upload_prefix"].default
    assert variables["VERITY_QUEUE"] == "sqs"
    assert variables["VERITY_SQS_QUEUE_URL"] == {"Ref": "JobsQueue"}  # Ref of a queue: its URL
    assert variables["VERITY_JOB_WORKERS"] == "0"  # no worker threads inside a Lambda container
    # The values are valid too: Settings accepts them (Refs stand for what a deployment gives).
    settings = Settings(**{name[len("VERITY_") :].lower(): _resolved(v) for name, v in variables.items()})
    assert (settings.environment, settings.store, settings.queue, settings.job_workers) == (
        "production",
        "dynamodb",
        "sqs",
        0,
    )
    assert _properties(function)["PackageType"] == "Image"


def test_template_api_inline_media_fits_lambdas_payload() -> None:
    variables = _environment("ApiFunction")
    # 6 MB synchronous payloads carry about 4.5 MB of media after base64.
    for cap in ("VERITY_MAX_IMAGE_BYTES", "VERITY_MAX_AUDIO_BYTES", "VERITY_MAX_VIDEO_BYTES"):
        assert int(variables[cap]) <= 4_500_000


def test_template_names_only_real_settings() -> None:
    template = _template()
    names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for function in FUNCTIONS:
        names |= set(_environment(function))
    assert {n for n in names if n.startswith("VERITY_")} <= SETTINGS, sorted(names - SETTINGS)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_template_functions_name_handlers_that_exist(function: str) -> None:
    properties = _properties(function)
    assert properties["ImageUri"] == {"Ref": "ImageUri"}  # one image, two entry points
    assert properties["ImageConfig"]["Command"] == [HANDLERS[function]]
    module, _, attribute = HANDLERS[function].rpartition(".")
    assert _module_defines(module, attribute), (module, attribute)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_template_permissions_are_exactly_what_each_function_needs(function: str) -> None:
    granted: dict[str, set[str]] = {}
    for statement in _statements(function):
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), statement
        actions = _as_list(statement["Action"])
        assert not [a for a in actions if "*" in a], actions
        for resource in _as_list(statement["Resource"]):
            granted.setdefault(_resource_name(resource), set()).update(actions)
    assert granted == PERMISSIONS[function]
    # The one "*" is the object key under the upload prefix: never the whole bucket.
    assert [name for name in granted if "*" in name] == [UPLOADS]
    prefix = _environment(function)["VERITY_UPLOAD_PREFIX"]
    assert f"UploadsBucket/{prefix}*" == UPLOADS


def test_template_worker_role_has_no_managed_queue_policy() -> None:
    # A SAM-generated role would get AWSLambdaSQSQueueExecutionRole for the SQS event: receive and
    # delete on every queue of the account. The worker's own role has only the logging policy.
    role = _properties(_properties("WorkerFunction")["Role"]["Fn::GetAtt"][0])
    assert role["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}
    ]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"


def test_uploads_bucket_is_private_and_encrypted() -> None:
    bucket = _properties("UploadsBucket")
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    (encryption,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    (policy,) = [
        r["Properties"]
        for r in _resources("AWS::S3::BucketPolicy")
        if r["Properties"]["Bucket"] == {"Ref": "UploadsBucket"}
    ]
    objects = {"Fn::Sub": "${UploadsBucket.Arn}/*"}
    bucket_arn = {"Fn::GetAtt": ["UploadsBucket", "Arn"]}
    assert _denies_plain_http(policy["PolicyDocument"], "s3", [bucket_arn, objects])


def test_uploads_bucket_expires_the_upload_prefix() -> None:
    template = _template()
    rules = _properties("UploadsBucket")["LifecycleConfiguration"]["Rules"]
    prefix = Settings.model_fields["upload_prefix"].default
    (expiry,) = [r for r in rules if r["Status"] == "Enabled" and "ExpirationInDays" in r]
    assert expiry["Prefix"] == prefix  # what VERITY_UPLOAD_PREFIX names, and nothing else
    assert expiry["ExpirationInDays"] == {"Ref": "UploadRetentionDays"}
    assert expiry["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    days = template["Parameters"]["UploadRetentionDays"]
    assert days["Default"] == 1 and days["MinValue"] >= 1
    # A backstop: never before the service's own retention of an unused upload.
    assert days["Default"] * 86400 >= Settings.model_fields["upload_retention_s"].default


def test_uploads_bucket_cors_allows_browser_posts() -> None:
    (rule,) = _properties("UploadsBucket")["CorsConfiguration"]["CorsRules"]
    assert rule["AllowedMethods"] == ["POST"]  # the signed form, and nothing else
    assert rule["AllowedOrigins"] == {"Ref": "AllowedOrigins"}
    assert _template()["Parameters"]["AllowedOrigins"]["Type"] == "CommaDelimitedList"
    assert rule["AllowedHeaders"] == ["*"]
    assert rule["MaxAge"] > 0


def test_jobs_queue_outlasts_the_worker_and_redrives_to_its_dead_letter_queue() -> None:
    queue, dead = _properties("JobsQueue"), _properties("JobsDeadLetterQueue")
    worker = _properties("WorkerFunction")
    assert worker["Timeout"] == 900
    (event,) = worker["Events"].values()
    window = event["Properties"].get("MaximumBatchingWindowInSeconds", 0)
    # AWS's advice for an SQS source: 6 x the function's timeout (+ its batching window).
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"] + window
    # A claimed job is given up on only once its worker has surely stopped.
    assert int(_environment("WorkerFunction")["VERITY_JOB_LEASE_S"]) > worker["Timeout"]
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] >= max(5, Settings.model_fields["job_max_attempts"].default)
    # A message keeps its age in the dead-letter queue, which keeps it for the most SQS allows.
    assert dead["MessageRetentionPeriod"] == 14 * 86400 > queue.get("MessageRetentionPeriod", 4 * 86400)
    assert queue["SqsManagedSseEnabled"] is True and dead["SqsManagedSseEnabled"] is True
    (policy,) = _resources("AWS::SQS::QueuePolicy")
    queues = [{"Ref": "JobsQueue"}, {"Ref": "JobsDeadLetterQueue"}]
    assert policy["Properties"]["Queues"] == queues
    arns = [{"Fn::GetAtt": [name, "Arn"]} for name in ("JobsQueue", "JobsDeadLetterQueue")]
    assert _denies_plain_http(policy["Properties"]["PolicyDocument"], "sqs", arns)


def test_worker_takes_one_job_at_a_time_from_the_jobs_queue() -> None:
    template = _template()
    worker = _properties("WorkerFunction")
    (event,) = worker["Events"].values()
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    assert event["Properties"]["BatchSize"] == 1
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    memory = template["Parameters"][worker["MemorySize"]["Ref"]]
    assert memory["MinValue"] >= 3008 and memory["Default"] >= 3008
    # An upload may be copied to /tmp whole.
    largest_upload = Settings.model_fields["max_upload_bytes"].default
    assert worker["EphemeralStorage"]["Size"] * 1024 * 1024 > largest_upload
    # Reserved concurrency only when asked for (0 would stop the worker altogether).
    condition, reserved, unset = worker["ReservedConcurrentExecutions"]["Fn::If"]
    assert (reserved, unset) == ({"Ref": "WorkerReservedConcurrency"}, {"Ref": "AWS::NoValue"})
    assert template["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "WorkerReservedConcurrency"}, 0]}]
    }


def test_template_outputs_the_bucket_and_queues() -> None:
    outputs = _template()["Outputs"]
    assert outputs["UploadsBucketName"]["Value"] == {"Ref": "UploadsBucket"}
    assert outputs["JobsQueueUrl"]["Value"] == {"Ref": "JobsQueue"}
    assert outputs["JobsDeadLetterQueueUrl"]["Value"] == {"Ref": "JobsDeadLetterQueue"}


# --- the Lambda image recipe ----------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def test_lambda_image_is_lambdas_python_311_with_the_runtime_group_only() -> None:
    instructions = _instructions()
    assert instructions[0] == ("FROM", "public.ecr.aws/lambda/python:3.11")
    runs = [arg for op, arg in instructions if op == "RUN"]
    installs = [run for run in runs if "pip install" in run]
    assert len(installs) == 1 and "['dependency-groups']['runtime']" in installs[0]
    assert all(run.startswith("mkdir -p ") for run in runs if run not in installs)
    runtime = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["dependency-groups"]["runtime"]
    assert not [r for r in runtime if re.match(r"(torch|tensorflow|transformers|keras|tf2onnx)\b", r)]


def test_lambda_image_copies_what_exists_and_leaves_export_code_out() -> None:
    copies = [arg.split()[:-1] for op, arg in _instructions() if op == "COPY"]
    sources = [source for sources in copies for source in sources]
    for source in sources:
        if source == "bentos/models/":
            continue  # made by `make models`, which the recipe's header says to run first
        assert (PROJECT_ROOT / source).exists(), source
    assert "bentos/models/" in sources
    assert "make models" in DOCKERFILE.read_text(encoding="utf-8")
    ignored = (PROJECT_ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {"models/export", "tests", "bench", ".venv"} <= set(ignored)


def test_lambda_image_names_a_handler_that_exists() -> None:
    (command,) = [arg for op, arg in _instructions() if op == "CMD"]
    (handler,) = ast.literal_eval(command)
    module, _, attribute = handler.rpartition(".")
    assert _module_defines(module, attribute), (module, attribute)
    assert handler == HANDLERS["ApiFunction"]  # the image's default is the API's entry point


# --- Cloud Run and Kubernetes -----------------------------------------------------------------------

CLOUD_RUN = PROJECT_ROOT / "infra" / "cloudrun" / "service.yaml"
K8S = PROJECT_ROOT / "infra" / "k8s" / "verity.yaml"
# Knative Serving's Service schema (vendored test data: tests/data/schemas/README.md says whence).
KNATIVE_SCHEMA = PROJECT_ROOT / "tests" / "data" / "schemas" / "knative-serving-service-v1.json"
KUBERNETES_VERSION = "1.33"
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
CLOUD_RUN_BODY_CAP = 32 * 1024 * 1024  # HTTP/1 request bodies


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    import yaml

    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]


def test_cloud_run_service_is_a_valid_knative_service() -> None:
    import json

    import jsonschema

    schema = json.loads(KNATIVE_SCHEMA.read_text(encoding="utf-8"))
    (service,) = _yaml_documents(CLOUD_RUN)
    jsonschema.validate(service, schema)
    assert (service["apiVersion"], service["kind"]) == ("serving.knative.dev/v1", "Service")
    # The schema really checks: a misspelt container field is refused.
    broken = json.loads(json.dumps(service))
    _containers(broken)[0]["livenesProbe"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_kubernetes_manifests_are_valid() -> None:
    import kubernetes_validate

    documents = _yaml_documents(K8S)
    assert [d["kind"] for d in documents] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    broken = {**documents[0], "spec": {**documents[0]["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    deployment = documents[0]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    (container,) = _containers(deployment)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("path", [CLOUD_RUN, K8S], ids=["cloud-run", "kubernetes"])
def test_container_specs_use_real_settings_and_store_independent_probes(path: Path) -> None:
    (container,) = _containers(_yaml_documents(path)[0])
    names = {env["name"] for env in container["env"]}
    assert {n for n in names if n.startswith("VERITY_")} <= SETTINGS, sorted(names - SETTINGS)
    assert names - SETTINGS <= AWS_CREDENTIALS
    values = {env["name"]: env.get("value") for env in container["env"]}
    assert values["VERITY_ENVIRONMENT"] == "production" and values["VERITY_STORE"] == "dynamodb"
    # Instances share nothing on disk: uploads must be in S3 for any instance's worker to read.
    assert values["VERITY_BLOBS"] == "s3" and values["VERITY_S3_BUCKET"]
    assert "value" not in next(
        e for e in container["env"] if e["name"] == "VERITY_JWT_SECRET"
    )  # a secret ref
    # BentoML's own probes (tests/e2e/test_served.py asks the running server for each path).
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"  # never a route that needs the store


def test_cloud_run_inline_video_fits_its_body_cap() -> None:
    from api.app import MULTIPART_OVERHEAD

    (container,) = _containers(_yaml_documents(CLOUD_RUN)[0])
    values = {env["name"]: env.get("value") for env in container["env"]}
    assert int(values["VERITY_MAX_VIDEO_BYTES"]) + MULTIPART_OVERHEAD < CLOUD_RUN_BODY_CAP
    assert container["ports"][0]["containerPort"] == 3000


def probe_paths() -> set[str]:
    """Every HTTP probe path the Cloud Run and Kubernetes specs use."""
    paths = set()
    for path in (CLOUD_RUN, K8S):
        for container in _containers(_yaml_documents(path)[0]):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container:
                    paths.add(container[probe]["httpGet"]["path"])
    return paths


# --- python -m batch: a Cloud Run Job and an AWS Batch array job -------------------------------------

CLOUD_RUN_JOB = PROJECT_ROOT / "infra" / "cloudrun" / "job.yaml"
BATCH_RESOURCES = {
    "BatchComputeEnvironment": "AWS::Batch::ComputeEnvironment",
    "BatchJobQueue": "AWS::Batch::JobQueue",
    "BatchExecutionRole": "AWS::IAM::Role",
    "BatchJobRole": "AWS::IAM::Role",
    "BatchJobDefinition": "AWS::Batch::JobDefinition",
}
# The job role's grants: exactly these actions on exactly these ARNs (the Fn::Sub strings).
MEDIA_BUCKET = "arn:${AWS::Partition}:s3:::${BatchMediaBucket}"
MEDIA_OBJECTS = "arn:${AWS::Partition}:s3:::${BatchMediaBucket}/${BatchMediaPrefix}*"
RESULT_OBJECTS = "arn:${AWS::Partition}:s3:::${BatchOutputBucket}/${BatchOutputPrefix}*"
BATCH_JOB_PERMISSIONS = {
    MEDIA_BUCKET: {"s3:ListBucket"},
    MEDIA_OBJECTS: {"s3:GetObject"},
    RESULT_OBJECTS: {"s3:GetObject", "s3:PutObject"},
}
# What a batch container sets besides settings: where the bento's image keeps the code and models.
BATCH_ENV_EXTRA = {"PYTHONPATH", "BENTOML_HOME"}
# Fargate's task sizes: vCPU -> (least, most, step) memory in MiB.
FARGATE_MEMORY = {
    1: (2048, 8192, 1024),
    2: (4096, 16384, 1024),
    4: (8192, 30720, 1024),
    8: (16384, 61440, 4096),
    16: (32768, 122880, 8192),
}


def _cloud_run_job() -> dict[str, Any]:
    (job,) = _yaml_documents(CLOUD_RUN_JOB)
    return job


def _job_container() -> dict[str, Any]:
    (container,) = _cloud_run_job()["spec"]["template"]["spec"]["template"]["spec"]["containers"]
    return container


def _bento_path() -> str:
    """Where the bento's image keeps the bento (BentoML's ``BENTO_PATH``): src/ and models/."""
    from bentoml._internal.container.generate import BENTO_PATH

    return BENTO_PATH


def _checks_bento_layout(env: dict[str, Any]) -> None:
    # `python -m batch` imports the bento's source and reads $BENTOML_HOME/models: the bento's own
    # models/ (bentoml serve is handed the folder; a plain command is not).
    assert env["PYTHONPATH"] == f"{_bento_path()}/src"
    assert env["BENTOML_HOME"] == _bento_path()
    include = (PROJECT_ROOT / "bentofile.yaml").read_text(encoding="utf-8")
    assert '"/batch/*.py"' in include  # the image carries the batch runner


def _production_settings_without_auth(env: dict[str, Any]) -> Settings:
    """The container's settings as ``python -m batch`` loads them; they would not load for a
    process that serves auth (no token secret is given to these containers)."""
    from pydantic import ValidationError

    from config.settings import without_auth

    values = {name[len("VERITY_") :].lower(): v for name, v in env.items() if name.startswith("VERITY_")}
    assert "jwt_secret" not in values
    with pytest.raises(ValidationError, match="VERITY_JWT_SECRET"):
        Settings(**values)
    with without_auth():
        settings = Settings(**values)
    assert settings.environment == "production"
    return settings


def _checks_batch_command(arguments: list[str]) -> argparse.Namespace:
    """The runner's own parser accepts them; S3 in and out, the output outside the input."""
    from batch.cli import parser
    from batch.s3_output import s3_results_uri

    args = parser().parse_args(arguments)  # an unknown or malformed flag exits the test
    assert args.input.startswith("s3://") and args.output.startswith("s3://"), arguments
    assert not s3_results_uri(args.output, Shard(0, 2)).startswith(args.input.rstrip("/") + "/")
    assert not args.dry_run and args.limit is None
    return args


def test_cloud_run_job_is_sharded_retried_and_bounded() -> None:
    job = _cloud_run_job()
    assert (job["apiVersion"], job["kind"]) == ("run.googleapis.com/v1", "Job")
    execution = job["spec"]["template"]["spec"]
    assert set(execution) <= {"taskCount", "parallelism", "template"}, sorted(execution)
    tasks, parallelism = execution["taskCount"], execution["parallelism"]
    assert isinstance(tasks, int) and isinstance(parallelism, int)
    assert 2 <= tasks <= 10_000 and 1 <= parallelism <= tasks
    task = execution["template"]["spec"]
    assert set(task) <= {"containers", "maxRetries", "timeoutSeconds", "serviceAccountName", "volumes"}
    # Retries are safe (a rerun resumes), and needed: a preempted or timed-out task runs again.
    assert 1 <= task["maxRetries"] <= 10
    # Longer than Cloud Run's 10-minute default, within its 7-day most.
    assert 600 < int(task["timeoutSeconds"]) <= 7 * 86400


def test_cloud_run_job_container_is_a_valid_container() -> None:
    import json

    import jsonschema

    # A job's container is the same v1 Container as a service's: the Knative schema's definition.
    schema = json.loads(KNATIVE_SCHEMA.read_text(encoding="utf-8"))
    container_schema = schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"][
        "properties"
    ]["containers"]["items"]
    container = _job_container()
    jsonschema.validate(container, container_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**container, "comand": ["python"]}, container_schema)
    # No server here: nothing listens, so no port and no probe.
    assert not {"ports", "startupProbe", "readinessProbe", "livenessProbe"} & set(container)


def test_cloud_run_job_runs_the_batch_cli_on_each_tasks_shard() -> None:
    container = _job_container()
    (service_container,) = _containers(_yaml_documents(CLOUD_RUN)[0])
    assert container["image"] == service_container["image"]  # the bento's image, as the service
    assert container["command"] == ["python", "-m", "batch"]
    args = _checks_batch_command(container["args"])
    # Cloud Run gives every task its index and the count: a --shard or --shards would override
    # them (every task would run the same shard) or be refused.
    assert args.shard is None and args.shards is None
    tasks = _cloud_run_job()["spec"]["template"]["spec"]["taskCount"]
    env = {"CLOUD_RUN_TASK_INDEX": str(tasks - 1), "CLOUD_RUN_TASK_COUNT": str(tasks)}
    assert choose_shard(args.shard, args.shards, env) == Shard(tasks - 1, tasks)


def test_cloud_run_job_environment_is_production_without_the_token_secret() -> None:
    container = _job_container()
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names))
    assert {n for n in names if n.startswith("VERITY_")} <= SETTINGS, sorted(set(names) - SETTINGS)
    assert set(names) - SETTINGS <= AWS_CREDENTIALS | BATCH_ENV_EXTRA
    for credential in AWS_CREDENTIALS:  # from Secret Manager, never in the file
        entry = next(e for e in container["env"] if e["name"] == credential)
        assert "value" not in entry and entry["valueFrom"]["secretKeyRef"]["name"]
    values = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    _checks_bento_layout(values)
    settings = _production_settings_without_auth(values)
    # Sized like the service (the same models, in this one process), threads = its vCPUs.
    (service_container,) = _containers(_yaml_documents(CLOUD_RUN)[0])
    assert container["resources"]["limits"] == service_container["resources"]["limits"]
    assert settings.ort_intra_op_threads == int(container["resources"]["limits"]["cpu"])


def test_batch_runner_starts_in_production_without_the_token_secret(tmp_path: Path) -> None:
    """The Cloud Run Job and the AWS Batch job give no VERITY_JWT_SECRET: ``python -m batch``
    must load its settings without demanding one (``settings_or_exit(serves_auth=False)``)."""
    import os

    media = tmp_path / "media"
    media.mkdir()
    env = {**os.environ, "VERITY_ENVIRONMENT": "production"}
    env.pop("VERITY_JWT_SECRET", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "batch",
            "--input",
            str(media),
            "--output",
            str(tmp_path / "out.jsonl"),
            "--dry-run",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_batch_resources_exist_only_with_a_batch_image() -> None:
    template = _template()
    resources = template["Resources"]
    for name, kind in BATCH_RESOURCES.items():
        assert resources[name]["Type"] == kind
        assert resources[name]["Condition"] == "BatchEnabled", name
    assert {n for n, r in resources.items() if r["Type"].startswith("AWS::Batch::")} <= set(BATCH_RESOURCES)
    assert template["Conditions"]["BatchEnabled"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "BatchImageUri"}, ""]}]
    }
    # An existing deployment needs none of the new parameters: each has a default.
    batch_parameters = {n: p for n, p in template["Parameters"].items() if n.startswith("Batch")}
    assert all("Default" in p for p in batch_parameters.values()), batch_parameters
    assert batch_parameters["BatchImageUri"]["Default"] == ""
    # With an image, the empty defaults that mean "no Batch" are refused.
    (rule,) = template["Rules"].values()
    assert rule["RuleCondition"] == template["Conditions"]["BatchEnabled"]
    refused = {json_dump(assertion["Assert"]) for assertion in rule["Assertions"]}
    for name in ("BatchMediaBucket", "BatchOutputBucket"):
        assert json_dump({"Fn::Not": [{"Fn::Equals": [{"Ref": name}, ""]}]}) in refused
    for name in ("BatchSubnetIds", "BatchSecurityGroupIds"):
        assert json_dump({"Fn::Not": [{"Fn::Contains": [{"Ref": name}, ""]}]}) in refused
    outputs = template["Outputs"]
    for output, resource in (
        ("BatchJobQueueArn", "BatchJobQueue"),
        ("BatchJobDefinitionArn", "BatchJobDefinition"),
    ):
        assert outputs[output]["Value"] == {"Ref": resource}  # Ref of either is its ARN
        assert outputs[output]["Condition"] == "BatchEnabled"


def test_batch_lint_exceptions_are_only_the_empty_defaults() -> None:
    """cfn-lint checks the Batch resources with the parameters' empty defaults (meaning "no
    Batch"); exactly two warnings about those are ignored, on exactly two resources."""
    ignored = {
        name: resource["Metadata"]["cfn-lint"]["config"]["ignore_checks"]
        for name, resource in _template()["Resources"].items()
        if "cfn-lint" in resource.get("Metadata", {})
    }
    assert ignored == {"BatchComputeEnvironment": ["W1030"], "BatchJobRole": ["W1031"]}


def _job_definition() -> dict[str, Any]:
    return _properties("BatchJobDefinition")


def _substituted(value: Any) -> str:
    """A job-definition default as a deployment gives it: ``Fn::Sub`` with the stack's parameter
    defaults, and made-up bucket names for the buckets (whose default is empty)."""
    made_up = {"BatchMediaBucket": "verity-media", "BatchOutputBucket": "verity-results"}
    parameters = _template()["Parameters"]

    def one(match: re.Match[str]) -> str:
        name = match[1]
        return made_up.get(name) or str(parameters[name]["Default"])

    return re.sub(r"\$\{(\w+)\}", one, value["Fn::Sub"])


def test_batch_job_definition_runs_the_batch_cli_as_an_array_child() -> None:
    from batch.cli import parser

    definition = _job_definition()
    assert definition["Type"] == "container" and definition["PlatformCapabilities"] == ["FARGATE"]
    command = definition["ContainerProperties"]["Command"]
    assert command[:3] == ["python", "-m", "batch"]
    placeholders = {word.removeprefix("Ref::") for word in command if word.startswith("Ref::")}
    assert placeholders == {"input", "output", "shards"}
    # A child learns only its index: the count must be passed, and only the submitter knows it
    # (the array size), so `shards` has no default to go stale.
    assert command[command.index("--shards") + 1] == "Ref::shards"
    defaults = {name: _substituted(value) for name, value in definition["Parameters"].items()}
    assert set(defaults) == {"input", "output"}
    submitted = {**defaults, "shards": "10"}  # aws batch submit-job --parameters shards=10
    words = [submitted[w.removeprefix("Ref::")] if w.startswith("Ref::") else w for w in command]
    args = _checks_batch_command(words[3:])
    assert args.shards == 10 and args.shard is None
    assert choose_shard(args.shard, args.shards, {"AWS_BATCH_JOB_ARRAY_INDEX": "9"}) == Shard(9, 10)
    # Submitted without shards, the placeholder is no number: the runner refuses it (exit 2).
    with pytest.raises(SystemExit) as refused:
        parser().parse_args([*words[3:-1], "Ref::shards"])
    assert refused.value.code == 2


def test_batch_job_retries_resume_and_attempts_are_bounded() -> None:
    from batch.usage import USAGE_EXIT

    definition = _job_definition()
    retry = definition["RetryStrategy"]
    # Retries resume where the attempt stopped; AWS Batch allows 1-10 attempts.
    assert 2 <= retry["Attempts"] <= 10
    # A command refused as given fails alike every time: that exit status ends the job; every
    # other exit (an outage, SIGTERM, a lost task) matches no rule, and AWS Batch retries it.
    assert retry["EvaluateOnExit"] == [{"OnExitCode": str(USAGE_EXIT), "Action": "EXIT"}]
    # At least AWS Batch's 60 s, and under Fargate's 14 days a task may live.
    assert 60 <= definition["Timeout"]["AttemptDurationSeconds"] < 14 * 86400


def test_batch_job_container_is_a_fargate_size_in_production_without_the_token_secret() -> None:
    container = _job_definition()["ContainerProperties"]
    assert container["Image"] == {"Ref": "BatchImageUri"}  # the bento's image, not the Lambda one
    assert container["JobRoleArn"] == {"Fn::GetAtt": ["BatchJobRole", "Arn"]}
    assert container["ExecutionRoleArn"] == {"Fn::GetAtt": ["BatchExecutionRole", "Arn"]}
    sizes = {r["Type"]: int(r["Value"]) for r in container["ResourceRequirements"]}
    vcpus, memory = sizes["VCPU"], sizes["MEMORY"]
    least, most, step = FARGATE_MEMORY[vcpus]
    assert least <= memory <= most and memory % step == 0, sizes
    # Sized like the Cloud Run job: the same models in one process, the same items in flight.
    limits = _job_container()["resources"]["limits"]
    assert (vcpus, memory) == (int(limits["cpu"]), int(limits["memory"].removesuffix("Gi")) * 1024)
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert {n for n in env if n.startswith("VERITY_")} <= SETTINGS, sorted(set(env) - SETTINGS)
    assert set(env) - SETTINGS <= BATCH_ENV_EXTRA  # credentials come from the job role
    assert env["VERITY_AWS_REGION"] == {"Ref": "AWS::Region"}
    _checks_bento_layout(env)
    settings = _production_settings_without_auth({**env, "VERITY_AWS_REGION": "eu-west-1"})
    assert settings.ort_intra_op_threads == vcpus


def test_batch_job_role_reads_the_media_and_writes_the_results_and_nothing_else() -> None:
    role = _properties("BatchJobRole")
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert "ManagedPolicyArns" not in role
    granted: dict[str, set[str]] = {}
    for policy in role["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            assert not {"NotAction", "NotResource", "NotPrincipal"} & set(statement), statement
            actions = _as_list(statement["Action"])
            assert not [a for a in actions if "*" in a], actions  # no s3:*, no *
            for resource in _as_list(statement["Resource"]):
                granted.setdefault(resource["Fn::Sub"], set()).update(actions)
            if actions == ["s3:ListBucket"]:  # listing only under the media prefix
                assert statement["Condition"] == {
                    "StringLike": {"s3:prefix": {"Fn::Sub": "${BatchMediaPrefix}*"}}
                }
    assert granted == BATCH_JOB_PERMISSIONS
    # The prefixes are part of those ARNs: never empty (the whole bucket), never a wildcard or an
    # IAM variable, always a folder.
    parameters = _template()["Parameters"]
    for name in ("BatchMediaPrefix", "BatchOutputPrefix"):
        pattern = parameters[name]["AllowedPattern"]
        assert re.fullmatch(pattern, parameters[name]["Default"])
        for bad in ("", "/", "media", "*", "media/*/", "a?/", "${aws:username}/"):
            assert not re.fullmatch(pattern, bad), (name, bad)


def test_batch_execution_role_only_pulls_the_image_and_writes_logs() -> None:
    role = _properties("BatchExecutionRole")
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert role["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"}
    ]
    assert "Policies" not in role  # no bucket, no table: the job role holds what the runner uses


def test_batch_queue_feeds_a_fargate_compute_environment_big_enough_for_one_child() -> None:
    template = _template()
    environment = _properties("BatchComputeEnvironment")
    assert environment["Type"] == "MANAGED" and environment["State"] == "ENABLED"
    compute = environment["ComputeResources"]
    assert compute["Type"] == "FARGATE"
    assert compute["Subnets"] == {"Ref": "BatchSubnetIds"}
    assert compute["SecurityGroupIds"] == {"Ref": "BatchSecurityGroupIds"}
    most = template["Parameters"][compute["MaxvCpus"]["Ref"]]
    vcpus = next(
        int(r["Value"])
        for r in _job_definition()["ContainerProperties"]["ResourceRequirements"]
        if r["Type"] == "VCPU"
    )
    assert most["MinValue"] >= vcpus and most["Default"] >= vcpus
    queue = _properties("BatchJobQueue")
    assert queue["State"] == "ENABLED"
    assert queue["ComputeEnvironmentOrder"] == [
        {"Order": 1, "ComputeEnvironment": {"Ref": "BatchComputeEnvironment"}}
    ]
    assert _job_definition()["ContainerProperties"]["NetworkConfiguration"]["AssignPublicIp"] == {
        "Ref": "BatchAssignPublicIp"
    }


def json_dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
