"""Translating the client's exceptions into ours, without a server: the status code decides the class,
Retry-After (header or Status body) becomes `retry_after`, causes name the fields, and the original
exception stays chained."""

from __future__ import annotations

import json

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from gemma_operator.k8s import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    KubeError,
    NotFoundError,
    TransientError,
    translate,
)


def _api(
    status: int, body: dict[str, object] | str | None = None, headers: dict[str, str] | None = None
) -> ApiException:
    exc = ApiException(status=status, reason="test")
    exc.body = json.dumps(body) if isinstance(body, dict) else body
    exc.headers = headers or {}
    return exc


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (404, NotFoundError),
        (409, ConflictError),
        (422, InvalidError),
        (403, ForbiddenError),
        (429, TransientError),
        (503, TransientError),
    ],
)
def test_status_codes_map_to_our_classes(status: int, kind: type[KubeError]) -> None:
    err = translate(_api(status, {"kind": "Status", "message": "nope", "reason": "Whatever"}))
    assert type(err) is kind
    assert err.status == status


def test_retry_after_from_the_header_and_from_the_status_body() -> None:
    assert translate(_api(429, {"message": "slow down"}, {"Retry-After": "7"})).retry_after == 7  # type: ignore[attr-defined]
    body = {"message": "busy", "details": {"retryAfterSeconds": 3}}
    assert translate(_api(500, body)).retry_after == 3  # type: ignore[attr-defined]


def test_an_html_error_page_still_translates() -> None:
    err = translate(_api(503, "<html>Service Unavailable</html>"))
    assert isinstance(err, TransientError)


def test_invalid_names_the_fields() -> None:
    body = {
        "message": 'Deployment.apps "x" is invalid',
        "reason": "Invalid",
        "details": {
            "causes": [
                {
                    "field": "spec.replicas",
                    "message": "must be greater than or equal to 0",
                    "reason": "FieldValueInvalid",
                }
            ]
        },
    }
    err = translate(_api(422, body))
    assert isinstance(err, InvalidError)
    assert [c.field for c in err.causes] == ["spec.replicas"]
    assert "spec.replicas" in str(err)


def test_connection_errors_are_transient() -> None:
    err = translate(urllib3.exceptions.MaxRetryError(None, "https://127.0.0.1:1/api"))
    assert isinstance(err, TransientError)
