"""The polite client against a real loopback server with scripted answers."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from surd.http.client import PoliteClient
from surd.http.errors import FetchError
from surd.settings import CrawlSettings
from tests.pace import assert_paced


class Script:
    def __init__(self) -> None:
        self.answers: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
        self.seen: list[tuple[float, str, str]] = []


@pytest.fixture
def server():
    script = Script()

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            script.seen.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
            queue = script.answers.get(self.path.split("?")[0]) or [(404, {}, b"")]
            status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            return None

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", script
    srv.shutdown()


def cfg(**kw: object) -> CrawlSettings:
    base = dict(requests_per_second=50.0, backoff_base_s=0.01, max_retries=3, timeout_s=2.0)
    return CrawlSettings(**{**base, **kw})


def test_retry_after_is_honoured_and_ua_is_honest(server) -> None:
    url, script = server
    script.answers["/robots.txt"] = [(200, {}, b"User-agent: *\nAllow: /\n")]
    script.answers["/a"] = [(429, {"Retry-After": "1"}, b"{}"), (200, {}, b'{"ok": 1}')]
    with PoliteClient(cfg()) as client:
        t0 = time.monotonic()
        resp = client.get(url + "/a")
    assert resp.json() == {"ok": 1} and resp.attempts == 2
    assert time.monotonic() - t0 >= 1.0
    assert all("SURD-builder" in ua for _, _, ua in script.seen)


def test_block_page_is_its_own_failure(server) -> None:
    url, script = server
    script.answers["/robots.txt"] = [(404, {}, b"")]
    script.answers["/j"] = [(200, {}, b"<!DOCTYPE html><html><title>Just a moment...</title></html>")]
    with PoliteClient(cfg(max_retries=1)) as client, pytest.raises(FetchError) as err:
        client.get(url + "/j")
    assert err.value.reason == "blocked"


def test_robots_disallow_is_obeyed_unless_overridden(server) -> None:
    url, script = server
    script.answers["/robots.txt"] = [(200, {}, b"User-agent: *\nDisallow: /api/\n")]
    script.answers["/api/x"] = [(200, {}, b"{}")]
    with PoliteClient(cfg()) as client, pytest.raises(FetchError) as err:
        client.get(url + "/api/x")
    assert err.value.reason == "robots_disallowed"
    with PoliteClient(cfg(), obey_robots=False) as client:
        assert client.get(url + "/api/x").status == 200


def test_rate_limit_holds_per_host(server) -> None:
    url, script = server
    script.answers["/robots.txt"] = [(404, {}, b"")]
    script.answers["/r"] = [(200, {}, b"{}")]
    with PoliteClient(cfg(requests_per_second=10.0, max_concurrency=4)) as client:
        threads = [threading.Thread(target=client.get, args=(url + "/r",)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    times = sorted(t for t, path, _ in script.seen if path == "/r")
    assert len(times) == 8
    assert_paced(times, 1 / 10.0)


def test_size_cap_and_http_errors(server) -> None:
    url, script = server
    script.answers["/robots.txt"] = [(404, {}, b"")]
    script.answers["/big"] = [(200, {}, b"x" * 5000)]
    script.answers["/gone"] = [(410, {}, b"")]
    with PoliteClient(cfg(max_response_bytes=1000)) as client:
        with pytest.raises(FetchError, match="too_large"):
            client.get(url + "/big", expect="bytes")
        with pytest.raises(FetchError, match="http_410"):
            client.get(url + "/gone", expect="bytes")
