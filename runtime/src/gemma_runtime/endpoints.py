"""What the runtime shows the operator: a few read-only HTTP routes served from a background thread
(`gemma-runtime train`'s /progress, /metrics, /healthz and `gemma-runtime fetch`'s /fetch, without a web
framework) while it runs, and a one-line JSON termination message when it ends (the kubelet copies the
container's ``/dev/termination-log`` into the pod's status, where the operator reads it after the
process is gone)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MESSAGE_LIMIT = 4000  # the kubelet keeps at most 4096 bytes of a termination message

# A route answers (content type, body) for a GET of its path (the query string is ignored).
Route = Callable[[], tuple[str, bytes]]


class Endpoints:
    """Serves ``routes`` on ``host:port`` (0 picks a free port) until ``close``; other paths get 404."""

    def __init__(self, host: str, port: int, routes: Mapping[str, Route]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.partition("?")[0])
                if route is None:
                    self.send_error(404)
                    return
                content_type, body = route()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # polled often: no access log
                pass

        self._http = ThreadingHTTPServer((host, port), Handler)
        self._http.daemon_threads = True
        self.port = int(self._http.server_address[1])
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.1}, name="endpoints", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)


def write_message(path: Path | None, document: dict[str, Any]) -> None:
    """Write ``document`` where the kubelet picks it up (a long ``error`` is cut to fit); never raises:
    the message is a report, not the work."""
    if path is None:
        return
    text = json.dumps(document, sort_keys=True)
    if len(text) > MESSAGE_LIMIT:
        error = str(document.get("error", ""))
        text = json.dumps({**document, "error": error[: MESSAGE_LIMIT - len(text) + len(error) - 3] + "..."})
    try:
        path.write_text(text)
    except OSError as err:
        log.warning("cannot write the termination message to %s: %s", path, err)
