"""The operator's one connection to the API server: :func:`connect` and :class:`Kube`.

Every call is synchronous (kopf runs sync handlers in threads) and speaks plain dicts with the API's
camelCase keys, so the pure layers never meet a client model. Every error is translated by
:mod:`gemma_operator.k8s.errors`.
"""

from __future__ import annotations

import builtins
import os
import tempfile
import threading
import uuid
from types import TracebackType
from typing import Any, Protocol, cast

from kubernetes import client, config
from kubernetes.dynamic import DynamicClient, LazyDiscoverer
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from gemma_operator.k8s.errors import NotFoundError, translating

_PAGE = 500  # list page size: large enough for few round trips, small enough for a bounded response


def connect(kubeconfig: str | None = None) -> Kube:
    """A client for the cluster: in-cluster credentials inside a pod (unless ``kubeconfig`` is given),
    else the kubeconfig file, or the default loading rules ($KUBECONFIG, ~/.kube/config)."""
    configuration = client.Configuration()
    # kubernetes.config and kubernetes.dynamic carry no annotations: the ignores below mark those calls.
    with translating():
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            # persist_config=False: never rewrite the user's kubeconfig when a token refreshes.
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration, persist_config=False
            )
    return Kube(client.ApiClient(configuration))


class _Resource(Protocol):
    """What we use of ``kubernetes.dynamic.Resource`` (the library is unannotated)."""

    kind: str
    namespaced: bool

    @property
    def group_version(self) -> str: ...

    def path(self, name: str | None = None, namespace: str | None = None) -> str: ...


class _Instance(Protocol):
    def to_dict(self) -> Any: ...


class _Discoverer(Protocol):
    def get(self, *, api_version: str, kind: str) -> _Resource: ...


class _Dynamic(Protocol):
    """What we use of ``kubernetes.dynamic.DynamicClient`` in v37, typed where the library is not."""

    @property
    def resources(self) -> _Discoverer: ...

    def get(
        self, resource: _Resource, name: str | None = None, namespace: str | None = None, **kwargs: Any
    ) -> _Instance: ...

    def create(self, resource: _Resource, body: dict[str, Any], **kwargs: Any) -> _Instance: ...

    def delete(self, resource: _Resource, name: str, namespace: str | None, **kwargs: Any) -> _Instance: ...

    def server_side_apply(
        self, resource: _Resource, body: dict[str, Any], *, field_manager: str, force_conflicts: bool
    ) -> _Instance: ...

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> _Instance: ...


class _InMemoryDiscoverer(LazyDiscoverer):
    """Discovery kept in this process: the library's default file in /tmp is shared between processes
    (another process's stale copy is read back) and fails on a read-only root filesystem."""

    def _write_cache(self) -> None:
        pass


