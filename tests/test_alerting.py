"""Alerting, checked as files: Prometheus' rule files, the Alertmanager service and the configuration its entrypoint
renders from the environment, and the operators' guide to every alert.

Whether the metrics the rules select exist is checked against the running service in tests/api/test_alert_rules.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from temporalio import workflow

from ecomdream.contracts import REPLICATE_OTHER_TASK_QUEUE, REPLICATE_PREDICT_TASK_QUEUE
from tests.promql import PROMETHEUS_SERIES, alert_rules, exact_selectors, promql_metric_names, rule_files
from tests.test_deployment import (
    APP_METRICS,
    COMPOSE_FILE,
    DEPLOY,
    DURATION,
    ROOT,
    TEMPORAL_SDK_METRICS,
    entrypoint_script,
    environment,
    load_yaml,
    mounts,
    repo_path_of,
)
from workflows import WORKFLOWS
from workflows.metrics import WATCHED

GROUP_KEYS = {"name", "interval", "limit", "query_offset", "labels", "rules"}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
SEVERITIES = {"critical", "warning", "info"}
ALERT_SECRETS = {"TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID", "ALERT_WEBHOOK_URL"}
TOKEN = "7000000001:AAFakeBotTokenForTheRenderingTest"
WEBHOOK = "https://hooks.example.test/alerts/s3cr3t-path"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    """docker-compose.yml's services, before interpolation."""
    found: dict[str, dict[str, Any]] = load_yaml(COMPOSE_FILE)["services"]
    return found


