"""Deployment files, checked without a cloud account or a Docker engine: the AWS template passes
cfn-lint (offline) and matches the code (the table the store creates, real settings, no wildcard
permissions); the Lambda image recipe installs only the runtime group, copies files that exist,
and names a handler that exists."""

from __future__ import annotations

import ast
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


def _template() -> dict[str, Any]:
    from cfnlint.decode import decode

    template, problems = decode(str(TEMPLATE))
    assert not problems, problems
    return template


def _resources(kind: str) -> list[dict[str, Any]]:
    return [r for r in _template()["Resources"].values() if r["Type"] == kind]


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


def test_template_function_environment_is_real_production_settings() -> None:
    (function,) = _resources("AWS::Serverless::Function")
    variables = function["Properties"]["Environment"]["Variables"]
    assert set(variables) <= SETTINGS, sorted(set(variables) - SETTINGS)
    assert variables["VERITY_ENVIRONMENT"] == "production"
    assert variables["VERITY_STORE"] == "dynamodb"  # the handler refuses SQLite in production
    assert variables["VERITY_DYNAMODB_TABLE"] == {"Ref": "Table"}
    # 6 MB synchronous payloads carry about 4.5 MB of media after base64.
    for cap in ("VERITY_MAX_IMAGE_BYTES", "VERITY_MAX_AUDIO_BYTES", "VERITY_MAX_VIDEO_BYTES"):
        assert int(variables[cap]) <= 4_500_000
    assert function["Properties"]["PackageType"] == "Image"


def test_template_permissions_have_no_wildcards() -> None:
    (function,) = _resources("AWS::Serverless::Function")
    statements = [s for policy in function["Properties"]["Policies"] for s in policy["Statement"]]
    assert statements
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not [a for a in actions if "*" in a], actions
        assert all(a.startswith("dynamodb:") for a in actions)
        assert statement["Resource"] == {"Fn::GetAtt": ["Table", "Arn"]}


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
    module, _, attribute = ast.literal_eval(command)[0].rpartition(".")
    path = PROJECT_ROOT / Path(*module.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assigned = {
        t.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    assert attribute in assigned, (path, attribute)


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
