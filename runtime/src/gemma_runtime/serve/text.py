"""Incremental detokenization with stop strings: text is released as tokens arrive, but never a piece
that might still turn out to start a stop string, nor a half-decoded character."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

REPLACEMENT = "\ufffd"  # what a byte-fallback token decodes to before the rest of its character arrives


class TextStream:
    """``push(token)`` returns (new text, whether a stop string ended the text). The stop string itself
    is never part of the output, as in OpenAI's API."""

    def __init__(self, decode: Callable[[Iterable[int]], str], stops: Sequence[str] = ()) -> None:
        self._decode = decode
        self.stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self.ids: list[int] = []
        self.sent = 0  # characters of the decoded text already released
        self.text = ""

    def push(self, token: int) -> tuple[str, bool]:
        self.ids.append(token)
        self.text = self._decode(self.ids)
        start = max(0, self.sent - self._hold)
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            end = min(hits)
            self.text = self.text[:end]
            return self._release(end), True
        end = len(self.text) - self._hold
        while end > self.sent and self.text[end - 1 : end] == REPLACEMENT:
            end -= 1
        return self._release(end), False

    def flush(self) -> str:
        """Whatever was held back, at the end of the generation."""
        return self._release(len(self.text))

    def _release(self, end: int) -> str:
        if end <= self.sent:
            return ""
        piece, self.sent = self.text[self.sent : end], end
        return piece
