"""Discord notifications against a local webhook server on 127.0.0.1 (no internet)."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from xsmom.notify import send_discord

TOKEN = "s3cr3t-webhook-token-abcdef0123456789"


@dataclass
class Webhook:
    """A fake Discord webhook: records requests, answers from a script of (status, headers, body)."""

    url: str
    requests: list[dict] = field(default_factory=list)
    script: list[tuple[int, dict, bytes]] = field(default_factory=list)
    delay: float = 0.0


def _parse(content_type: str, body: bytes) -> dict:
    if content_type.startswith("application/json"):
        return {"payload": json.loads(body), "files": {}}
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    payload, files = None, {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if name == "payload_json":
            payload = json.loads(data)
        else:
            files[name] = (part.get_filename(), data)
    return {"payload": payload, "files": files}


@contextlib.contextmanager
def serve_webhook() -> Iterator[Webhook]:
    """A fake webhook on 127.0.0.1 for the duration of the block."""
    state: Webhook

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002
            pass

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            record = _parse(self.headers["Content-Type"], body)
            record["path"] = self.path
            state.requests.append(record)
            if state.delay:
                threading.Event().wait(state.delay)
            status, headers, reply = state.script.pop(0) if state.script else (204, {}, b"")
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # a client that timed out and closed its end (the timeout test) is expected

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Webhook(url=f"http://127.0.0.1:{server.server_address[1]}/api/webhooks/1234/{TOKEN}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with serve_webhook() as hook:
        yield hook


def test_content_from_the_environment(webhook, monkeypatch, caplog, capsys):
    monkeypatch.setenv("DISCORD_WEBHOOK_URL", webhook.url)
    caplog.set_level(logging.DEBUG, logger="xsmom.notify")
    assert send_discord("deploy verdict: **passed**") is True
    assert len(webhook.requests) == 1
    request = webhook.requests[0]
    assert request["path"] == f"/api/webhooks/1234/{TOKEN}"
    assert request["payload"]["content"] == "deploy verdict: **passed**"
    assert request["payload"]["allowed_mentions"] == {"parse": []}
    out = capsys.readouterr()
    assert TOKEN not in caplog.text + out.out + out.err
    assert "sent" in caplog.text


def test_file_attachment_is_multipart(webhook, tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# Report\nsharpe 1.23\n")
    png = tmp_path / "equity.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert send_discord("see attached", files=[report, png], url=webhook.url) is True
    request = webhook.requests[0]
    assert request["payload"]["content"] == "see attached"
    assert request["files"]["files[0]"] == ("report.md", report.read_bytes())
    assert request["files"]["files[1]"] == ("equity.png", png.read_bytes())


def test_long_content_is_cut_and_attached_in_full(webhook):
    text = "line of the daily report\n" * 200
    assert send_discord(text, url=webhook.url) is True
    request = webhook.requests[0]
    assert len(request["payload"]["content"]) <= 2000
    assert request["files"]["files[0]"] == ("message.txt", text.encode())


def test_429_retry_after_then_success(webhook, caplog):
    caplog.set_level(logging.INFO, logger="xsmom.notify")
    webhook.script = [
        (429, {"Retry-After": "0.3", "Content-Type": "application/json"}, b'{"retry_after": 0.3}'),
        (429, {"Content-Type": "application/json"}, b'{"retry_after": 0.2, "global": false}'),
        (204, {}, b""),
    ]
    import time

    started = time.monotonic()
    assert send_discord("hello", url=webhook.url, backoff=0.0) is True
    elapsed = time.monotonic() - started
    assert len(webhook.requests) == 3
    assert elapsed >= 0.5, f"Retry-After not honoured ({elapsed:.2f} s)"
    assert "rate limited" in caplog.text
    assert TOKEN not in caplog.text


def test_gives_up_after_bounded_retries_without_raising(webhook, caplog):
    webhook.script = [(500, {}, b"")] * 10
    assert send_discord("x", url=webhook.url, retries=2, backoff=0.01) is False
    assert len(webhook.requests) == 3
    assert "not sent after 3 attempt(s): HTTP 500" in caplog.text
    assert TOKEN not in caplog.text


def test_client_error_is_final(webhook, caplog):
    webhook.script = [(404, {}, b'{"message": "Unknown Webhook"}')]
    assert send_discord("x", url=webhook.url) is False
    assert len(webhook.requests) == 1
    assert "HTTP 404" in caplog.text and TOKEN not in caplog.text


def test_too_long_retry_after_gives_up(webhook, caplog):
    webhook.script = [(429, {"Retry-After": "3600"}, b"")]
    assert send_discord("x", url=webhook.url, max_wait=5) is False
    assert len(webhook.requests) == 1
    assert "rate limited for 3600.0 s" in caplog.text


def test_timeout_is_bounded(webhook, caplog):
    webhook.delay = 1.0
    import time

    started = time.monotonic()
    assert send_discord("x", url=webhook.url, timeout=0.2, retries=1, backoff=0.01) is False
    assert time.monotonic() - started < 3.0
    assert len(webhook.requests) == 2
    assert TOKEN not in caplog.text


def test_unreachable_and_unset(monkeypatch, caplog, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/webhooks/1/{TOKEN}"
    assert send_discord("x", url=url, retries=1, backoff=0.01) is False
    monkeypatch.delenv("DISCORD_WEBHOOK_URL", raising=False)
    assert send_discord("x") is False
    assert send_discord("x", url="not a url") is False
    out = capsys.readouterr()
    assert TOKEN not in caplog.text + out.out + out.err
    assert "not sent" in caplog.text


def test_missing_attachment_is_skipped(webhook, tmp_path, caplog):
    assert send_discord("x", files=[tmp_path / "absent.png"], url=webhook.url) is True
    assert webhook.requests[0]["files"] == {}
    assert "absent.png skipped" in caplog.text


def test_oversized_attachment_is_skipped(webhook, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("xsmom.notify.MAX_UPLOAD", 1000)
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_bytes(b"x" * 100)
    big.write_bytes(b"y" * 2000)
    assert send_discord("files", files=[big, small], url=webhook.url) is True
    assert webhook.requests[0]["files"] == {"files[0]": ("small.txt", small.read_bytes())}
    assert "big.bin skipped" in caplog.text