class Kube:
    """One ``ApiClient`` and the ``DynamicClient`` on top of it; close it, or use it as a context."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self._dynamic_client: _Dynamic | None = None
        self._resources: dict[tuple[str, str], _Resource] = {}
        self._apis: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()  # kopf calls us from several threads; discovery is not thread-safe

    # -- reads --------------------------------------------------------------------------------------

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist (a kind the server does not serve still raises)."""
        resource = self._resource(api_version, kind)
        _require_namespace(resource, namespace)
        try:
            with translating():
                return _as_dict(self._dynamic.get(resource, name=name, namespace=namespace))
        except NotFoundError:
            return None

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Every matching object (all namespaces when ``namespace`` is None), following pagination."""
        resource = self._resource(api_version, kind)
        items: builtins.list[dict[str, Any]] = []
        token: str | None = None
        while True:
            with translating():
                page = _as_dict(
                    self._dynamic.get(
                        resource,
                        namespace=namespace,
                        label_selector=label_selector,
                        field_selector=field_selector,
                        limit=_PAGE,
                        _continue=token,
                    )
                )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def has_api(self, group_version: str, kind: str, *, refresh: bool = False) -> bool:
        """Whether the server serves ``kind`` in ``group_version`` (e.g. ``jobset.x-k8s.io/v1alpha2``,
        ``JobSet``). Cached; ``refresh=True`` asks again, after a CRD was installed or removed."""
        key = (group_version, kind)
        if refresh or key not in self._apis:
            path = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
            try:
                with translating():
                    listing = _as_dict(self._dynamic.request("get", path))
            except NotFoundError:
                listing = {}
            # Subresources are listed as "deployments/scale" with the parent's kind; skip them.
            self._apis[key] = any(
                r.get("kind") == kind and "/" not in r.get("name", "") for r in listing.get("resources") or []
            )
        return self._apis[key]

    def reset_discovery(self) -> None:
        """Forget what discovery learnt: resource lookups and :meth:`has_api` answers."""
        with self._lock:
            self._resources.clear()
            self._apis.clear()
            self._dynamic_client = None

    def server_version(self) -> str:
        """The API server's gitVersion, e.g. ``v1.33.1``."""
        with translating():
            return str(client.VersionApi(self.api).get_code().git_version)

    # -- writes -------------------------------------------------------------------------------------

    def apply(self, body: dict[str, Any], field_manager: str, force: bool = True) -> dict[str, Any]:
        """Server-side apply ``body`` (namespace from ``metadata.namespace``) as ``field_manager``.

        ``force=True`` takes over fields another manager set (the operator owns its children's spec);
        ``force=False`` raises :class:`ConflictError` naming those fields instead."""
        resource = self._resource(body["apiVersion"], body["kind"])
        with translating():
            return _as_dict(
                self._dynamic.server_side_apply(
                    resource, body=body, field_manager=field_manager, force_conflicts=force
                )
            )

    def create(self, body: dict[str, Any], field_manager: str | None = None) -> dict[str, Any]:
        """Create ``body``; :class:`ConflictError` (reason ``AlreadyExists``) when it exists."""
        resource = self._resource(body["apiVersion"], body["kind"])
        with translating():
            return _as_dict(self._dynamic.create(resource, body=body, field_manager=field_manager))

    def delete(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        """Delete the object; False when it was already gone. ``propagation``: Background, Foreground
        or Orphan, for the objects it owns."""
        resource = self._resource(api_version, kind)
        _require_namespace(resource, namespace)
        try:
            with translating():
                self._dynamic.delete(resource, name=name, namespace=namespace, propagation_policy=propagation)
        except NotFoundError:
            return False
        return True

    def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        *,
        body: dict[str, Any],
        field_manager: str,
    ) -> dict[str, Any]:
        """A JSON merge patch of the object itself: for the few fields that change on objects whose
        other fields are immutable once created (a Job's ``suspend``)."""
        resource = self._resource(api_version, kind)
        _require_namespace(resource, namespace)
        with translating():
            return _as_dict(
                self._dynamic.request(
                    "patch",
                    resource.path(name=name, namespace=namespace),
                    body=body,
                    content_type="application/merge-patch+json",
                    field_manager=field_manager,
                )
            )

    def patch_status(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str | None,
        *,
        status: dict[str, Any],
        field_manager: str,
    ) -> dict[str, Any]:
        """Merge ``status`` into the object's status subresource and return the object.

        A JSON merge patch (RFC 7386), not an apply: keys not mentioned stay as they are, so the handlers
        can each write their own part of the status without restating the rest; ``None`` deletes a key."""
        resource = self._resource(api_version, kind)
        _require_namespace(resource, namespace)
        path = resource.path(name=name, namespace=namespace) + "/status"
        with translating():
            return _as_dict(
                self._dynamic.request(
                    "patch",
                    path,
                    body={"status": status},
                    content_type="application/merge-patch+json",
                    field_manager=field_manager,
                )
            )

    # -- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Kube:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- discovery ----------------------------------------------------------------------------------

    @property
    def _dynamic(self) -> _Dynamic:
        # Built on first use: the DynamicClient runs discovery in its constructor.
        with self._lock:
            if self._dynamic_client is None:
                with translating():
                    dynamic = DynamicClient(  # type: ignore[no-untyped-call]
                        self.api, discoverer=_InMemoryDiscoverer, cache_file=_unused_cache_file()
                    )
                    self._dynamic_client = cast(_Dynamic, dynamic)
            return self._dynamic_client

    def _resource(self, api_version: str, kind: str) -> _Resource:
        key = (api_version, kind)
        resource = self._resources.get(key)
        if resource is None:
            dynamic = self._dynamic
            with self._lock:
                try:
                    with translating():
                        resource = dynamic.resources.get(api_version=api_version, kind=kind)
                except ResourceNotFoundError as exc:
                    raise NotFoundError(f"the API server does not serve {kind} in {api_version}") from exc
            self._resources[key] = resource
        return resource


def _unused_cache_file() -> str:
    # A path that never exists, so the discoverer starts empty instead of reading someone else's file.
    return os.path.join(tempfile.gettempdir(), f"gemma-operator-discovery-{uuid.uuid4().hex}.json")


def _as_dict(instance: _Instance) -> dict[str, Any]:
    """A ResourceInstance as the plain dict the API returned (camelCase keys)."""
    result = instance.to_dict()
    if not isinstance(result, dict):
        raise TypeError(f"expected an object from the API server, got {type(result).__name__}")
    return result


def _require_namespace(resource: _Resource, namespace: str | None) -> None:
    # Without this a namespaced name would be looked up at the cluster-scoped URL and reported missing.
    if resource.namespaced and not namespace:
        raise ValueError(f"{resource.kind} in {resource.group_version} is namespaced: give a namespace")
