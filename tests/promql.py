"""PromQL and alert rules as the tests read them: which metrics and label values an expression selects.

promtool is not on PyPI, so expressions are not evaluated here; the dashboard and rule checks compare what an
expression names with what the service exports instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"

# PromQL words that look like identifiers but are not metric names.
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev", "group",
    "rate", "irate", "increase", "delta", "deriv", "histogram_quantile", "clamp_min", "clamp_max", "abs",
    "round", "vector", "scalar", "time", "label_replace", "sort", "sort_desc", "absent",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}  # fmt: skip
# Series Prometheus makes itself rather than scraping them.
PROMETHEUS_SERIES = {"up", "ALERTS"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: strings, label matchers, ranges and grouping labels removed."""
    expr = _STRING.sub("", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b", "", expr)
    return {token for token in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr) if token not in PROMQL_WORDS}


def exact_selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric, {label: value}) for each `metric{...}` selector, with its `label="value"` matchers only."""
    return [
        (name, {label: value for label, op, value in _MATCHER.findall(matchers) if op == "="})
        for name, matchers in _SELECTOR.findall(expr)
    ]


def rule_files() -> list[Path]:
    """Every rule file Prometheus loads (deploy/prometheus/rules/*.yml)."""
    return sorted(RULES_DIR.glob("*.yml"))


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of every rule file."""
    return [
        rule
        for path in rule_files()
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
