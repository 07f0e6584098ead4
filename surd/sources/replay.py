"""The replay site: the three sources' recorded responses served over real HTTP on loopback.

What it serves, and what it changes:
- `/civitai/api/v1/images`: the real image objects recorded from Civitai (the 2023 `/models`
  pages, the edge-case selection and the `/images` samples), verbatim, re-paginated in today's
  `/images` envelope (`items` + `metadata.nextCursor`, an opaque `<offset>|<ms>` cursor).
- `/lexica/api/v1/search?q=`: the recorded search response, for any query.
- `/sdonline/prompts/<slug>`: the recorded listing page; `/sdonline/image/<id>-<slug>`: the
  recorded detail page where one was recorded, else 404 (as the live site answers for pages we
  hold no copy of). No recorded listing links to the recorded detail page, so `/prompts/replay`
  lists it in the recorded card markup.
- `/img/...`: images generated on the fly, deterministically from the path (an upload's
  renditions share a picture), in JPEG, PNG and WebP of varied sizes; a few paths answer with the
  web's usual faults (404, HTML instead of an image, a truncated file) so the demo shows reasons.
Every image URL in the recorded responses is rewritten to point at `/img/` on this server.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
from PIL import Image, ImageDraw

from surd.sources.replay_changes import Changes, image_key, strip_prompts
from surd.sources.safety import source_level

RECORDED_DETAIL_ID = "1"
Canned = tuple[int, dict[str, str], bytes, float]  # status, headers, body, delay in seconds
RECORDED_DETAIL_SLUG = "user-interface-game-for-interaction"


def default_fixtures_dir() -> Path:
    """The recorded responses shipped with the package (a copy of shared/fixtures/sources,
    each folder with its provenance README)."""
    return Path(__file__).resolve().parent / "replay_data"


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def synth_image(key: str, width: int | None = None) -> tuple[bytes, str]:
    """A deterministic picture for `key`: gradient, shapes; format and size vary with the key."""
    rng = np.random.default_rng(_seed(key))
    w = width or int(rng.integers(300, 1100))
    h = int(w * rng.choice([1.0, 1.5, 0.75, 1.25]))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
    t = (xx / w * rng.random() + yy / h * rng.random())[..., None]
    arr = (c0 * (1 - t / 2) + c1 * (t / 2)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(20, w // 2 + 21)), y0 + int(rng.integers(20, h // 2 + 21))
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    fmt = str(rng.choice(["JPEG", "JPEG", "JPEG", "PNG", "WEBP"]))
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=90)
    return buf.getvalue(), {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}[fmt]


class ReplaySite:
    """Loads the fixtures once and answers requests; `base_url` is set once started."""

    def __init__(self, fixtures: Path | None = None, fault_every: int = 17) -> None:
        self.fixtures = fixtures or default_fixtures_dir()
        self.fault_every = fault_every
        self.base_url = ""
        self.requests: list[tuple[float, str]] = []
        self.robots = "User-agent: *\nAllow: /\n"
        self.auth_seen: list[str] = []  # Authorization headers received, for tests
        self.clients: list[tuple[str, str]] = []  # (client address, path) of each request, for tests
        self._scripted: dict[str, list[Canned]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._civitai = self._load_civitai()
        self._withheld: list[dict[str, Any]] = []
        self.changes = Changes()  # faults, deletions, new posts (surd.sources.replay_changes)
        self._gone: set[str] = set()  # picture ids of deleted items: their images answer 404

    def fault(self, source: str, kind: str | None) -> None:
        """Make `source` show `kind` (replay_changes.FAULTS) until cleared with None."""
        with self._lock:
            self.changes.fault(source, kind)

    def grow(self, n: int, prompts: list[str] | None = None) -> list[dict[str, Any]]:
        """`n` new Civitai posts at the top of the feed (one per prompt, if given)."""
        with self._lock:
            return self.changes.grow(n, prompts)

    def delete(self, source: str, item_ids: list[str]) -> None:
        """Items deleted upstream: listings leave them out, their images answer 404, Civitai's
        item lookup says there is no such image, an SD Online page answers 404."""
        with self._lock:
            self.changes.delete(source, item_ids)
            wanted = {str(i) for i in item_ids}
            if source == "civitai":
                for obj in [*self.changes.grown, *self._civitai, *self._withheld]:
                    if str(obj.get("id")) in wanted and obj.get("url"):
                        self._gone.add(image_key(obj["url"]).split("/")[0])
            elif source == "lexica":
                self._gone.update(wanted)  # its image id is its item id
            else:
                self._gone.update(f"sdonline-{i}" for i in wanted)

    def script(self, path: str, *responses: Canned) -> None:
        """Answer the next requests to `path` with these, in order, before the recorded ones
        (tests use it for 429s, 503s, block pages, truncated bodies, slow answers)."""
        with self._lock:
            self._scripted.setdefault(path, []).extend(responses)

    def withhold_newest(self, n: int) -> None:
        """Serve Civitai's feed without its `n` newest items until `publish_withheld`: a site where
        new posts appear at the top of the listing (an incremental crawl then finds them)."""
        with self._lock:
            self._withheld, self._civitai = self._civitai[:n], self._civitai[n:]

    def publish_withheld(self) -> None:
        with self._lock:
            self._civitai = [*self._withheld, *self._civitai]
            self._withheld = []

    def _next_scripted(self, path: str) -> Canned | None:
        with self._lock:
            queue = self._scripted.get(path)
            return queue.pop(0) if queue else None

    # -- recorded data -------------------------------------------------------------------
    def _load_civitai(self) -> list[dict[str, Any]]:
        d = self.fixtures / "civitai"
        objs: list[dict[str, Any]] = []
        for name in ("images_v1_limit1_2024-04.json", "images_v1_wiki_example_2023-04.json"):
            objs.extend(json.loads((d / name).read_text())["items"])
        for name in ("models_v1_page1_2023-08-19.trimmed.json", "models_v1_page2_2023-08-19.trimmed.json"):
            for model in json.loads((d / name).read_text())["items"]:
                for version in model.get("modelVersions", []):
                    objs.extend(version.get("images", []))
        for case in json.loads((d / "models_v1_images_edge_cases_2023-08-19.json").read_text())["cases"]:
            if isinstance(case.get("image"), dict):
                objs.append(case["image"])
            for occ in case.get("occurrences", []) or []:
                if isinstance(occ, dict) and isinstance(occ.get("image"), dict):
                    objs.append(occ["image"])
        seen: set[int] = set()
        out = []
        for obj in objs:
            if obj.get("id") in seen:
                continue
            seen.add(obj["id"])
            out.append(obj)
        return out

    def _rewrite(self, text: str) -> str:
        base = self.base_url
        text = re.sub(r"https://image(?:cache)?\.civitai\.com/", f"{base}/img/civitai/", text)
        text = text.replace("https://image.lexica.art/", f"{base}/img/lexica/")
        text = text.replace("https://imgcdn.stablediffusionweb.com/", f"{base}/img/sdonline/")
        return text.replace(
            quote("https://imgcdn.stablediffusionweb.com/", safe=""),
            quote(f"{base}/img/sdonline/", safe=""),
        )

    # -- routes --------------------------------------------------------------------------
    def _civitai_items(self) -> list[dict[str, Any]]:
        """The feed now: new posts first, without deleted items, as a fault shapes it."""
        ch = self.changes
        items = [o for o in [*ch.grown, *self._civitai] if not ch.is_deleted("civitai", o.get("id"))]
        fault = ch.faults.get("civitai")
        if fault == "sfw_only":
            items = [o for o in items if source_level(o.get("nsfwLevel")) in (0, None)]
        elif fault == "null_prompts":
            items = [{**o, "meta": None} for o in items]
        return items

    def civitai_page(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """A page of the feed, or one image by `imageId` (404 when deleted or unknown)."""
        items = self._civitai_items()
        if "imageId" in query:
            wanted = query["imageId"][0]
            found = [o for o in items if str(o.get("id")) == wanted]
            if not found:
                return 404, {"error": f"No image with id {wanted}"}
            return 200, {"items": found, "metadata": {}}
        limit = int(query.get("limit", ["100"])[0])
        cursor = query.get("cursor", [None])[0]
        start = int(cursor.split("|")[0]) if cursor else 0
        self._all = items
        items = items[start : start + limit]
        meta: dict[str, Any] = {}
        if start + limit < len(self._all):
            meta["nextCursor"] = f"{start + limit}|1712265847499"
        return 200, {"items": items, "metadata": meta}

    def _faulted(self, source: str) -> tuple[int, str, bytes] | None:
        """The answer a faulty source gives instead of its page, if its fault is that."""
        fault = self.changes.faults.get(source)
        if fault == "region_blocked":
            return (
                451,
                "application/json",
                b'{"code":"REGION_BLOCKED","message":"Not available in your region"}',
            )
        if fault == "down":
            return 503, "text/html", b"<html><body><h1>503 Service Unavailable</h1></body></html>"
        return None

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        sd = self.fixtures / "stablediffusionweb"
        if path == "/robots.txt":
            return 200, "text/plain", self.robots.encode()
        source = path.split("/")[1] if path.count("/") > 1 else ""
        if source in ("civitai", "lexica", "sdonline") and (faulted := self._faulted(source)):
            return faulted
        if path in ("/civitai/api/v1/images", "/api/v1/images"):  # the latter: civitai.com's own path
            status, page = self.civitai_page(query)
            return status, "application/json", self._rewrite(json.dumps(page)).encode()
        if path == "/lexica/api/v1/search":
            if not query.get("q"):
                return 400, "application/json", b'{"error":"q is required"}'
            found = json.loads((self.fixtures / "lexica" / "search_v1_docs_example.json").read_text())
            found["images"] = [
                {**i, **({"prompt": None} if self.changes.faults.get("lexica") == "null_prompts" else {})}
                for i in found["images"]
                if not self.changes.is_deleted("lexica", i["id"])
            ]
            return 200, "application/json", self._rewrite(json.dumps(found)).encode()
        if path == "/sdonline/prompts/replay":
            card = (
                f'<a hreflang="en" class="group relative block cursor-pointer" '
                f'href="/image/{RECORDED_DETAIL_ID}-{RECORDED_DETAIL_SLUG}">'
                f'<img alt="recorded detail page" src="{self.base_url}/img/sdonline/x.jpg"></a>'
            )
            return 200, "text/html", card.encode()
        if path.startswith("/sdonline/prompts/"):
            html = (sd / "prompts_listing_cards_2024-10.html").read_text()
            return 200, "text/html", self._rewrite(html).encode()
        if path == f"/sdonline/image/{RECORDED_DETAIL_ID}-{RECORDED_DETAIL_SLUG}":
            if self.changes.is_deleted("sdonline", RECORDED_DETAIL_ID):
                return 404, "text/html", b"<!DOCTYPE html><html><body>Not found</body></html>"
            html = (sd / "image_detail_prompt_panel_2024-10.html").read_text()
            if self.changes.faults.get("sdonline") == "no_prompts_parsed":
                html = strip_prompts(html)
            return 200, "text/html", self._rewrite(html).encode()
        if path.startswith("/img/"):
            return self.image(path)
        return 404, "text/html", b"<!DOCTYPE html><html><body>Not found</body></html>"

    def route_post(self, path: str, body: bytes) -> tuple[int, str, bytes]:
        """Lexica's infinite-prompts feed, in its documented shape, built from the recorded
        search response (no recorded feed response exists): one page, then no cursor."""
        if path != "/lexica/api/infinite-prompts":
            return 404, "application/json", b'{"error":"not found"}'
        try:
            req = json.loads(body)
        except json.JSONDecodeError:
            return 400, "application/json", b'{"error":"bad json"}'
        if int(req.get("cursor") or 0) > 0:
            return 200, "application/json", b'{"prompts": [], "images": []}'
        found = json.loads((self.fixtures / "lexica" / "search_v1_docs_example.json").read_text())["images"]
        prompts = [
            {
                "id": i["promptid"],
                "prompt": i["prompt"],
                "negativePrompt": "",
                "seed": i["seed"],
                "c": i["guidance"],
                "model": i["model"],
                "width": i["width"],
                "height": i["height"],
                "grid": i["grid"],
                "images": [{"id": i["id"]}],
            }
            for i in found
        ]
        images = [
            {"id": i["id"], "promptid": i["promptid"], "width": i["width"], "height": i["height"]}
            for i in found
        ]
        return (
            200,
            "application/json",
            json.dumps({"prompts": prompts, "images": images, "nextCursor": 50}).encode(),
        )

    def image(self, path: str) -> tuple[int, str, bytes]:
        segs = path.split("/")
        width = None
        for seg in segs:
            m = re.fullmatch(r"width=(\d+)", seg)
            if m:
                width = int(m.group(1))
        key = "/".join(s for s in segs if "=" not in s)
        if self._gone and any(g in path for g in self._gone):
            return 404, "text/html", b"<!DOCTYPE html><html><body>Not found</body></html>"
        if key.startswith("/img/lexica/"):  # md/sm renditions of one image share it
            key = "/img/lexica/" + segs[-1]
        fault = _seed("fault" + key) % self.fault_every if self.fault_every else 1
        if fault == 0:
            return 404, "text/html", b"<!DOCTYPE html><html><body>Not found</body></html>"
        data, ctype = synth_image(key, width)
        if fault == 1:
            return 200, "image/jpeg", b"<!DOCTYPE html><html><title>Just a moment...</title></html>"
        if fault == 2:
            return 200, ctype, data[: len(data) // 3]
        return 200, ctype, data

    # -- server --------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> ReplaySite:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._answer(self.rfile.read(length))

            def _answer(self, body_in: bytes | None) -> None:
                parts = urlsplit(self.path)
                site.requests.append((time.monotonic(), self.path))
                site.auth_seen.append(self.headers.get("Authorization", ""))
                site.clients.append((self.client_address[0], parts.path))
                canned = site._next_scripted(parts.path)
                headers: dict[str, str] = {}
                if canned is not None:
                    status, headers, body, delay = canned
                    ctype = headers.pop("Content-Type", "application/json")
                    time.sleep(delay)
                elif body_in is not None:
                    status, ctype, body = site.route_post(parts.path, body_in)
                else:
                    status, ctype, body = site.route(parts.path, parse_qs(parts.query))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up (a timeout test): nothing left to answer

            def log_message(self, format: str, *args: Any) -> None:
                return None  # the crawler's own tables record every request outcome

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://{host}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def source_urls(self) -> dict[str, str]:
        """Base URLs to give the connectors (`SURD_SOURCES__<NAME>__BASE_URL`)."""
        return {
            "civitai": f"{self.base_url}/civitai",
            "lexica": f"{self.base_url}/lexica",
            "sdonline": f"{self.base_url}/sdonline",
        }
