"""The chart's optional PrometheusRule: every metric and label an alert uses is one the
daemon really exports (from its registry, as the dashboard test does)."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from kvip_bgp.configfile import reference
from tests.test_chart import CHART, MINIMAL, NAMESPACE, _need_module, render, render_raw

# Labels Prometheus adds to every target (the ServiceMonitor's relabeling adds node).
TARGET_LABELS = {"namespace", "pod", "node", "instance", "job", "service", "endpoint"}
ENABLED = {**copy.deepcopy(MINIMAL), "prometheusRule": {"enabled": True}}


@pytest.fixture(scope="module")
def helm() -> Any:
    return _need_module("helm_python", "helm-python-sdk")


def rules(helm: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    found = [o for o in render(helm, values) if o["kind"] == "PrometheusRule"]
    assert len(found) <= 1
    return (
        [rule for group in found[0]["spec"]["groups"] for rule in group["rules"]] if found else []
    )


def test_off_by_default(helm: Any) -> None:
    assert rules(helm, MINIMAL) == []


def test_the_alerts(helm: Any) -> None:
    alerts = rules(helm, ENABLED)
    assert [a["alert"] for a in alerts] == [
        "KvipBgpSpeakerDown",
        "KvipBgpNotReady",
        "KvipBgpSessionDown",
        "KvipBgpBfdDown",
        "KvipBgpInvalidAnnotations",
        "KvipBgpAllocationPending",
        "KvipBgpConfigReloadFailed",
        "KvipBgpExabgpRestarting",
        "KvipBgpCommandErrors",
    ]
    for alert in alerts:
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}, alert
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    speaker_down = alerts[0]["expr"]
    assert speaker_down == f'up{{job="kvip-kvip-bgp-metrics", namespace="{NAMESPACE}"}} == 0'


def test_every_metric_and_label_an_alert_uses_exists(helm: Any) -> None:
    exported = {name: m for m in reference.metrics() for name in m.exported}
    for alert in rules(helm, ENABLED):
        used = set(re.findall(r"\bkvip_bgp_[a-z0-9_]+", alert["expr"]))
        assert used <= set(exported), (alert["alert"], used - set(exported))
        known = TARGET_LABELS.union(*(exported[name].labels for name in used))
        text = alert["expr"] + " ".join(alert["annotations"].values())
        labels = set(re.findall(r"\$labels\.(\w+)", text))
        for clause in re.findall(r"\bby \(([^)]*)\)", alert["expr"]):
            labels |= {label.strip() for label in clause.split(",")}
        assert labels <= known, (alert["alert"], labels - known)


def test_a_metric_that_does_not_exist_would_be_caught() -> None:
    """The check above is not vacuous: a renamed metric is not in the registry."""
    exported = {name for m in reference.metrics() for name in m.exported}
    assert "kvip_bgp_session_up" in exported
    assert "kvip_bgp_sessions_up" not in exported
    assert "kvip_bgp_exabgp_restarts" not in exported  # a counter is scraped as _total


def test_the_rule_passes_lint_and_the_schema(helm: Any) -> None:
    report = helm.lint(str(CHART), copy.deepcopy(ENABLED), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    bad = {**copy.deepcopy(MINIMAL), "prometheusRule": {"enabled": True, "for": "5 minutes"}}
    with pytest.raises(helm.HelmValuesError, match="prometheusRule/for"):
        render_raw(helm, bad)
    labelled = {
        **copy.deepcopy(MINIMAL),
        "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
    }
    rule = yaml.safe_load(render_raw(helm, labelled)["kvip-bgp/templates/prometheusrule.yaml"])
    assert rule["metadata"]["labels"]["release"] == "prom"
