"""HTTP for the sources: one request helper that sends the token only where it belongs and turns every
failure into a SourceError naming the URI (the subclass says what a refusal means)."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import BinaryIO

from gemma_runtime import __version__
from gemma_runtime.sources.mirror import SourceError

TIMEOUT_S = 60.0


class HttpSource:
    """Requests to ``endpoint`` for the source named ``label``, with ``token`` as a bearer token."""

    opener = urllib.request.build_opener()
    network: str = "the source"  # what to check when the endpoint cannot be reached

    def __init__(self, label: str, endpoint: str, token: str | None) -> None:
        self.label, self.endpoint, self._token = label, endpoint, token

    def __str__(self) -> str:
        return self.label

    def _open(self, url: str, what: str) -> BinaryIO:
        request = urllib.request.Request(url, headers={"User-Agent": f"gemma-runtime/{__version__}"})
        if self._token:
            # Unredirected: the opener decides whether a redirect's target may see it.
            request.add_unredirected_header("Authorization", f"Bearer {self._token}")
        try:
            response: BinaryIO = self.opener.open(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as err:
            with err:
                raise self._refused(err, what) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            raise self._unreachable(err) from err
        return response

    def read(self, read: Callable[..., bytes], *args: int) -> bytes:
        try:
            return read(*args)
        except (OSError, http.client.HTTPException) as err:
            raise self._unreachable(err) from err

    def _unreachable(self, err: Exception) -> SourceError:
        reason = getattr(err, "reason", None) or err
        return SourceError(
            f"{self.label}: cannot reach {self.endpoint}: {reason}: check the pod's network access to "
            f"{self.network}; files already downloaded are kept for the next run"
        )

    def _refused(self, err: urllib.error.HTTPError, what: str) -> SourceError:
        return SourceError(f"{self.label}: {what}: HTTP {err.code} {err.reason}")
