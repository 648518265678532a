"""One retrying, concurrent client for OpenAI-compatible servers (vLLM, SGLang, our `serve`, hosted APIs).

    client = OpenAIClient(EndpointConfig(base_url="http://127.0.0.1:8000", model="judge"))
    replies = client.post_many("chat/completions", payloads, read=read_chat_content)

Requests run concurrently on a thread pool. Each request is retried with exponential backoff (and jitter,
honouring `Retry-After`) on connection errors, timeouts, HTTP 408/409/425/429/5xx and replies `read`
rejects (malformed bodies, answers a parser cannot use); other 4xx fail at once. Every attempt's timeout is
cut to what remains of the batch deadline, and requests still running at the deadline are recorded as
failed, so `post_many` returns within about `total_timeout_s` whatever the server does. Failures are
returned per request (`Reply.error`), never raised.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import random
import threading
import time
from typing import Any, Callable, Sequence

import requests

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})

# read(body) -> (value, error, raw text): value is None exactly when error is set; raw is kept for debugging.
ReadFn = Callable[[Any], "tuple[Any, str | None, str]"]


@dataclasses.dataclass
class EndpointConfig:
    """base_url: server root, e.g. "http://127.0.0.1:8000" (with or without a trailing "/v1"); model: the
    served model name; api_key: sent as a Bearer token when set (else read from the environment variable
    named by api_key_env, when that is set). Times are seconds; total_timeout_s bounds one `post_many`."""

    base_url: str
    model: str
    api_key: str | None = None
    api_key_env: str | None = None
    max_workers: int = 16
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 60.0
    max_attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    total_timeout_s: float = 300.0


@dataclasses.dataclass(frozen=True)
class Reply:
    """The outcome of one payload: `value` as `read` made it (None on failure) or `error` (the last
    failure when retried), with the number of requests sent, the last reply text (first 2000 chars) and
    the wall time in seconds."""

    value: Any
    error: str | None = None
    attempts: int = 0
    raw: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def read_chat_content(body: Any) -> tuple[str | None, str | None, str]:
    """The first choice's message content of a chat-completions body."""
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None, f"malformed chat-completions body: {str(body)[:200]!r}", ""
    if not isinstance(content, str):
        return None, f"reply content is {type(content).__name__}, not text", ""
    return content, None, content


def read_completion_text(body: Any) -> tuple[tuple[str, str] | None, str | None, str]:
    """(text, finish_reason) of the first choice of a (text) completions body."""
    try:
        choice = body["choices"][0]
        text, finish = choice["text"], choice.get("finish_reason") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return None, f"malformed completions body: {str(body)[:200]!r}", ""
    if not isinstance(text, str):
        return None, f"completion text is {type(text).__name__}, not text", ""
    return (text, str(finish)), None, text


class OpenAIClient:
    """Posts JSON payloads to one OpenAI-compatible server; see the module docstring for the policy."""

    def __init__(self, config: EndpointConfig):
        if config.max_attempts < 1 or config.max_workers < 1 or config.total_timeout_s <= 0:
            raise ValueError(f"endpoint needs max_attempts >= 1, max_workers >= 1, total_timeout_s > 0: {config}")
        if not config.base_url or not config.model:
            raise ValueError(f"endpoint needs base_url and model, got {config.base_url!r}, {config.model!r}")
        self.config = config
        root = config.base_url.rstrip("/")
        self.root = root if root.endswith("/v1") else root + "/v1"
        key = config.api_key or (os.environ.get(config.api_key_env) if config.api_key_env else None)
        self._headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
        self._local = threading.local()

    def url(self, path: str) -> str:
        """The full URL of an endpoint path relative to /v1."""
        return f"{self.root}/{path.lstrip('/')}"

    def post_many(self, path: str, payloads: Sequence[dict], read: ReadFn | Sequence[ReadFn]) -> list[Reply]:
        """One Reply per payload, same order. `path` is relative to /v1 ("chat/completions", "completions");
        the configured model name is added to every payload. `read` is one reader for all replies or one
        per payload."""
        if not payloads:
            return []
        readers = [read] * len(payloads) if callable(read) else list(read)
        if len(readers) != len(payloads):
            raise ValueError(f"{len(readers)} readers for {len(payloads)} payloads")
        cfg = self.config
        url = self.url(path)
        deadline = time.monotonic() + cfg.total_timeout_s
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(cfg.max_workers, len(payloads)),
                                                     thread_name_prefix="openai-client")
        try:
            futures = [pool.submit(self._post_one, url, path, {"model": cfg.model, **p}, r, deadline)
                       for p, r in zip(payloads, readers)]
            concurrent.futures.wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 0.5)
            return [f.result() if f.done() and not f.cancelled()
                    else Reply(None, f"deadline of {cfg.total_timeout_s:.1f}s exceeded", 0) for f in futures]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _post_one(self, url: str, path: str, payload: dict, read: ReadFn, deadline: float) -> Reply:
        cfg = self.config
        start = time.monotonic()
        error, raw, attempt = "deadline exceeded before the first attempt", "", 0
        while attempt < cfg.max_attempts:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                error = f"deadline exceeded after {attempt} attempt(s); last error: {error}"
                break
            attempt += 1
            retry_after = None
            try:
                response = self._session().post(
                    url, json=payload, headers=self._headers,
                    timeout=(min(cfg.connect_timeout_s, remaining), min(cfg.request_timeout_s, remaining)))
            except requests.Timeout:
                error = f"timeout after {min(cfg.request_timeout_s, remaining):.1f}s"
            except requests.RequestException as err:
                error = f"connection error: {err.__class__.__name__}"
            else:
                if response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError:
                        error = f"malformed {path.strip('/').replace('/', '-')} body: {response.text[:200]!r}"
                    else:
                        value, error, raw = read(body)
                        if error is None:
                            return Reply(value, None, attempt, raw[:2000], time.monotonic() - start)
                else:
                    error = f"HTTP {response.status_code}: {response.text[:200]}"
                    if response.status_code < 500 and response.status_code not in _RETRYABLE_STATUS:
                        break
                    retry_after = _retry_after_s(response)
            if attempt < cfg.max_attempts:
                backoff = min(cfg.max_backoff_s, cfg.backoff_s * 2 ** (attempt - 1)) * (1 + 0.25 * random.random())
                if retry_after is not None:
                    backoff = min(cfg.max_backoff_s, max(backoff, retry_after))
                time.sleep(max(0.0, min(backoff, deadline - time.monotonic())))
        return Reply(None, error, attempt, raw[:2000], time.monotonic() - start)


def _retry_after_s(response: requests.Response) -> float | None:
    try:
        return float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
