"""An OpenAI-compatible chat-completions client: what reaches vLLM, TGI, Ollama or a hosted API.

Requests run `maxConcurrency` at a time. A 429, a 5xx or no answer is retried with exponential
back-off (0.5 s doubling, at most 30 s), or after the server's `Retry-After` when it sends one;
a request that still fails, or whose reply cannot be read, is a `RequestFailed` for its document
only. The API key is sent as a bearer token and never written anywhere else, errors included.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime

from embedops.api.generate import GeneratorEndpoint
from embedops.workers.generate.cache import Reply
from embedops.workers.generate.prompt import Messages

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
RETRY_AFTER_MAX = 300.0  # a longer wait than this is a server asking not to be used: waited no longer
RETRIED = {408, 409, 425, 429}  # besides every 5xx


class RequestFailed(Exception):
    """A request that failed for good; its message says why, naming no secret."""


@dataclass(frozen=True, eq=False)  # one request is one object: its messages (dicts) do not hash
class Request:
    key: str  # the cache key
    messages: Messages
    seed: int


class Client:
    def __init__(
        self,
        endpoint: GeneratorEndpoint,
        api_key: str | None,
        *,
        temperature: float,
        max_tokens: int,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.endpoint = endpoint
        self.url = endpoint.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.temperature, self.max_tokens = temperature, max_tokens
        self._sleep = sleep

    def run(self, requests: Iterable[Request]) -> Iterator[tuple[Request, Reply | RequestFailed]]:
        """Each request with its reply or its failure, as they finish (at most maxConcurrency in flight)."""
        with ThreadPoolExecutor(self.endpoint.max_concurrency, thread_name_prefix="generate") as pool:
            futures = {pool.submit(self._outcome, r): r for r in requests}
            for future in as_completed(futures):
                yield futures[future], future.result()

    def _outcome(self, request: Request) -> Reply | RequestFailed:
        try:
            return self.complete(request)
        except RequestFailed as err:
            return err

    def complete(self, request: Request) -> Reply:
        body = json.dumps(
            {
                "model": self.endpoint.model,
                "messages": list(request.messages),
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
                "seed": request.seed,
                "n": 1,
            }
        ).encode()
        for attempt in range(self.endpoint.max_retries + 1):
            last = attempt == self.endpoint.max_retries
            try:
                return self._post(body)
            except urllib.error.HTTPError as err:
                wait = _retry_after(err.headers.get("Retry-After")) if err.headers else None
                err.close()
                if not (err.code in RETRIED or err.code >= 500) or last:
                    raise RequestFailed(f"HTTP {err.code} {err.reason} from {self.url}") from None
                self._back_off(attempt, wait, f"HTTP {err.code}")
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                reason = getattr(err, "reason", err)
                if last:
                    raise RequestFailed(f"{self.url} did not answer: {reason}") from None
                self._back_off(attempt, None, str(reason))
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def _post(self, body: bytes) -> Reply:
        req = urllib.request.Request(self.url, data=body, headers=self._headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.endpoint.timeout_seconds) as response:
            raw = response.read()
        return parse_reply(raw)

    def _back_off(self, attempt: int, retry_after: float | None, why: str) -> None:
        wait = retry_after if retry_after is not None else min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt)
        log.debug("generator: %s, retrying in %.1f s", why, wait)
        self._sleep(wait)


def parse_reply(raw: bytes) -> Reply:
    """The text and token counts of a chat-completions reply; anything else is a RequestFailed."""
    try:
        data = json.loads(raw)
        text = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise RequestFailed(f"malformed reply (not a chat completion): {raw[:80]!r}") from None
    if not isinstance(text, str):
        raise RequestFailed("malformed reply: the message's content is not text")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Reply(
        text=text, tokens_in=_count(usage.get("prompt_tokens")), tokens_out=_count(usage.get("completion_tokens"))
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)
