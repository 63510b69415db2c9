"""Discord webhook notifications (research.md §5, live.md §5) with the standard library only.

``send_discord`` never raises into its caller and never prints, logs or writes the webhook URL
(it is a secret: whoever has it can post to the channel). It returns True when Discord accepted
the message, False otherwise, with one log line on the ``xsmom.notify`` logger saying why.

- The URL comes from the ``url`` argument or ``DISCORD_WEBHOOK_URL``; unset means "notifications
  off" (False, logged at debug level).
- HTTP 429: waits ``Retry-After`` (header, or ``retry_after`` in the JSON body), capped by
  ``max_wait``; 5xx, timeouts and connection errors are retried with exponential backoff; other
  4xx responses are final. At most ``1 + retries`` requests are sent.
- Text longer than Discord's 2000 characters is cut, and the full text is attached as
  ``message.txt``. Files are sent as ``multipart/form-data`` (``payload_json`` + ``files[n]``).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("xsmom.notify")

ENV_VAR = "DISCORD_WEBHOOK_URL"
MAX_CONTENT = 2000
MAX_FILES = 10
MAX_UPLOAD = 24 * 1024 * 1024  # Discord refuses requests over 25 MiB (non-boosted servers)
USER_AGENT = "xsmom-notify/1.0"


def webhook_configured() -> bool:
    """Whether ``DISCORD_WEBHOOK_URL`` is set (without revealing it)."""
    return bool(os.environ.get(ENV_VAR, "").strip())


def _redact(text: str, url: str) -> str:
    """Remove the URL (and its token part) from any text that may reach a log."""
    if url:
        text = text.replace(url, "<webhook>")
        token = url.rstrip("/").rsplit("/", 1)[-1]
        if len(token) >= 8:
            text = text.replace(token, "<token>")
    return text


def _multipart(payload: dict, attachments: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = f"xsmom-{uuid.uuid4().hex}"
    parts: list[bytes] = []

    def part(headers: str, body: bytes) -> None:
        parts.append(f"--{boundary}\r\n{headers}\r\n\r\n".encode() + body + b"\r\n")

    part(
        'Content-Disposition: form-data; name="payload_json"\r\nContent-Type: application/json',
        json.dumps(payload).encode(),
    )
    for index, (name, data) in enumerate(attachments):
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        safe = name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        part(
            f'Content-Disposition: form-data; name="files[{index}]"; filename="{safe}"\r\n'
            f"Content-Type: {mime}",
            data,
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _retry_after(err: urllib.error.HTTPError) -> float | None:
    header = err.headers.get("Retry-After") if err.headers is not None else None
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    try:
        body = json.loads(err.read().decode("utf-8", "replace") or "{}")
        value = body.get("retry_after")
        return None if value is None else max(0.0, float(value))
    except (ValueError, AttributeError, OSError):
        return None


def send_discord(
    content: str,
    files: Sequence[str | Path] = (),
    url: str | None = None,
    *,
    timeout: float = 10.0,
    retries: int = 3,
    max_wait: float = 60.0,
    backoff: float = 0.5,
    username: str | None = None,
) -> bool:
    """Post ``content`` (and ``files``) to a Discord webhook; True when accepted. Never raises."""
    webhook = (url if url is not None else os.environ.get(ENV_VAR, "")).strip()
    try:
        return _send(content, files, webhook, timeout, retries, max_wait, backoff, username)
    except Exception as err:  # noqa: BLE001 - a notification must never break its caller
        log.warning("discord: not sent: %s", _redact(f"{type(err).__name__}: {err}", webhook))
        return False


@dataclass(frozen=True)
class _Policy:
    """How long to wait for Discord and how often to try again."""

    timeout: float
    retries: int
    max_wait: float
    backoff: float


def _send(
    content: str,
    files: Sequence[str | Path],
    webhook: str,
    timeout: float,
    retries: int,
    max_wait: float,
    backoff: float,
    username: str | None,
) -> bool:
    if not webhook:
        log.debug("discord: %s is not set; nothing sent", ENV_VAR)
        return False
    if not webhook.startswith(("https://", "http://")):
        log.warning("discord: not sent: the webhook URL is not an http(s) URL")
        return False
    text, attachments = _message(str(content), files)
    payload: dict = {"content": text, "allowed_mentions": {"parse": []}}
    if username:
        payload["username"] = username
    if attachments:
        body, content_type = _multipart(payload, attachments)
    else:
        body, content_type = json.dumps(payload).encode(), "application/json"
    sent = (len(text), len(attachments))
    return _post(webhook, body, content_type, sent, _Policy(timeout, retries, max_wait, backoff))


def _message(text: str, files: Sequence[str | Path]) -> tuple[str, list[tuple[str, bytes]]]:
    """The text as sent (cut to Discord's limit, the full text attached) and the attachments that
    fit: readable files, within 24 MiB in all and at most ``MAX_FILES``."""
    attachments: list[tuple[str, bytes]] = []
    if len(text) > MAX_CONTENT:
        attachments.append(("message.txt", text.encode()))
        text = text[: MAX_CONTENT - 40].rstrip() + "\n… (full text in message.txt)"
    for file in files:
        path = Path(file)
        try:
            attachments.append((path.name, path.read_bytes()))
        except OSError as err:
            log.warning("discord: attachment %s skipped: %s", path, err.strerror or err)
    total = len(text.encode())
    kept = []
    for name, data in attachments:
        if total + len(data) > MAX_UPLOAD:
            log.warning("discord: attachment %s skipped: the message would exceed 24 MiB", name)
            continue
        total += len(data)
        kept.append((name, data))
    if len(kept) > MAX_FILES:
        log.warning("discord: %d attachments, only the first %d sent", len(kept), MAX_FILES)
        kept = kept[:MAX_FILES]
    return text, kept


def _post(webhook: str, body: bytes, content_type: str, sent: tuple[int, int], policy: _Policy) -> bool:
    """POST ``body`` until Discord accepts it, retrying 429, 5xx and network errors."""
    attempt = 0
    while True:
        request = urllib.request.Request(
            webhook,
            data=body,
            method="POST",
            headers={"Content-Type": content_type, "User-Agent": USER_AGENT},
        )
        try:
            with urllib.request.urlopen(request, timeout=policy.timeout) as response:
                response.read()
                log.info("discord: sent (%d chars, %d file(s))", *sent)
                return True
        except urllib.error.HTTPError as err:
            retry = _http_retry(err, attempt, policy, webhook)
            if retry is None:
                return False
            wait, reason = retry
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            wait = policy.backoff * 2**attempt
            detail = getattr(err, "reason", None) or err
            reason = _redact(f"{detail}", webhook) + f", retrying after {wait:.2f} s"
        attempt += 1
        if attempt > policy.retries:
            log.warning("discord: not sent after %d attempt(s): %s", attempt, reason.split(", retrying")[0])
            return False
        log.info("discord: %s (attempt %d)", reason, attempt)
        time.sleep(wait)


def _http_retry(
    err: urllib.error.HTTPError, attempt: int, policy: _Policy, webhook: str
) -> tuple[float, str] | None:
    """The wait and the reason before retrying an HTTP error; None (logged) when it is final."""
    if err.code == 429:
        wait = _retry_after(err)
        wait = 1.0 if wait is None else wait
        if wait > policy.max_wait:
            log.warning("discord: not sent: rate limited for %.1f s (limit %.0f s)", wait, policy.max_wait)
            return None
        return wait, f"rate limited, retrying after {wait:.2f} s"
    if err.code >= 500:
        wait = policy.backoff * 2**attempt
        return wait, f"HTTP {err.code}, retrying after {wait:.2f} s"
    log.warning("discord: not sent: HTTP %d %s", err.code, _redact(str(err.reason), webhook))
    return None
