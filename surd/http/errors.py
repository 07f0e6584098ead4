"""How a fetch fails: one exception whose `reason` is stored with the item or page. Apart from the
rules and the client, so a source connector can catch it without importing either."""

from __future__ import annotations


class FetchError(Exception):
    def __init__(self, reason: str, url: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {url} {detail}".strip())
        self.reason = reason
        self.url = url
