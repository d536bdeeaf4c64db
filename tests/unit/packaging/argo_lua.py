"""Run an Argo CD health check (``manifests/argocd/<group>/<Kind>/health.lua``) the way Argo CD does:
Lua 5.1 (Argo CD embeds gopher-lua, a 5.1 dialect), the resource as the global ``obj``, the returned
table's ``status`` and ``message``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lupa import lua51  # type: ignore[import-untyped]

from tests.api_cases import REPO

ARGOCD = REPO / "manifests" / "argocd"
GROUP = "gemma.ai"


def script(kind: str) -> Path:
    return ARGOCD / GROUP / kind / "health.lua"


def _without_nulls(value: Any) -> Any:
    # The API server never returns null fields, and a Lua table cannot hold nil.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) that Argo CD would show for ``obj``."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(_without_nulls(obj), recursive=True)
    result = runtime.execute(script(obj["kind"]).read_text())
    return str(result["status"]), str(result["message"] or "")
