"""A real HTTP server on 127.0.0.1 speaking ``/v1/chat/completions`` and ``/v1/completions`` with scripted answers.

The judged outputs carry a marker ``[[s=<int>]]``; the server finds the markers in the prompt in order (output (a),
then output (b), per example), prefers the higher score, and answers one choice per example, padding the answer up to
``answers_per_request`` with ``(a)`` (the dummy padding examples carry no marker). ``formatter(model, choices)``
writes the answer text in the member's format.

Faults are consumed, one per request, from ``faults`` (a list; when empty every request is answered normally):
``"429"`` (``retry-after-ms``), ``"429s"`` (``Retry-After`` in seconds), ``"500"``, ``"503"``, ``"slow"`` (answers
after ``slow_seconds``, past the client's timeout), ``"drop"`` (closes the connection without a response), ``"401"``,
``"404"`` (model not found), ``"garbage"`` (unparseable text), ``"wrong_count"`` (one answer too few), ``"hang"``
(no answer until the server stops). A wrong key (``api_key``) gives a real 401 and an unknown model
(``known_models``) a real 404. The server runs in a daemon thread, serves at most ``max_requests`` and stops itself
after ``lifetime_s``.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

MARKER = re.compile(r"\[\[s=(-?\d+)\]\]")


def default_formatter(model: str, choices: list[str]) -> str:
    return "\n\n".join(f"Output ({c})" for c in choices)


class ScriptedOpenAIServer:
    def __init__(
        self,
        *,
        answers_per_request: int | Callable[[str], int] = 1,
        formatter: Callable[[str, list[str]], str] = default_formatter,
        faults: list[str] | None = None,
        api_key: str | None = None,
        known_models: set[str] | None = None,
        slow_seconds: float = 3.0,
        lifetime_s: float = 120.0,
        max_requests: int = 5000,
        delay_s: float = 0.0,
    ):
        self.answers_per_request = answers_per_request
        self.formatter = formatter
        self.faults = list(faults or [])
        self.api_key = api_key
        self.known_models = known_models
        self.slow_seconds = slow_seconds
        self.max_requests = max_requests
        self.delay_s = delay_s  # added to every answer, to make concurrent requests overlap
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.log: list[dict] = []  # every request: path, model, fault, status, markers
        self.answered = Counter()  # marker tuples of requests answered 200 (what a real API would bill)
        self._stop = threading.Event()
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body are two writes: with Nagle on, the body waits for the client's delayed ACK (~40 ms a
            # response on Linux), an artifact no real API server has (they set TCP_NODELAY)
            disable_nagle_algorithm = True

            def log_message(self, *a):  # keep test output clean
                pass

            def do_POST(self):
                with srv.lock:
                    srv.in_flight += 1
                    srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
                try:
                    srv._handle(self)
                finally:
                    with srv.lock:
                        srv.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True

    # -- lifecycle --
    def start(self) -> "ScriptedOpenAIServer":
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._timer.cancel()
            self.httpd.shutdown()
            self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- counters --
    def count(self, status: int | None = None, fault: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.log if (status is None or r["status"] == status)
                       and (fault is None or r["fault"] == fault))

    # -- request handling --
    def _send(self, h, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        try:
            h.wfile.write(data)
            h.wfile.flush()
        except OSError:  # the client gave up (timeout) -- fine
            pass

    def _handle(self, h) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        req = json.loads(h.rfile.read(length) or b"{}")
        path = h.path.rstrip("/")
        if path.endswith("/chat/completions"):
            prompt = "\n".join(str(m.get("content", "")) for m in req.get("messages", []))
            kind = "chat"
        elif path.endswith("/completions"):
            prompt = req.get("prompt") if isinstance(req.get("prompt"), str) else "".join(req.get("prompt") or [])
            kind = "text"
        else:
            return self._send(h, 404, {"error": {"message": f"unknown path {path}"}})
        model = req.get("model", "")
        markers = tuple(int(m) for m in MARKER.findall(prompt))
        with self.lock:
            n = len(self.log)
            fault = self.faults.pop(0) if self.faults else "ok"
            if n >= self.max_requests:
                fault = "503"
            entry = {"path": kind, "model": model, "fault": fault, "status": None, "markers": markers,
                     "prompt": prompt, "time": time.time(), "auth": h.headers.get("Authorization", "")}
            self.log.append(entry)
        auth = h.headers.get("Authorization", "")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            fault = "401"
        elif self.known_models is not None and model not in self.known_models and fault == "ok":
            fault = "404"

        def finish(status, body, headers=None):
            entry["status"] = status
            self._send(h, status, body, headers)

        if fault == "401":
            got = auth.removeprefix("Bearer ")  # a hostile server echoing the key back in full
            return finish(401, {"error": {"message": f"Incorrect API key provided: {got}", "type": "invalid_request_error",
                                          "code": "invalid_api_key"}})
        if fault == "404":
            return finish(404, {"error": {"message": f"The model `{model}` does not exist or you do not have access to it.",
                                          "type": "invalid_request_error", "code": "model_not_found"}})
        if fault in ("429", "429s"):
            hdr = {"retry-after-ms": "150"} if fault == "429" else {"Retry-After": "1"}
            return finish(429, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}, hdr)
        if fault in ("500", "503"):
            return finish(int(fault), {"error": {"message": "server error", "type": "server_error"}})
        if fault == "drop":
            entry["status"] = "dropped"
            h.close_connection = True
            try:
                import socket

                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault == "hang":
            entry["status"] = "hung"
            self._stop.wait(60)
            return
        if fault == "slow":
            self._stop.wait(self.slow_seconds)
        elif self.delay_s:
            self._stop.wait(self.delay_s)

        n_ans = self.answers_per_request(model) if callable(self.answers_per_request) else self.answers_per_request
        pairs = [markers[i : i + 2] for i in range(0, len(markers) - 1, 2)]
        choices = ["b" if b > a else "a" for a, b in pairs]
        choices += ["a"] * max(0, n_ans - len(choices))
        if fault == "wrong_count":
            choices = choices[:-1]
        text = "I find both outputs equally fine." if fault == "garbage" else self.formatter(model, choices)
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4 + 1}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            obj = "text_completion"
        body = {"id": f"cmpl-{n}", "object": obj, "created": int(time.time()), "model": model, "choices": [choice],
                "usage": usage}
        with self.lock:
            if fault != "slow":
                self.answered[markers] += 1
        finish(200, body)