def render(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run Alertmanager's entrypoint with env; the command it runs at the end leaves `ran` in tmp_path."""
    script = DEPLOY / "alertmanager" / "start.sh"
    environ = {"PATH": os.environ["PATH"], "ALERTMANAGER_CONFIG_DIR": str(tmp_path / "config"), **env}
    return subprocess.run(
        ["sh", str(script), "touch", str(tmp_path / "ran")],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def rendered(tmp_path: Path, **env: str) -> dict[str, Any]:
    """The configuration the entrypoint renders for env (which must be accepted)."""
    done = render(tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ran").exists()
    config: dict[str, Any] = yaml.safe_load((tmp_path / "config" / "alertmanager.yml").read_text())
    return config


def matches(matcher: str, labels: dict[str, str]) -> bool:
    """Whether one Alertmanager matcher (`name="value"`, `!=`, `=~`, `!~`) holds for labels."""
    found = re.fullmatch(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"(.*)"\s*', matcher)
    assert found, f"not a matcher: {matcher!r}"
    name, op, value = found.groups()
    actual = labels.get(name, "")
    if op in {"=~", "!~"}:
        return bool(re.fullmatch(value, actual)) == (op == "=~")
    return (actual == value) == (op == "=")


def receivers_for(route: dict[str, Any], labels: dict[str, str], parent: str | None = None) -> list[str]:
    """The receivers Alertmanager's routing tree picks for an alert with labels (as `amtool config routes test`)."""
    receiver = route.get("receiver", parent)
    picked: list[str] = []
    for child in route.get("routes", []):
        if all(matches(m, labels) for m in child.get("matchers", [])):
            picked += receivers_for(child, labels, receiver)
            if not child.get("continue", False):
                break
    return picked or [str(receiver)]


def alert_labels(rule: dict[str, Any]) -> dict[str, str]:
    """The labels every alert of a rule carries (its own; the expression adds others)."""
    return {"alertname": rule["alert"], **rule.get("labels", {})}


def brackets_balance(text: str) -> bool:
    """Whether (), [] and {} nest properly (strings left out)."""
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', "", text):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


# --- the helpers themselves ----------------------------------------------------------------------------------


class TestHelpers:
    def test_exact_selectors_keep_only_equality_matchers(self) -> None:
        expr = 'sum(rate(x_total{a="1", b=~"2|3", c!="4"}[5m])) / on (a) y{d = "q\\"uote"} and up'
        assert exact_selectors(expr) == [("x_total", {"a": "1"}), ("y", {"d": 'q\\"uote'})]

    def test_routing_follows_continue_and_falls_back_to_the_parent(self) -> None:
        route = {
            "receiver": "root",
            "routes": [
                {"matchers": ['team=~"a|b"'], "receiver": "ab", "continue": True},
                {"matchers": ['team="a"', 'severity!="info"'], "receiver": "a"},
                {"matchers": ['team="c"']},
            ],
        }
        assert receivers_for(route, {"team": "a", "severity": "critical"}) == ["ab", "a"]
        assert receivers_for(route, {"team": "a", "severity": "info"}) == ["ab"]
        assert receivers_for(route, {"team": "c"}) == ["root"]
        assert receivers_for(route, {"team": "z"}) == ["root"]

    def test_bracket_check_catches_a_missing_parenthesis(self) -> None:
        assert brackets_balance('sum(rate(x{a="(("}[5m]))')
        assert not brackets_balance("sum(rate(x[5m])")


# --- the rule files ------------------------------------------------------------------------------------------


class TestRuleFiles:
    def test_each_file_is_prometheus_rule_yaml(self) -> None:
        assert rule_files()
        for path in rule_files():
            data = yaml.safe_load(path.read_text())
            assert set(data) == {"groups"}, path
            for group in data["groups"]:
                assert set(group) <= GROUP_KEYS, f"{path}: {group.get('name')}"
                assert group["name"], path
                assert group["rules"], path
                for rule in group["rules"]:
                    assert set(rule) <= RULE_KEYS, f"{path}: {rule}"
                    assert "alert" in rule, f"{path}: only alerting rules here"
                    assert isinstance(rule["expr"], str), rule["alert"]
                    assert rule["expr"].strip(), rule["alert"]
                    assert brackets_balance(rule["expr"]), rule["alert"]
                    for key in ("for", "keep_firing_for"):
                        if key in rule:
                            assert DURATION.match(rule[key]), f"{rule['alert']}.{key}"

    def test_alerts_are_named_once_and_carry_severity_summary_and_description(self) -> None:
        rules = alert_rules()
        names = Counter(rule["alert"] for rule in rules)
        assert not [name for name, count in names.items() if count > 1]
        for rule in rules:
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
            assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
            annotations = rule["annotations"]
            assert set(annotations) == {"summary", "description"}, rule["alert"]
            for text in annotations.values():
                assert text.strip()
                assert text.count("{{") == text.count("}}"), rule["alert"]

    def test_a_level_alert_waits_before_it_fires(self) -> None:
        # Without `for`, a gauge or ratio fires on one bad scrape. Only counted events may fire at once.
        for rule in alert_rules():
            if "for" not in rule:
                assert "increase(" in rule["expr"], f"{rule['alert']} fires on every blip"

    def test_expressions_name_only_metrics_the_service_exports(self) -> None:
        known = APP_METRICS | TEMPORAL_SDK_METRICS | PROMETHEUS_SERIES
        for rule in alert_rules():
            names = promql_metric_names(rule["expr"])
            assert names, rule["alert"]
            assert names <= known, f"{rule['alert']}: {names - known}"

    def test_scrape_jobs_and_task_queues_in_selectors_exist(self) -> None:
        prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
        jobs = {job["job_name"] for job in prometheus["scrape_configs"]}
        named_queues: set[str] = set()
        for rule in alert_rules():
            for name, labels in exact_selectors(rule["expr"]):
                if name == "up":
                    assert labels.get("job") in jobs, rule["alert"]
                if "task_queue" in labels:
                    named_queues.add(labels["task_queue"])
            named_queues.update(re.findall(r'task_queue[!=]~"([^"]+)"', rule["expr"]))
        for pattern in named_queues:
            assert re.fullmatch(pattern, REPLICATE_PREDICT_TASK_QUEUE), pattern
            assert re.fullmatch(pattern, REPLICATE_OTHER_TASK_QUEUE), pattern
        assert named_queues, "the rules tell the Replicate queues from the others"

    def test_every_alert_has_its_entry_in_the_operations_guide(self) -> None:
        guide = (ROOT / "OPERATIONS.md").read_text()
        section = guide.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
        documented = set(re.findall(r"^\| `([A-Za-z0-9]+)` \|", section, flags=re.MULTILINE))
        assert documented == {rule["alert"] for rule in alert_rules()}


def test_counters_created_at_zero_belong_to_workflow_types_the_worker_runs() -> None:
    # The worker creates them with the attributes a workflow's meter adds; a misspelt type would be a second series.
    names = {workflow._Definition.must_from_class(cls).name for cls in WORKFLOWS}
    assert {workflow_type for _, workflow_type, _ in WATCHED} <= names


class TestPrometheusLoadsTheRules:
    def test_rule_files_are_mounted_and_alerts_go_to_alertmanager(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
        (pattern,) = prometheus["rule_files"]
        folder = repo_path_of(services["prometheus"], str(PurePosixPath(pattern).parent))
        assert folder is not None
        assert sorted(folder.glob(PurePosixPath(pattern).name)) == rule_files()
        ((target,),) = [
            static["targets"]
            for am in prometheus["alerting"]["alertmanagers"]
            for static in am["static_configs"]
        ]
        host, port = target.split(":")
        assert host in services
        assert f"127.0.0.1:{port}:{port}" in services[host]["ports"]


# --- Alertmanager --------------------------------------------------------------------------------------------


class TestAlertmanagerService:
    def test_entrypoint_renders_the_config_alertmanager_is_started_with(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        alertmanager = services["alertmanager"]
        script = entrypoint_script(alertmanager)
        assert script == DEPLOY / "alertmanager" / "start.sh"
        command = alertmanager["command"]
        assert command[0] == "/bin/alertmanager"
        flags = dict(arg.split("=", 1) for arg in command[1:])
        default_dir = re.search(r'ALERTMANAGER_CONFIG_DIR:-([^}"]+)', script.read_text())
        assert default_dir is not None
        assert flags["--config.file"] == f"{default_dir.group(1)}/alertmanager.yml"
        (storage,) = [source for source, target in mounts(alertmanager) if target == flags["--storage.path"]]
        assert not storage.startswith("."), "silences and the notification log persist in a named volume"
        template = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
        (templates,) = template["templates"]
        assert repo_path_of(alertmanager, templates) == DEPLOY / "alertmanager" / "ecomdream.tmpl"
        assert '{{ define "ecomdream.message" -}}' in (DEPLOY / "alertmanager" / "ecomdream.tmpl").read_text()

    def test_only_the_alerting_variables_are_passed_and_none_has_a_default(
        self, services: dict[str, dict[str, Any]]
    ) -> None:
        alertmanager = services["alertmanager"]
        assert "env_file" not in alertmanager, "the app's .env secrets stay out of this container"
        raw = alertmanager["environment"]
        assert set(raw) == ALERT_SECRETS
        for name, value in raw.items():
            assert value == f"${{{name}:-}}", name
        assert environment(alertmanager) == dict.fromkeys(ALERT_SECRETS, "")


class TestRenderedConfig:
    def test_every_alert_reaches_telegram_and_the_webhook(self, tmp_path: Path) -> None:
        config = rendered(
            tmp_path, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_CHAT_ID="-1001234567890", ALERT_WEBHOOK_URL=WEBHOOK
        )
        receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
        for rule in alert_rules():
            (name,) = receivers_for(config["route"], alert_labels(rule))
            receiver = receivers[name]
            (telegram,) = receiver["telegram_configs"]
            (webhook,) = receiver["webhook_configs"]
            assert telegram["chat_id"] == -1001234567890
            assert Path(telegram["bot_token_file"]).read_text() == TOKEN
            assert Path(webhook["url_file"]).read_text() == WEBHOOK
            expected = "sales-digest" if rule["labels"]["severity"] == "info" else "operators"
            assert name == expected, rule["alert"]

    def test_the_digest_repeats_daily_and_quietly(self, tmp_path: Path) -> None:
        config = rendered(tmp_path, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_CHAT_ID="42")
        (digest_route,) = [r for r in config["route"]["routes"] if r["receiver"] == "sales-digest"]
        assert digest_route["repeat_interval"] == "24h"
        (digest,) = [r for r in config["receivers"] if r["name"] == "sales-digest"]
        (telegram,) = digest["telegram_configs"]
        assert telegram["disable_notifications"] is True
        assert telegram["send_resolved"] is False

    def test_secrets_stay_out_of_the_rendered_config(self, tmp_path: Path) -> None:
        rendered(tmp_path, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_CHAT_ID="42", ALERT_WEBHOOK_URL=WEBHOOK)
        text = (tmp_path / "config" / "alertmanager.yml").read_text()
        assert TOKEN not in text
        assert WEBHOOK not in text
        assert "${" not in text
        for path in (tmp_path / "config").iterdir():
            assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"

    def test_a_webhook_alone_is_enough(self, tmp_path: Path) -> None:
        config = rendered(tmp_path, ALERT_WEBHOOK_URL=WEBHOOK)
        for receiver in config["receivers"]:
            assert "telegram_configs" not in receiver
            assert receiver["webhook_configs"]
        assert not (tmp_path / "config" / "telegram_bot_token").exists()

    def test_with_no_receiver_it_starts_and_says_alerts_go_nowhere(self, tmp_path: Path) -> None:
        done = render(tmp_path)
        assert done.returncode == 0
        assert "no receiver configured" in done.stderr
        config = yaml.safe_load((tmp_path / "config" / "alertmanager.yml").read_text())
        assert [set(receiver) for receiver in config["receivers"]] == [{"name"}, {"name"}]

    @pytest.mark.parametrize(
        ("env", "named"),
        [
            ({"TELEGRAM_BOT_TOKEN": TOKEN}, "TELEGRAM_CHAT_ID is not"),
            ({"TELEGRAM_CHAT_ID": "42", "ALERT_WEBHOOK_URL": WEBHOOK}, "TELEGRAM_BOT_TOKEN is not"),
            ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "@operators"}, "numeric id"),
            ({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "-"}, "numeric id"),
        ],
    )
    def test_half_a_telegram_setup_stops_alertmanager_naming_what_is_missing(
        self, tmp_path: Path, env: dict[str, str], named: str
    ) -> None:
        done = render(tmp_path, **env)
        assert done.returncode != 0
        assert named in done.stderr
        assert TOKEN not in done.stderr
        assert not (tmp_path / "ran").exists()
        assert not (tmp_path / "config" / "alertmanager.yml").exists()
