"""Errors from the Kubernetes API, in the operator's own words.

Nothing outside ``gemma_operator.k8s`` sees the client's ``ApiException`` or urllib3's errors: every call
in this package goes through :func:`translating`, which raises one of these, chained to the original
(``raise ... from exc``) so the traceback keeps the HTTP details.

    KubeError                anything the API server or the connection refused; ``status``, ``reason``
    ├── NotFoundError        404: the object, or its API, does not exist
    ├── ConflictError        409: already exists, a stale resourceVersion, or a server-side-apply field
    │                        conflict (``causes`` names the fields another manager owns)
    ├── InvalidError         422: the object failed validation; ``causes`` names the fields
    ├── ForbiddenError       403: RBAC denies the verb; retrying will not help, the Role must change
    └── TransientError       429, 5xx, connection errors: retry, after ``retry_after`` seconds when given

Other statuses (400, 401, 405, 410) are a plain ``KubeError``. One exception to the table: a server-side
apply of a field the schema does not declare is an ``InvalidError``, although API servers answer 500.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import json
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException


@dataclasses.dataclass(frozen=True)
class Cause:
    """One entry of a Status's ``details.causes``: which field, and what is wrong with it."""

    field: str
    message: str
    reason: str = ""


class KubeError(Exception):
    """Base of every error this package raises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        causes: tuple[Cause, ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason  # the Status's machine-readable reason: AlreadyExists, Conflict, Invalid, ...
        self.causes = causes

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(cause.field for cause in self.causes if cause.field)

    def __str__(self) -> str:
        return self.message


class NotFoundError(KubeError):
    """404: the object does not exist, or the server does not serve its apiVersion/kind."""


class ConflictError(KubeError):
    """409: the object already exists, was changed since it was read, or another field manager owns a
    field that a server-side apply without ``force`` tried to set."""


class InvalidError(KubeError):
    """422: the API server refused the object; ``causes`` names each field and what is wrong with it."""

    def __str__(self) -> str:
        # The server's message usually names the fields already; add any it left out.
        missing = [field for field in self.fields if field not in self.message]
        return f"{self.message} (fields: {', '.join(missing)})" if missing else self.message


class ForbiddenError(KubeError):
    """403: the operator's ServiceAccount lacks the RBAC rule for this verb and resource."""


class TransientError(KubeError):
    """429, 5xx or a broken connection: try again later."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after  # seconds the server asked us to wait; None when it gave no hint


_TYPED_PATCH = re.compile(r"^failed to create typed patch object \(.*?\): (\S+): (.+)$")

_BY_STATUS: dict[int, type[KubeError]] = {
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: InvalidError,
}


def translate(exc: BaseException) -> KubeError:
    """The project's error for a client exception, with ``exc`` as its cause; raise it ``from exc``."""
    error = _translate(exc)
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def translating() -> Iterator[None]:
    """Turn the client's exceptions raised inside the block into :class:`KubeError`."""
    try:
        yield
    except (ApiException, urllib3.exceptions.HTTPError, ConfigException) as exc:
        raise translate(exc) from exc


def _translate(exc: BaseException) -> KubeError:
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return TransientError(f"cannot reach the API server: {exc}")
    if isinstance(exc, ConfigException):
        return KubeError(f"cannot load the Kubernetes client configuration: {exc}")
    if not isinstance(exc, ApiException):
        return KubeError(str(exc))
    status = int(exc.status or 0)
    body = _status_body(exc.body)
    details = body.get("details") or {}
    message = str(body.get("message") or exc.reason or f"HTTP {status}")
    reason = str(body.get("reason") or "")
    causes = tuple(
        Cause(
            field=str(c.get("field", "")), message=str(c.get("message", "")), reason=str(c.get("reason", ""))
        )
        for c in details.get("causes") or ()
        if isinstance(c, Mapping)
    )
    typed_patch = _TYPED_PATCH.search(message)
    if typed_patch and status in {400, 500}:
        # A server-side apply naming a field the schema lacks: our bug, not the server's, so retrying is
        # pointless. API servers answer 500 (kubernetes/kubernetes#122480); a fix proposes 400.
        field, problem = typed_patch.group(1).lstrip("."), typed_patch.group(2)
        cause = Cause(field=field, message=problem, reason="FieldValueInvalid")
        return InvalidError(message, status=status, reason=reason or "Invalid", causes=(cause,))
    # Status 0 is the client's own: a TLS failure or an unreadable response, both worth a retry.
    if status in {0, 429} or status >= 500:
        retry_after = _retry_after(exc.headers) or _seconds(details.get("retryAfterSeconds"))
        return TransientError(message, status=status, reason=reason, causes=causes, retry_after=retry_after)
    error_type = _BY_STATUS.get(status, KubeError)
    return error_type(message, status=status, reason=reason, causes=causes)


def _status_body(body: object) -> dict[str, Any]:
    """The API server's Status object, or an empty dict when the body is not one (a proxy's HTML page)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if not isinstance(body, str) or not body:
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _retry_after(headers: object) -> float | None:
    """Retry-After in seconds: either delta-seconds or an HTTP date (RFC 9110 allows both)."""
    if not isinstance(headers, Mapping):
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _seconds(value: object) -> float | None:
    try:
        seconds = float(str(value))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
