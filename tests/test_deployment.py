"""The deployment an operator relies on: docker-compose.yml, the Dockerfile and deploy/, checked as files.

No Docker engine is needed (or available in CI): the compose file is parsed with PyYAML and checked against
the structural rules of the Compose specification, and the wiring between services, scripts, Prometheus and
Grafana is cross-checked with the application's own constants, so a rename on either side fails here.
"""

from __future__ import annotations

import json
import re
import shlex
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ecomdream.codec.keys import new_key
from ecomdream.contracts import REPLICATE_CREATE_TASK_QUEUE, REPLICATE_READ_TASK_QUEUE
from ecomdream.contracts.search import SEARCH_ATTRIBUTE_NAMES
from ecomdream.db.migrate import MIGRATIONS_DIR
from tests.promql import PROMETHEUS_SERIES, promql_metric_names
from worker import GRACEFUL_SHUTDOWN

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
COMPOSE_ENV_EXAMPLE = DEPLOY / "compose.env.example"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ecomdream.json"

APP_SERVICES = ("migrate", "api", "worker", "codec-server")

# Compose specification (compose-spec/compose-spec schema/compose-spec.json): the keys allowed at the top level
# (restricted to the ones this project may use; `version` is obsolete) and on a service.
TOP_LEVEL_KEYS = {"name", "services", "volumes", "networks", "configs", "secrets"}
SERVICE_KEYS = {
    "annotations", "attach", "blkio_config", "build", "cap_add", "cap_drop", "cgroup", "cgroup_parent",
    "command", "configs", "container_name", "cpu_count", "cpu_percent", "cpu_period", "cpu_quota",
    "cpu_rt_period", "cpu_rt_runtime", "cpu_shares", "cpus", "cpuset", "credential_spec", "depends_on",
    "deploy", "develop", "device_cgroup_rules", "devices", "dns", "dns_opt", "dns_search", "domainname",
    "entrypoint", "env_file", "environment", "expose", "extends", "external_links", "extra_hosts", "gpus",
    "group_add", "healthcheck", "hostname", "image", "init", "ipc", "isolation", "label_file", "labels",
    "links", "logging", "mac_address", "mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit",
    "models", "network_mode", "networks", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit",
    "platform", "ports", "post_start", "pre_stop", "privileged", "profiles", "provider", "pull_policy",
    "pull_refresh_after", "read_only", "restart", "runtime", "scale", "secrets", "security_opt", "shm_size",
    "stdin_open", "stop_grace_period", "stop_signal", "storage_opt", "sysctls", "tmpfs", "tty", "ulimits",
    "use_api_socket", "user", "userns_mode", "uts", "volumes", "volumes_from", "working_dir",
}  # fmt: skip
HEALTHCHECK_KEYS = {"disable", "interval", "retries", "test", "timeout", "start_period", "start_interval"}
DEPENDS_ON_KEYS = {"condition", "required", "restart"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
BUILD_KEYS = {"context", "dockerfile", "args", "target", "labels", "cache_from", "tags", "platforms"}
RESTART_POLICIES = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$")

# Every metric the dashboard may query. The application's own (ecomdream/metrics.py for the API,
# workflows/metrics.py for the worker) and the Temporal SDK's; worker.py exports SDK counters with
# counters_total_suffix=True, hence `_total` on temporal_* counters.
APP_METRICS = {
    "ecomdream_http_requests_total",
    "ecomdream_http_request_duration_seconds_bucket",
    "ecomdream_journeys_total",
    "ecomdream_trainings_total",
    "ecomdream_training_duration_seconds_bucket",
    "ecomdream_prompts_total",
    "ecomdream_images_generated_total",
    "ecomdream_refunds_total",
    "ecomdream_webhooks_total",
    "ecomdream_dependency_up",
    "ecomdream_operator_attention_total",
    "ecomdream_deadlines_missed_total",
    "ecomdream_replicate_errors_total",
    "ecomdream_payments_total",
}
TEMPORAL_SDK_METRICS = {
    "temporal_workflow_completed_total",
    "temporal_activity_execution_failed_total",
    "temporal_workflow_task_schedule_to_start_latency_bucket",
    "temporal_activity_schedule_to_start_latency_bucket",
    "temporal_long_request_total",
    "temporal_workflow_task_execution_failed_total",
}
SECRET_VALUE = re.compile(
    r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{8,}|\bwhsec_[A-Za-z0-9+/=]{16,}|\br8_[A-Za-z0-9]{16,}"
)
# `${NAME}`, `${NAME-default}`, `${NAME:-default}`, `${NAME?error}`, `${NAME:?error}` in a compose value.
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
# Variables and environment keys named like these hold a secret: compose requires them, never defaults them.
SECRET_NAME = re.compile(r"(PASSWORD|PWD|SECRET|TOKEN|KEY)$")
# Alert receivers are optional (OPERATIONS.md, "Alerts"): a team may use Telegram, a webhook, or neither.
OPTIONAL_SECRETS = frozenset({"TELEGRAM_BOT_TOKEN"})
PROVIDER_SECRETS = {
    "ECOMDREAM_STRIPE_API_KEY",
    "ECOMDREAM_STRIPE_WEBHOOK_SECRET",
    "ECOMDREAM_REPLICATE_API_TOKEN",
    "ECOMDREAM_REPLICATE_WEBHOOK_SECRET",
    "ECOMDREAM_TEMPORAL_API_KEY",
    "ECOMDREAM_PAYLOAD_KEYS",
    "ECOMDREAM_CODEC_SERVER_TOKEN",
    "ECOMDREAM_SMTP_PASSWORD",
}


# --- helpers -------------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    """A YAML file as plain data (anchors and `<<` merge keys resolved, as Compose resolves them)."""
    return yaml.safe_load(path.read_text())


def interpolate(value: str) -> str:
    """What Compose makes of `${VAR:-default}` / `${VAR-default}` / `${VAR}` with nothing set: the default; a
    required `${VAR:?error}` becomes `<VAR>`, standing in for the value the operator's .env gives it."""

    def one(match: re.Match[str]) -> str:
        op = match.group("op") or ""
        if op.endswith("?"):
            return f"<{match.group('name')}>"
        return match.group("arg") or ""

    return VARIABLE.sub(one, value).replace("$$", "$")


def secret_references(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, default or error message) of every `${...}` in text whose name says it is a secret."""
    return [
        (m.group("name"), m.group("op") or "", m.group("arg") or "")
        for m in VARIABLE.finditer(text)
        if SECRET_NAME.search(m.group("name"))
    ]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment` (map or KEY=VALUE list), values as strings with defaults interpolated."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = {item.partition("=")[0]: item.partition("=")[2] for item in raw}
    return {str(k): interpolate(str(v)) for k, v in raw.items()}


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, container path) for every short-syntax volume entry."""
    pairs: list[tuple[str, str]] = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"use the short volume syntax: {entry!r}"
        source, target, *_ = entry.split(":")
        pairs.append((source, target))
    return pairs


def repo_path_of(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository file a bind mount shows at container_path, if any."""
    wanted = PurePosixPath(container_path)
    for source, target in mounts(service):
        if not source.startswith("./"):
            continue
        mount_point = PurePosixPath(target)
        if wanted == mount_point or mount_point in wanted.parents:
            return ROOT / source / wanted.relative_to(mount_point)
    return None


def entrypoint_script(service: dict[str, Any]) -> Path:
    """The repository script a one-shot service runs as `entrypoint: ["/bin/sh", <mounted script>]`.

    Run through sh, so the scripts work without an execute bit (which checkouts and bind mounts may lose).
    """
    shell, container_path = service["entrypoint"]
    assert shell == "/bin/sh"
    script = repo_path_of(service, container_path)
    assert script is not None, f"{container_path} is not mounted from the repository"
    assert script.is_file(), script
    return script


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency → condition (the short list form means service_started)."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: spec["condition"] for name, spec in raw.items()}


def image_tag(image: str) -> str:
    """The tag of `repo/name:tag` ('' when there is none)."""
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def shell_commands(script: Path) -> list[list[str]]:
    """Each command line of a shell script as tokens, with backslash continuations joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", script.read_text())
    commands: list[list[str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            commands.append(shlex.split(stripped, comments=True))
    return commands


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for every Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions: list[tuple[str, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, args = stripped.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    return instructions


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose sees it before interpolation."""
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services by name."""
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml."""
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The Grafana dashboard JSON."""
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


# --- the helpers themselves (so the checks below can fail) ----------------------------------------------------


class TestHelpers:
    def test_promql_metric_names_sees_through_functions_and_labels(self) -> None:
        expr = (
            'histogram_quantile(0.95, sum by (le, route) (rate(ecomdream_http_request_duration_seconds_bucket{route=~"/api.*"}[5m])))'
            " / on(route) group_left sum(rate(ecomdream_http_request_total[$__rate_interval]))"
        )
        assert promql_metric_names(expr) == {
            "ecomdream_http_request_duration_seconds_bucket",
            "ecomdream_http_request_total",  # the typo a dashboard check has to catch
        }

    def test_interpolate_takes_the_defaults(self) -> None:
        assert (
            interpolate("postgresql://u:${PW:-secret}@db/${DB-app}${UNSET}$$x")
            == "postgresql://u:secret@db/app$x"
        )
        assert (
            interpolate("postgresql://u:${PW:?set PW in .env (the password)}@db") == "postgresql://u:<PW>@db"
        )

    def test_secret_references_see_defaults_and_requirements(self) -> None:
        text = "a: ${DB_PASSWORD:-pw}\nb: u:${API_TOKEN:?set API_TOKEN}@h\nc: ${IMAGE_TAG:-local} ${S3_KEY}"
        assert secret_references(text) == [
            ("DB_PASSWORD", ":-", "pw"),
            ("API_TOKEN", ":?", "set API_TOKEN"),
            ("S3_KEY", "", ""),
        ]

    def test_shell_commands_join_continuations(self, tmp_path: Path) -> None:
        script = tmp_path / "s.sh"
        script.write_text('# comment\nrun --name "$x" \\\n    --type Keyword  # trailing\n')
        assert shell_commands(script) == [["run", "--name", "$x", "--type", "Keyword"]]


# --- the compose file's structure ---------------------------------------------------------------------------


class TestComposeStructure:
    def test_top_level_keys_are_compose_keys(self, compose: dict[str, Any]) -> None:
        unknown = {key for key in compose if key not in TOP_LEVEL_KEYS and not key.startswith("x-")}
        assert not unknown
        assert compose["name"] == "ecomdream"

    def test_service_keys_are_compose_keys(self, services: dict[str, dict[str, Any]]) -> None:
        for name, service in services.items():
            assert re.fullmatch(r"[a-zA-Z0-9._-]+", name)
            unknown = {key for key in service if key not in SERVICE_KEYS and not key.startswith("x-")}
            assert not unknown, f"{name}: {unknown}"
            assert "image" in service or "build" in service, name
            if "restart" in service:
                assert RESTART_POLICIES.match(str(service["restart"])), name
            if "stop_grace_period" in service:
                assert DURATION.match(service["stop_grace_period"]), name

    def test_builds_and_healthchecks_use_spec_keys(self, services: dict[str, dict[str, Any]]) -> None:
        for name, service in services.items():
            build = service.get("build")
            if isinstance(build, dict):
                assert set(build) <= BUILD_KEYS, name
            check = service.get("healthcheck")
            if check is not None:
                assert set(check) <= HEALTHCHECK_KEYS, name
                test = check["test"]
                assert isinstance(test, list), name
                assert test[0] in {"CMD", "CMD-SHELL"}, name
                assert len(test) > 1, name
                for key in ("interval", "timeout", "start_period"):
                    if key in check:
                        assert DURATION.match(check[key]), f"{name}.{key}"

    def test_environment_values_are_scalars(self, services: dict[str, dict[str, Any]]) -> None:
        for name, service in services.items():
            raw = service.get("environment") or {}
            if isinstance(raw, dict):
                bad = {k: v for k, v in raw.items() if not isinstance(v, str | int | float | bool | None)}
                assert not bad, f"{name}: {bad}"

    def test_every_dependency_exists_with_a_valid_condition(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        for name, service in services.items():
            raw = service.get("depends_on") or {}
            if isinstance(raw, dict):
                for spec in raw.values():
                    assert set(spec) <= DEPENDS_ON_KEYS, name
                    assert "condition" in spec, name
            for target, condition in depends_on(service).items():
                assert target in services, f"{name} depends on missing {target}"
                assert condition in CONDITIONS, name
                if condition == "service_healthy":
                    assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy"
                if condition == "service_completed_successfully":
                    # A one-shot job: restarting it forever would never let its dependants start.
                    assert services[target].get("restart", "no") == "no", target

    def test_named_volumes_are_declared_and_bind_mounts_exist(
        self, compose: dict[str, Any], services: dict[str, dict[str, Any]]
    ) -> None:
        declared = set(compose.get("volumes") or {})
        used: set[str] = set()
        for name, service in services.items():
            for source, target in mounts(service):
                assert target.startswith("/"), name
                if source.startswith("."):
                    assert source.startswith("./deploy/"), f"{name} mounts {source} from outside deploy/"
                    assert (ROOT / source).exists(), f"{name} mounts missing {source}"
                else:
                    assert source in declared, f"{name} uses undeclared volume {source}"
                    used.add(source)
        assert used == declared

    def test_state_lives_in_named_volumes(self, services: dict[str, dict[str, Any]]) -> None:
        data_dirs = {
            "postgres": "/var/lib/postgresql/data",
            "minio": "/data",
            "prometheus": "/prometheus",
            "alertmanager": "/alertmanager",
            "grafana": "/var/lib/grafana",
        }
        for name, path in data_dirs.items():
            sources = [source for source, target in mounts(services[name]) if target == path]
            assert sources, name
            assert not sources[0].startswith("."), f"{name} keeps its data in a named volume"


class TestPortsAndImages:
    def test_every_published_port_binds_localhost(self, services: dict[str, dict[str, Any]]) -> None:
        published = 0
        for name, service in services.items():
            for port in service.get("ports", []):
                published += 1
                if isinstance(port, dict):
                    assert port.get("host_ip") == "127.0.0.1", name
                else:
                    assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+(/tcp|/udp)?", str(port)), f"{name}: {port}"
        assert published

    def test_consoles_are_where_the_docs_say(self, services: dict[str, dict[str, Any]]) -> None:
        expected = {
            "api": "127.0.0.1:8000:8000",
            "temporal-ui": "127.0.0.1:8080:8080",
            "codec-server": "127.0.0.1:8234:8234",
            "prometheus": "127.0.0.1:9090:9090",
            "alertmanager": "127.0.0.1:9093:9093",
            "grafana": "127.0.0.1:3000:3000",
        }
        for name, port in expected.items():
            assert port in services[name]["ports"], name

    def test_workers_can_scale(self, services: dict[str, dict[str, Any]]) -> None:
        worker = services["worker"]
        assert "ports" not in worker
        assert "scale" not in worker
        for name, service in services.items():
            assert "container_name" not in service, (
                f"{name}: a fixed name blocks --scale and parallel projects"
            )

    def test_third_party_images_are_pinned(self, services: dict[str, dict[str, Any]]) -> None:
        for name, service in services.items():
            if name in APP_SERVICES:
                continue
            image = service["image"]
            tag = image_tag(image)
            assert tag not in {"", "latest"}, f"{name}: {image}"
            assert "$" not in image, f"{name}: {image}"
            assert "auto-setup" not in image, f"{name}: temporalio/auto-setup is deprecated"

    def test_app_services_share_one_image_built_from_this_repo(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        images: set[str] = set()
        for name in APP_SERVICES:
            service = services[name]
            build = service["build"]
            assert (build["context"], build["dockerfile"]) == (".", "Dockerfile"), name
            tag = image_tag(interpolate(service["image"]))
            assert tag not in {"", "latest"}, name
            images.add(service["image"])
        assert len(images) == 1

    def test_temporal_tools_match_the_server_version(self, services: dict[str, dict[str, Any]]) -> None:
        server = image_tag(services["temporal"]["image"])
        # The schema job applies the schema shipped with its admin-tools image: it must be the server's.
        for job in ("temporal-schema", "temporal-init"):
            image = services[job]["image"]
            assert image == f"temporalio/admin-tools:{server}", job
        assert services["temporal"]["image"].startswith("temporalio/server:")


# --- Postgres, Temporal, MinIO --------------------------------------------------------------------------------


class TestPostgres:
    def test_one_instance_holds_the_temporal_and_app_databases(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        postgres = services["postgres"]
        init_dir = repo_path_of(postgres, "/docker-entrypoint-initdb.d")
        assert init_dir is not None
        assert init_dir.is_dir()
        sql = "\n".join(path.read_text() for path in sorted(init_dir.glob("*.sh")))
        for statement in (
            "CREATE ROLE temporal LOGIN CREATEDB",
            "CREATE DATABASE temporal OWNER temporal",
            "CREATE DATABASE temporal_visibility OWNER temporal",
            "CREATE ROLE ecomdream LOGIN",
            "CREATE DATABASE ecomdream OWNER ecomdream",
        ):
            assert statement in sql
        env = environment(postgres)
        read = set(re.findall(r'"\$([A-Z_]+_PASSWORD)"', sql))
        assert read == {"TEMPORAL_DB_PASSWORD", "APP_DB_PASSWORD"}
        for variable in read:
            assert env.get(variable), f"the init script reads {variable}"

    def test_healthcheck_waits_for_the_real_server(self, services: dict[str, dict[str, Any]]) -> None:
        test = " ".join(services["postgres"]["healthcheck"]["test"])
        assert "pg_isready" in test
        assert "-h 127.0.0.1" in test

    def test_credentials_agree_between_postgres_temporal_and_the_app(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        postgres = environment(services["postgres"])
        temporal = environment(services["temporal"])
        assert temporal["POSTGRES_SEEDS"] == "postgres"
        assert temporal["POSTGRES_USER"] == "temporal"
        assert temporal["POSTGRES_PWD"] == postgres["TEMPORAL_DB_PASSWORD"]
        assert environment(services["temporal-schema"])["SQL_PASSWORD"] == postgres["TEMPORAL_DB_PASSWORD"]
        url = urlsplit(environment(services["api"])["ECOMDREAM_DATABASE_URL"])
        assert (url.username, url.password) == ("ecomdream", postgres["APP_DB_PASSWORD"])


class TestTemporal:
    def test_schema_job_runs_between_postgres_and_the_server(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        assert depends_on(services["temporal-schema"]) == {"postgres": "service_healthy"}
        assert depends_on(services["temporal"]) == {"temporal-schema": "service_completed_successfully"}

    def test_schema_script_creates_and_migrates_both_databases(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        job = services["temporal-schema"]
        script = entrypoint_script(job)
        text = script.read_text()
        assert "temporal-sql-tool --plugin postgres12" in text
        for step in ("create", "setup-schema -v 0.0", "update-schema -d"):
            assert f'sql_tool --db "$db" {step}' in text
        assert '"temporal:temporal" "temporal_visibility:visibility"' in text
        assert "/etc/temporal/schema/postgresql/v12" in text

    def test_server_settings(self, services: dict[str, dict[str, Any]]) -> None:
        server = services["temporal"]
        env = environment(server)
        assert env["DB"] == "postgres12"
        assert env["BIND_ON_IP"] == "0.0.0.0"
        assert env["PROMETHEUS_ENDPOINT"] == "0.0.0.0:8000"
        assert "nc" in server["healthcheck"]["test"]
        assert "7233" in server["healthcheck"]["test"]
        # The server resolves DYNAMIC_CONFIG_FILE_PATH relative to its working directory, /etc/temporal.
        config = repo_path_of(server, str(PurePosixPath("/etc/temporal") / env["DYNAMIC_CONFIG_FILE_PATH"]))
        assert config is not None
        assert config.is_file()
        dynamic = load_yaml(config)
        assert dynamic["frontend.enableUpdateWorkflowExecution"] == [{"value": True}]
        assert dynamic["frontend.enableUpdateWorkflowExecutionAsyncAccepted"] == [{"value": True}]
        longest_id = len("journey-00000000-0000-0000-0000-000000000000")
        assert dynamic["limit.maxIDLength"][0]["value"] >= max(
            longest_id, len(REPLICATE_CREATE_TASK_QUEUE), len(REPLICATE_READ_TASK_QUEUE)
        )

    def test_init_registers_exactly_the_apps_search_attributes(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        init = services["temporal-init"]
        assert depends_on(init) == {"temporal": "service_healthy"}
        names = init["command"]
        assert len(names) == len(set(names)) == 5
        assert set(names) == set(SEARCH_ATTRIBUTE_NAMES)
        env = environment(init)
        assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
        for app in APP_SERVICES:
            assert environment(services[app])["ECOMDREAM_TEMPORAL_NAMESPACE"] == env["NAMESPACE"], app

    def test_each_attribute_gets_its_own_keyword_type(self, services: dict[str, dict[str, Any]]) -> None:
        init = services["temporal-init"]
        script = entrypoint_script(init)
        commands = shell_commands(script)
        creates = [cmd for cmd in commands if "search-attribute" in cmd and "create" in cmd]
        assert creates, "the script registers search attributes"
        for cmd in creates:
            # `--name A --name B --type Keyword` registers only A: one name and one type per call.
            assert cmd.count("--name") == 1
            assert cmd.count("--type") == 1
            assert cmd[cmd.index("--type") + 1] == "Keyword"
            assert cmd[cmd.index("--name") + 1] == "$name"
            assert "--namespace" in cmd
        # ... called once per argument: the attribute list in docker-compose.yml.
        assert ["for", "name", "in", "$@;", "do"] in commands
        assert ["ensure_keyword_attribute", "$name"] in commands


class TestMinio:
    def test_bucket_and_app_user_match_the_app_settings(self, services: dict[str, dict[str, Any]]) -> None:
        minio, init = services["minio"], services["minio-init"]
        assert minio["command"] == ["server", "/data", "--console-address", ":9001"]
        assert depends_on(init) == {"minio": "service_healthy"}
        init_env = environment(init)
        for app in APP_SERVICES:
            env = environment(services[app])
            assert env["ECOMDREAM_S3_BUCKET"] == init_env["S3_BUCKET"], app
            assert env["ECOMDREAM_S3_ACCESS_KEY_ID"] == init_env["APP_S3_ACCESS_KEY"], app
            assert env["ECOMDREAM_S3_SECRET_ACCESS_KEY"] == init_env["APP_S3_SECRET_KEY"], app
        assert init_env["MINIO_ROOT_PASSWORD"] == environment(minio)["MINIO_ROOT_PASSWORD"]
        # MinIO refuses secrets shorter than 8 characters.
        assert len(init_env["APP_S3_SECRET_KEY"]) >= 8
        assert len(init_env["MINIO_ROOT_PASSWORD"]) >= 8

    def test_init_script_creates_the_bucket_idempotently(self, services: dict[str, dict[str, Any]]) -> None:
        init = services["minio-init"]
        script = entrypoint_script(init)
        commands = shell_commands(script)
        assert ["mc", "mb", "--ignore-existing", "local/${S3_BUCKET}"] in commands
        assert ["mc", "anonymous", "set", "none", "local/${S3_BUCKET}"] in commands


# --- the app containers ------------------------------------------------------------------------------------


class TestAppServices:
    def test_commands(self, services: dict[str, dict[str, Any]]) -> None:
        assert services["migrate"]["command"] == ["python", "-m", "ecomdream.db.migrate", "upgrade"]
        assert services["api"]["command"] == ["python", "-m", "api"]
        assert services["worker"]["command"] == ["python", "worker.py"]
        assert services["codec-server"]["command"] == ["python", "-m", "ecomdream.codec"]

    def test_wiring_reaches_the_compose_services(self, services: dict[str, dict[str, Any]]) -> None:
        for name in APP_SERVICES:
            env = environment(services[name])
            db = urlsplit(env["ECOMDREAM_DATABASE_URL"])
            assert (db.scheme, db.hostname, db.port, db.path) == (
                "postgresql+asyncpg",
                "postgres",
                5432,
                "/ecomdream",
            ), name
            host, port = env["ECOMDREAM_TEMPORAL_ADDRESS"].split(":")
            assert (host, port) == ("temporal", "7233"), name
            s3 = urlsplit(env["ECOMDREAM_S3_ENDPOINT_URL"])
            assert (s3.hostname, s3.port) == ("minio", 9000), name
            for key in ("ECOMDREAM_S3_REGION", "ECOMDREAM_S3_BUCKET", "ECOMDREAM_S3_ACCESS_KEY_ID"):
                assert env[key], f"{name}: {key}"
            assert env["ECOMDREAM_S3_SECRET_ACCESS_KEY"], name

    def test_live_keys_come_from_an_optional_env_file(self, services: dict[str, dict[str, Any]]) -> None:
        for name in APP_SERVICES:
            assert services[name]["env_file"] == [{"path": ".env", "required": False}], name

    def test_api_listens_inside_its_container_and_is_ready_checked(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        api = services["api"]
        env = environment(api)
        assert env["ECOMDREAM_API_HOST"] == "0.0.0.0"
        assert env["ECOMDREAM_API_PORT"] == "8000"
        assert any("/ready" in part for part in api["healthcheck"]["test"])

    def test_api_and_worker_start_after_every_setup_job(self, services: dict[str, dict[str, Any]]) -> None:
        jobs = {"migrate", "temporal-init", "minio-init"}
        for name in ("api", "worker"):
            assert depends_on(services[name]) == dict.fromkeys(jobs, "service_completed_successfully"), name
        assert depends_on(services["migrate"]) == {"postgres": "service_healthy"}

    def test_worker_gets_time_for_its_graceful_shutdown(self, services: dict[str, dict[str, Any]]) -> None:
        grace = services["worker"]["stop_grace_period"]
        assert re.fullmatch(r"\d+s", grace)
        assert timedelta(seconds=int(grace[:-1])) > GRACEFUL_SHUTDOWN


class TestCodecServer:
    def test_the_web_ui_reaches_the_codec_server_from_the_browser(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        codec = services["codec-server"]
        env = environment(codec)
        endpoint = urlsplit(environment(services["temporal-ui"])["TEMPORAL_CODEC_ENDPOINT"])
        # The browser calls it: the published address, not the container name.
        published = f"127.0.0.1:{endpoint.port}:{env['ECOMDREAM_CODEC_SERVER_PORT']}"
        assert (endpoint.scheme, endpoint.hostname, endpoint.path) == ("http", "127.0.0.1", "/codec")
        assert published in codec["ports"]
        assert env["ECOMDREAM_CODEC_SERVER_HOST"] == "0.0.0.0"
        ui_port = services["temporal-ui"]["ports"][0].split(":")[1]
        assert f"http://127.0.0.1:{ui_port}" in env["ECOMDREAM_CODEC_SERVER_UI_ORIGINS"].split(",")
        assert env["ECOMDREAM_CODEC_SERVER_OPEN_TO_UI"] == "true"
        assert (
            "${ECOMDREAM_CODEC_SERVER_OPEN_TO_UI" in codec["environment"]["ECOMDREAM_CODEC_SERVER_OPEN_TO_UI"]
        )
        assert any("/health" in part for part in codec["healthcheck"]["test"])

    def test_it_serves_the_apps_namespace(self, services: dict[str, dict[str, Any]]) -> None:
        namespace = environment(services["temporal-init"])["NAMESPACE"]
        assert environment(services["codec-server"])["ECOMDREAM_TEMPORAL_NAMESPACE"] == namespace


class TestSecrets:
    def test_provider_secrets_are_not_set_in_compose(self, services: dict[str, dict[str, Any]]) -> None:
        for name, service in services.items():
            baked = PROVIDER_SECRETS & set(environment(service))
            assert not baked, f"{name} sets {baked}: they belong in .env"

    def test_no_secret_looking_values_in_deployment_files(self) -> None:
        files = [COMPOSE_FILE, ROOT / "Dockerfile", ROOT / ".dockerignore", *DEPLOY.rglob("*")]
        files += [ROOT / "docs" / "production.md"]
        for path in files:
            if path.is_file():
                assert not SECRET_VALUE.search(path.read_text()), path

    def test_every_secret_is_required_with_a_message_naming_it(self) -> None:
        found = secret_references(COMPOSE_FILE.read_text())
        assert found, "the stack has passwords"
        for name, op, message in found:
            if name in OPTIONAL_SECRETS:
                # An alert receiver a team may not use: unset means "not used", never a default value.
                assert (op, message) == (":-", ""), (
                    f"${{{name}{op}{message}}}: an optional secret has no default"
                )
                continue
            # `:?` stops `docker compose up` when the variable is unset or empty, printing the message.
            assert op == ":?", f"${{{name}{op}{message}}}: a secret must not have a default"
            assert f"set {name} in .env (" in message, name

    def test_no_service_sets_a_secret_to_a_literal(self, services: dict[str, dict[str, Any]]) -> None:
        for name, service in services.items():
            raw = service.get("environment") or {}
            if isinstance(raw, list):
                raw = dict(item.partition("=")[::2] for item in raw)
            for key, value in raw.items():
                if SECRET_NAME.search(key) and key in OPTIONAL_SECRETS:
                    assert str(value) == f"${{{key}:-}}", f"{name}.{key}: unset or from .env, nothing else"
                elif SECRET_NAME.search(key):
                    required = [m for m in VARIABLE.finditer(str(value)) if m.group("op") == ":?"]
                    assert len(required) == 1, f"{name}.{key}: one required variable"
                    assert VARIABLE.sub("", str(value)) == "", f"{name}.{key}: nothing literal beside it"

    def test_compose_env_example_lists_every_required_variable_without_a_value(self) -> None:
        listed = dict(
            line.partition("=")[::2]
            for line in COMPOSE_ENV_EXAMPLE.read_text().splitlines()
            if line and not line.startswith("#")
        )
        required = {name for name, op, _ in secret_references(COMPOSE_FILE.read_text()) if op == ":?"}
        assert set(listed) == required
        assert set(listed.values()) == {""}, "an example, not a password anyone could copy"

    def test_secret_detector_catches_real_looking_keys(self) -> None:
        assert SECRET_VALUE.search("ECOMDREAM_STRIPE_API_KEY=sk_live_51HxYzAbCdEf")
        assert SECRET_VALUE.search("r8_0123456789abcdefABCDEF")
        assert not SECRET_VALUE.search("ECOMDREAM_STRIPE_API_KEY=sk_live_…")


# --- the image --------------------------------------------------------------------------------------------


class TestDockerfile:
    def test_base_image_and_non_root_user(self) -> None:
        instructions = dockerfile_instructions()
        assert ("FROM", "python:3.11-slim") in instructions
        users = [args for keyword, args in instructions if keyword == "USER"]
        assert users, "the image must drop root"
        user = users[-1].split(":")[0]
        assert user not in {"root", "0"}
        last_user = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "USER")
        assert all(keyword not in {"RUN", "COPY", "ADD"} for keyword, _ in instructions[last_user:])

    def test_no_env_file_or_secret_is_baked_in(self) -> None:
        ignored = set((ROOT / ".dockerignore").read_text().split())
        for keyword, args in dockerfile_instructions():
            if keyword in {"COPY", "ADD"}:
                sources = [part for part in args.split()[:-1] if not part.startswith("--")]
                assert not any(".env" in source for source in sources), args
                if "." in sources:
                    assert ".env" in ignored
            if keyword in {"ENV", "ARG"}:
                assert not re.search(r"STRIPE|REPLICATE|PASSWORD|SECRET|TOKEN|API_KEY", args), args

    def test_dockerignore_keeps_secrets_and_clutter_out(self) -> None:
        ignored = set((ROOT / ".dockerignore").read_text().split())
        assert {".git", ".venv", ".data", ".env", "tests", "bench", ".mypy_cache", ".pytest_cache"} <= ignored

    def test_everything_copied_is_in_the_build_context(self) -> None:
        ignored = set((ROOT / ".dockerignore").read_text().split())
        for keyword, args in dockerfile_instructions():
            if keyword == "COPY":
                for source in [part for part in args.split()[:-1] if not part.startswith("--")]:
                    assert (ROOT / source).exists(), source
                    assert source.rstrip("/") not in ignored, f"{source} is excluded by .dockerignore"

    def test_migrations_are_found_at_run_time(self) -> None:
        instructions = dockerfile_instructions()
        workdir = PurePosixPath([args for keyword, args in instructions if keyword == "WORKDIR"][-1])
        copies = {
            args.split()[0]: workdir / args.split()[-1]
            for keyword, args in instructions
            if keyword == "COPY" and len(args.split()) == 2
        }
        # migrate.py looks in parents[2] of ecomdream/db/migrate.py: the directory holding the package. In the
        # image that is WORKDIR, because the package is imported from the copied tree (PYTHONPATH), not installed.
        assert MIGRATIONS_DIR == ROOT / "migrations"
        assert copies["ecomdream"] == workdir / "ecomdream"
        assert copies["migrations"] == workdir / "migrations"
        env = " ".join(args for keyword, args in instructions if keyword == "ENV")
        assert f"PYTHONPATH={workdir}" in env


# --- metrics and dashboards --------------------------------------------------------------------------------


class TestObservability:
    def test_prometheus_gets_its_config_from_the_repo(self, services: dict[str, dict[str, Any]]) -> None:
        prom = services["prometheus"]
        config_flag = next(arg for arg in prom["command"] if arg.startswith("--config.file="))
        path = repo_path_of(prom, config_flag.split("=", 1)[1])
        assert path == DEPLOY / "prometheus" / "prometheus.yml"

    def test_every_api_and_worker_replica_is_scraped(
        self, prometheus: dict[str, Any], services: dict[str, dict[str, Any]]
    ) -> None:
        dns_targets: dict[str, int] = {}
        for job in prometheus["scrape_configs"]:
            for sd in job.get("dns_sd_configs", []):
                assert sd["type"] == "A"
                for name in sd["names"]:
                    dns_targets[name] = sd["port"]
        api, worker = environment(services["api"]), environment(services["worker"])
        assert dns_targets == {
            "api": int(api["ECOMDREAM_METRICS_PORT"]),
            "worker": int(worker["ECOMDREAM_WORKER_METRICS_PORT"]),
        }
        assert api["ECOMDREAM_METRICS_HOST"] == worker["ECOMDREAM_METRICS_HOST"] == "0.0.0.0"

    def test_static_targets_are_compose_services(
        self, prometheus: dict[str, Any], services: dict[str, dict[str, Any]]
    ) -> None:
        for job in prometheus["scrape_configs"]:
            for static in job.get("static_configs", []):
                for target in static["targets"]:
                    host, port = target.split(":")
                    assert host in services, target
                    if host == "temporal":
                        assert environment(services[host])["PROMETHEUS_ENDPOINT"].endswith(f":{port}")

    def test_grafana_is_provisioned_from_the_repo(self, services: dict[str, dict[str, Any]]) -> None:
        grafana = services["grafana"]
        env = environment(grafana)
        assert env["GF_SECURITY_ADMIN_PASSWORD"] == "<GRAFANA_ADMIN_PASSWORD>", "required, no default"
        assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
        assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
        home = repo_path_of(grafana, env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
        assert home == DASHBOARD

        datasources = repo_path_of(grafana, "/etc/grafana/provisioning/datasources")
        providers = repo_path_of(grafana, "/etc/grafana/provisioning/dashboards")
        assert datasources is not None
        assert providers is not None
        sources = {ds["type"]: ds for f in datasources.glob("*.yml") for ds in load_yaml(f)["datasources"]}
        assert set(sources) == {"prometheus", "alertmanager"}
        assert urlsplit(sources["prometheus"]["url"]).hostname == "prometheus"
        alertmanager = urlsplit(sources["alertmanager"]["url"])
        assert alertmanager.hostname == "alertmanager"
        assert f"127.0.0.1:{alertmanager.port}:{alertmanager.port}" in services["alertmanager"]["ports"]
        (provider,) = [p for f in providers.glob("*.yml") for p in load_yaml(f)["providers"]]
        assert repo_path_of(grafana, provider["options"]["path"]) == DASHBOARD.parent

    def test_dashboard_panels_query_only_known_metrics(self, dashboard: dict[str, Any]) -> None:
        panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
        assert panels
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        allowed = APP_METRICS | TEMPORAL_SDK_METRICS | PROMETHEUS_SERIES
        for panel in panels:
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "prometheus", panel["title"]
            for target in panel["targets"]:
                names = promql_metric_names(target["expr"])
                assert names, f"{panel['title']}: no metric in {target['expr']}"
                unknown = {n for n in names if n not in allowed and not n.startswith("temporal_")}
                assert not unknown, f"{panel['title']}: {unknown}"

    def test_dashboard_shows_every_business_and_sdk_metric(self, dashboard: dict[str, Any]) -> None:
        queried = {
            name
            for panel in dashboard["panels"]
            for target in panel.get("targets", [])
            for name in promql_metric_names(target["expr"])
        }
        assert APP_METRICS | TEMPORAL_SDK_METRICS <= queried

    def test_dashboard_shows_firing_alerts_and_their_history(self, dashboard: dict[str, Any]) -> None:
        alert_panels = [
            panel
            for panel in dashboard["panels"]
            for target in panel.get("targets", [])
            if "ALERTS" in promql_metric_names(target["expr"])
        ]
        assert {panel["type"] for panel in alert_panels} >= {"table", "state-timeline"}
        assert all(panel["gridPos"]["y"] <= 1 for panel in alert_panels), "alerts come first"

    def test_sdk_counter_names_match_the_worker_runtime(self) -> None:
        # The dashboard's `temporal_*_total` names exist only while the worker exports counters with the suffix.
        assert "counters_total_suffix=True" in (ROOT / "worker.py").read_text()


def test_env_example_lists_every_setting() -> None:
    from ecomdream.config import Settings

    text = (ROOT / ".env.example").read_text()
    missing = [
        f"ECOMDREAM_{name.upper()}"
        for name in Settings.model_fields
        if f"ECOMDREAM_{name.upper()}=" not in text
    ]
    assert missing == []


def test_mtls_settings_load_the_client_certificate(tmp_path: Path) -> None:
    from temporalio.service import TLSConfig

    from ecomdream.clients.temporal import tls_from_settings
    from ecomdream.config import Settings

    (tmp_path / "client.pem").write_bytes(b"CERT")
    (tmp_path / "client.key").write_bytes(b"KEY")
    tls = tls_from_settings(
        Settings(
            temporal_tls_cert_path=tmp_path / "client.pem", temporal_tls_key_path=tmp_path / "client.key"
        )
    )
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key, tls.server_root_ca_cert) == (b"CERT", b"KEY", None)
    assert tls_from_settings(Settings()) is False
    with pytest.raises(ValueError, match="TLS_KEY_PATH"):
        tls_from_settings(Settings(temporal_tls_cert_path=tmp_path / "client.pem"))


LIVE = {
    "ECOMDREAM_STRIPE_API_KEY": "sk_live_51SecretKeyValue",
    "ECOMDREAM_REPLICATE_API_TOKEN": "r8_SecretTokenValue",
    "ECOMDREAM_STRIPE_WEBHOOK_SECRET": "whsec_RealEndpointSecret",
    "ECOMDREAM_PUBLIC_API_URL": "https://api.ecomdream.example",
    "ECOMDREAM_DATABASE_URL": "postgresql+asyncpg://app:DbPassword@db:5432/ecomdream",
    "ECOMDREAM_PAYLOAD_KEYS": new_key("live1"),
}


def refusal_of(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]) -> str:
    """Why Settings refuses to start with exactly env; no secret value may appear in it."""
    from pydantic import ValidationError

    from ecomdream.config import Settings

    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for name in LIVE:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    text = str(refused.value)
    for secret in (
        "sk_live_51SecretKeyValue",
        "rk_live_51SecretKeyValue",
        "r8_SecretTokenValue",
        "whsec_RealEndpointSecret",
        "DbPassword",
        LIVE["ECOMDREAM_PAYLOAD_KEYS"].partition(":")[2],
    ):
        assert secret not in text
    return text


@pytest.mark.parametrize(
    ("left_out", "message"),
    [
        (
            "ECOMDREAM_REPLICATE_API_TOKEN",
            "set both ECOMDREAM_STRIPE_API_KEY and ECOMDREAM_REPLICATE_API_TOKEN",
        ),
        ("ECOMDREAM_STRIPE_API_KEY", "set both ECOMDREAM_STRIPE_API_KEY and ECOMDREAM_REPLICATE_API_TOKEN"),
        ("ECOMDREAM_STRIPE_WEBHOOK_SECRET", "ECOMDREAM_STRIPE_WEBHOOK_SECRET to the signing secret"),
        ("ECOMDREAM_PUBLIC_API_URL", "cannot deliver webhooks to http://127.0.0.1:8000"),
        ("ECOMDREAM_PAYLOAD_KEYS", "set ECOMDREAM_PAYLOAD_KEYS or ECOMDREAM_PAYLOAD_KEYS_FILE"),
    ],
)
def test_half_configured_live_providers_refuse_to_start_without_printing_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, left_out: str, message: str
) -> None:
    env = {name: value for name, value in LIVE.items() if name != left_out}
    assert message in refusal_of(monkeypatch, tmp_path, env)


@pytest.mark.parametrize(
    ("sandboxed", "message"),
    [
        (
            {"ECOMDREAM_STRIPE_API_BASE": "http://127.0.0.1:12111"},
            "leave ECOMDREAM_STRIPE_API_BASE empty: ECOMDREAM_STRIPE_API_KEY is a live key",
        ),
        (
            {
                "ECOMDREAM_STRIPE_API_KEY": "rk_live_51SecretKeyValue",
                "ECOMDREAM_STRIPE_API_BASE": "https://stripe-sandbox.example",
            },
            "leave ECOMDREAM_STRIPE_API_BASE empty: ECOMDREAM_STRIPE_API_KEY is a live key",
        ),
        (
            {"ECOMDREAM_REPLICATE_API_BASE": "http://127.0.0.1:12112"},
            "leave ECOMDREAM_REPLICATE_API_BASE empty: ECOMDREAM_REPLICATE_API_TOKEN is set",
        ),
        (
            {"ECOMDREAM_REPLICATE_API_BASE": "http://api.replicate.com"},
            "leave ECOMDREAM_REPLICATE_API_BASE empty: ECOMDREAM_REPLICATE_API_TOKEN is set",
        ),
        (
            {"ECOMDREAM_REPLICATE_API_BASE": "https://api.replicate.com.example"},
            "leave ECOMDREAM_REPLICATE_API_BASE empty: ECOMDREAM_REPLICATE_API_TOKEN is set",
        ),
    ],
)
def test_live_credentials_with_a_sandbox_address_refuse_to_start_without_printing_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandboxed: dict[str, str], message: str
) -> None:
    assert message in refusal_of(monkeypatch, tmp_path, LIVE | sandboxed)


def test_fully_configured_live_providers_start_live(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ecomdream.config import ProviderMode, Settings

    monkeypatch.chdir(tmp_path)
    for name, value in LIVE.items():
        monkeypatch.setenv(name, value)
    assert Settings().provider_mode is ProviderMode.LIVE
    # Replicate's own API address is not a sandbox.
    monkeypatch.setenv("ECOMDREAM_REPLICATE_API_BASE", "https://api.replicate.com")
    assert Settings().provider_mode is ProviderMode.LIVE
    for name in (*LIVE, "ECOMDREAM_REPLICATE_API_BASE"):
        monkeypatch.delenv(name)
    assert Settings().provider_mode is ProviderMode.SANDBOX


def test_checkout_expiry_keeps_to_what_stripe_accepts() -> None:
    from pydantic import ValidationError

    from ecomdream.config import Settings

    # Stripe refuses expires_at under 30 minutes after creation; it is computed just before the call.
    for refused in (30, 24 * 60 + 1):
        with pytest.raises(ValidationError, match="checkout_expiry_minutes"):
            Settings(checkout_expiry_minutes=refused)
    assert Settings(checkout_expiry_minutes=31).checkout_expiry_minutes == 31
