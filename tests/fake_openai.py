"""A local HTTP server speaking OpenAI's chat-completions wire format (POST /v1/chat/completions), checking
requests against the documented contract (Bearer key, JSON body, model, messages with roles and string
content, sampling fields and their ranges, unknown arguments refused) and answering in the documented
shape — or, on demand, slowly, with 429, with 500, or with a malformed body."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from shoppulse.devstack.http_standin import StandinServer, serving

KNOWN_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop",
                "presence_penalty", "frequency_penalty", "user", "seed", "response_format", "stream", "metadata",
                "store", "logprobs", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls", "service_tier"}
ROLES = {"system", "developer", "user", "assistant", "tool"}


@dataclass
class OpenAIState:
    api_key: str
    mode: str = "ok"  # ok | slow | 429 | 500 | malformed
    answer: str = "Payments in BR are failing: 62% of attempts, against 3% normally."
    delay_s: float = 2.0
    requests: list[dict[str, Any]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: StandinServer[OpenAIState]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/chat/completions":
            return self._error(404, "invalid_request_error", f"Invalid URL (POST {self.path})")
        if self.headers.get("Authorization") != f"Bearer {state.api_key}":
            return self._error(401, "invalid_request_error", "Incorrect API key provided.")
        try:
            request = json.loads(body)
        except json.JSONDecodeError:
            return self._error(400, "invalid_request_error", "We could not parse the JSON body of your request.")
        problem = _contract_problem(request)
        if problem:
            return self._error(400, "invalid_request_error", problem)
        state.requests.append(request)
        if state.mode == "slow":
            time.sleep(state.delay_s)
        if state.mode == "429":
            return self._error(429, "rate_limit_exceeded", "Rate limit reached for requests", {"retry-after": "0"})
        if state.mode == "500":
            return self._error(500, "server_error", "The server had an error while processing your request.")
        if state.mode == "malformed":
            return self._send(200, b'{"id": "chatcmpl-1", "choices": [{"index": 0, "message": ')
        prompt_tokens = sum(len(m["content"].split()) for m in request["messages"]) * 2
        completion_tokens = len(state.answer.split()) * 2
        answer = {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                  "model": request["model"], "system_fingerprint": "fp_fake",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": state.answer, "refusal": None},
                               "logprobs": None, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens}}
        self._send(200, json.dumps(answer).encode())

    def _error(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
        self._send(status, json.dumps(body).encode(), headers)

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _contract_problem(request: Any) -> str | None:
    if not isinstance(request, dict):
        return "The request body must be a JSON object."
    unknown = set(request) - KNOWN_FIELDS
    if unknown:
        return f"Unrecognized request argument supplied: {sorted(unknown)[0]}"
    if not isinstance(request.get("model"), str) or not request["model"]:
        return "you must provide a model parameter"
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"),
                                                                                                str):
            return "each message needs a role and string content"
    temperature = request.get("temperature", 1)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        return "temperature must be a number between 0 and 2"
    for name in ("max_tokens", "max_completion_tokens"):
        value = request.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{name} must be a positive integer"
    return None


@contextlib.contextmanager
def fake_openai(api_key: str) -> Iterator[tuple[str, OpenAIState]]:
    """A running fake; yields its base URL (…/v1) and its state."""
    state = OpenAIState(api_key)
    with serving(state, _Handler) as url:
        yield f"{url}/v1", state
