"""Operator settings: defaults with a documented reason each, typed values from GEMMA_OPERATOR_*,
and the kubeconfig from $KUBECONFIG."""

from __future__ import annotations

import dataclasses
import inspect

from gemma_operator.config import Settings


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.namespaces == ()
    assert settings.field_manager == "gemma-operator"


def test_typed_values_from_the_environment() -> None:
    env = {
        "GEMMA_OPERATOR_NAMESPACES": "team-a, team-b,",
        "GEMMA_OPERATOR_HEALTH_PORT": "0",
        "GEMMA_OPERATOR_RESYNC_SECONDS": "12.5",
        "GEMMA_OPERATOR_RUNTIME_IMAGE": "example.com/runtime:1",
        "KUBECONFIG": "/tmp/kubeconfig",
    }
    settings = Settings.from_env(env)
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.health_port == 0
    assert settings.resync_seconds == 12.5
    assert settings.runtime_image == "example.com/runtime:1"
    assert settings.kubeconfig == "/tmp/kubeconfig"


def test_every_setting_is_documented() -> None:
    source = inspect.getsource(Settings)
    for field in dataclasses.fields(Settings):
        after = source.split(f"    {field.name}:", 1)[1].splitlines()[1].strip()
        assert after.startswith('"""'), f"{field.name} has no docstring"
