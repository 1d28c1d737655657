"""Deployment files, checked without a cloud account or a Docker engine: the AWS template passes
cfn-lint (offline) and matches the code (the table the store creates, real settings, handlers that
exist, exactly the permissions each function needs and no wildcards, a private uploads bucket, a
jobs queue that outlasts its worker); the Lambda image recipe installs only the runtime group,
copies files that exist, and names a handler that exists."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

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
