"""A local OpenAI-compatible server for the tests: `POST /v1/chat/completions` answers from a script.

Each request takes the next scripted answer: a chat completion with the given content (and usage
token counts), an HTTP error (429 with Retry-After, 500, ...), a slow answer (the client times
out), or a refusal. With the script empty it gives `default` (no proposal unless set). It checks the bearer
key, keeps every request body it received, and speaks the response shape the `openai` library
parses (id, object, created, model, choices[].message, finish_reason, usage)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "sk-test-supervisor"


@dataclass(frozen=True)
class Answer:
    kind: str = "content"  # content | status | slow | refusal
    content: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    seconds: float = 0.0
    finish_reason: str = "stop"
    completion_tokens: int | None = None


def content(text: str, *, finish_reason: str = "stop", completion_tokens: int | None = None) -> Answer:
    return Answer(content=text, finish_reason=finish_reason, completion_tokens=completion_tokens)


def proposals(items: list[Any]) -> Answer:
    return content(json.dumps({"proposals": items}))


def status(code: int, *, retry_after: str | None = None, message: str = "scripted failure") -> Answer:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"error": {"message": message, "type": "server_error" if code >= 500 else "rate_limit_error", "code": None}}
    return Answer(kind="status", status=code, headers=headers, body=body)


def slow(seconds: float, text: str | None = None) -> Answer:
    """Answer after `seconds`: a timeout for a client that waits less, a slow model otherwise."""
    return Answer(kind="slow", seconds=seconds, content=json.dumps({"proposals": []}) if text is None else text)


def refusal(text: str) -> Answer:
    return Answer(kind="refusal", content=text)


class ScriptedOpenAI:
    def __init__(self, api_key: str = API_KEY, default: Answer | None = None) -> None:
        self.api_key = api_key
        self.default = default or proposals([])
        self.script: deque[Answer] = deque()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
                body = json.loads(raw)
                with server._lock:
                    server.requests.append(body)
                    answer = server.script.popleft() if server.script else server.default
                if answer.kind == "status":
                    return self._send(answer.status, answer.body, answer.headers)
                if answer.kind == "slow":
                    time.sleep(answer.seconds)
                message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
                if answer.kind == "refusal":
                    message = {"role": "assistant", "content": None, "refusal": answer.content}
                prompt_tokens = len(raw) // 4
                completion_tokens = answer.completion_tokens
                if completion_tokens is None:
                    completion_tokens = len(answer.content or "") // 4 + 1
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "unknown"),
                        "choices": [
                            {"index": 0, "message": message, "finish_reason": answer.finish_reason, "logprobs": None}
                        ],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens,
                        },
                    },
                )

            def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a scripted timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def add(self, *answers: Answer) -> None:
        with self._lock:
            self.script.extend(answers)

    def start(self) -> ScriptedOpenAI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
