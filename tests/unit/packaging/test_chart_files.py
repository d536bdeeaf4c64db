"""The chart's files, without helm: CRDs identical to crds/, the README's values table generated from
values.yaml with every key described, Chart.yaml's versions equal to the operator's, and every operator
setting exposed as a value whose default is the operator's own default. (Rendering and installing the
chart are tested in tests/cluster/chart, which have helm and an API server.)"""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

import gemma_operator
from gemma_operator.config import Settings
from tests.unit.packaging.generate import CHART, UndocumentedKeyError, chart_crds, chart_readme, values_rows

VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)
# Settings field -> path in values.yaml (kubeconfig is not a value: in a pod the token is mounted).
SETTING_VALUES = {
    "namespaces": "operator.watchNamespaces",
    "runtime_image": "runtime.image",
    "image_pull_policy": "runtime.image.pullPolicy",
    "field_manager": "operator.fieldManager",
    "log_level": "operator.logLevel",
    "bind_address": None,  # fixed to 0.0.0.0 in the chart: the kubelet probes the pod IP
    "health_port": "operator.healthPort",
    "metrics_port": "operator.metricsPort",
    "resync_seconds": "operator.resyncSeconds",
    "progress_seconds": "operator.progressSeconds",
    "debounce_seconds": "operator.debounceSeconds",
    "stats_timeout_seconds": "operator.statsTimeoutSeconds",
    "runtime_port": "runtime.port",
    "cpu_request": "runtime.cpuRequest",
    "memory_request": "runtime.memoryRequest",
    "scrape_monitors": "operator.scrapeMonitors",
    "autoscaling_metric_name": "operator.autoscalingMetricName",
}


def _value(path: str) -> object:
    value: object = VALUES
    for part in path.split("."):
        assert isinstance(value, dict)
        value = value[part]
    return value


def test_the_chart_crds_are_copies_of_crds() -> None:
    carried = {p.name: p.read_text() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert carried == chart_crds(), "charts/gemma-operator/crds/ is stale: run make manifests"


def test_the_readme_values_table_is_generated_from_values_yaml() -> None:
    readme = (CHART / "README.md").read_text()
    assert readme == chart_readme(readme, VALUES_TEXT), "the chart README is stale: run make manifests"


def test_every_key_is_described() -> None:
    rows = {row.key: row for row in values_rows(VALUES_TEXT)}
    assert all(row.description for row in rows.values())
    assert {"image.repository", "operator.watchNamespaces", "rbac.create", "resources"} <= set(rows)


def test_a_key_without_a_description_is_refused() -> None:
    with pytest.raises(UndocumentedKeyError, match=r"image\.tag"):
        values_rows("image:\n  # -- The repository.\n  repository: x\n  tag: y\n")


def test_chart_versions_follow_the_operator() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == gemma_operator.__version__


def test_every_setting_is_in_the_config_map_template() -> None:
    template = (CHART / "templates" / "configmap.yaml").read_text()
    keys = set(re.findall(r"^  (GEMMA_OPERATOR_[A-Z_]+):", template, re.M))
    fields = {
        f"GEMMA_OPERATOR_{f.name.upper()}" for f in dataclasses.fields(Settings) if f.name != "kubeconfig"
    }
    assert keys == fields
    assert set(SETTING_VALUES) == {f.name for f in dataclasses.fields(Settings)} - {"kubeconfig"}


@pytest.mark.parametrize(("field", "path"), [(f, p) for f, p in SETTING_VALUES.items() if p])
def test_value_defaults_are_the_operators_defaults(field: str, path: str) -> None:
    default = getattr(Settings(), field)
    value = _value(path)
    if field == "runtime_image":
        assert isinstance(value, dict)
        chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
        assert f"{value['repository']}:{value['tag'] or chart['appVersion']}" == default
    elif field == "namespaces":
        assert tuple(value) == default
    elif field == "scrape_monitors":
        assert isinstance(value, list)
        assert ",".join(value) == default
    else:
        assert type(default)(value) == default
