"""Helpers for the notebooks' tests. They are not part of the `dynvfx` package, which never imports them.

The notebooks run in this folder (the test runner, nbdev and Jupyter all start them here), so a notebook
imports these with `from test_helpers import ...`.

- `error_text`: the one-line message of the `DynVFXError` a call raises.
- `ScriptedChatServer` and its parts (`Reply`, `chat_completion`, `error_reply`, `RecordedRequest`,
  `answer_by_schema`): an OpenAI-compatible chat-completions server on 127.0.0.1 that answers from a script and
  records every request, so that the real openai client can be tested over HTTP without a model (the assistant's
  and the command line's notebooks).
- `small_file_system` and `remount`: a tiny tmpfs (or a read-only one) for the tests of a full disk and of a
  folder that cannot be written; they need root, and yield None elsewhere so the test can say it is skipped.
- `%%toy_only`, a cell magic registered when this module is imported in a notebook: the cell runs when the
  notebook's `lesson` (a `dynvfx.config.LessonSettings`) is the toy, and is skipped with a line saying so when the
  lesson runs on a real model. Checks that compare exact values on tiny or toy models carry it.
"""
from __future__ import annotations

import ast
import json
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def error_text(f: Callable[[], object]) -> str:
    "The one-line message that `f()` raises as a `DynVFXError`; fails when it raises none, or another exception."
    try: f()
    except Exception as e:
        # matched by name: the core notebook defines the class itself, so its errors are not dynvfx.core's class
        if type(e).__name__ != "DynVFXError": raise
        return str(e)
    raise AssertionError("no DynVFXError was raised")


# A scripted OpenAI-compatible chat-completions server, for the assistant's and the command line's tests


@dataclass
class Reply:
    "One scripted answer of `ScriptedChatServer`."
    body: Any = None                      # JSON-able data, or a str sent as it is
    status: int = 200                     # HTTP status
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (e.g. retry-after-ms)
    delay_s: float = 0.0                  # wait this long before answering (to provoke timeouts)


def chat_completion(content: Any = None, *, refusal: str | None = None, finish_reason: str = "stop",
                    model: str = "scripted-vlm") -> Reply:
    "A chat-completions answer whose message carries `content` (models and dicts as JSON text)."
    if isinstance(content, BaseModel): content = content.model_dump_json()
    elif content is not None and not isinstance(content, str): content = json.dumps(content)
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return Reply({"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(datetime.now().timestamp()),
                  "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish_reason,
                                               "logprobs": None}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def error_reply(status: int, message: str, retry_after_s: float | None = None, retry: bool | None = None) -> Reply:
    "An OpenAI-style error answer; `retry_after_s` sets the retry-after-ms header, `retry` the x-should-retry one."
    headers = {"retry-after-ms": str(round(retry_after_s * 1000))} if retry_after_s is not None else {}
    if retry is not None: headers["x-should-retry"] = str(retry).lower()
    error = {"message": message, "type": "scripted_error", "param": None, "code": None}
    return Reply({"error": error}, status, headers)


@dataclass
class RecordedRequest:
    "One request as the server received it."
    path: str
    headers: dict[str, str]               # lower-case names
    body: Any                             # the parsed JSON body (or the raw text if it was not JSON)


class _ChatHandler(BaseHTTPRequestHandler):
    "Answers each POST with the script's next reply, after recording the request."
    def log_message(self, *args: Any) -> None: pass  # keep test output clean

    def do_POST(self) -> None:
        script: ScriptedChatServer = self.server.script
        raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode("utf-8", "replace")
        try: body = json.loads(raw)
        except json.JSONDecodeError: body = raw
        request = RecordedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        reply = script._reply_to(request)
        if reply.delay_s and script._stopping.wait(reply.delay_s): return
        payload = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode("utf-8")
        try:
            self.send_response(reply.status)
            for name, value in {"content-type": "application/json", **reply.headers}.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload))); self.end_headers(); self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError): pass  # the client gave up (a timeout)


class _QuietServer(ThreadingHTTPServer):
    "A threading HTTP server that neither waits for its threads on close nor prints the errors of dropped clients."
    daemon_threads, block_on_close = True, False
    def handle_error(self, request: Any, client_address: Any) -> None: pass


class ScriptedChatServer:
    "A chat-completions server on 127.0.0.1 that answers from a script and records every request."
    def __init__(self, replies: list[Reply] | None = None,
                 default: Reply | Callable[[RecordedRequest], Reply] | None = None):
        self.replies, self.default, self.requests = list(replies or []), default, []  # script, fallback, what came in
        self._lock, self._stopping = threading.Lock(), threading.Event()
        self._http = _QuietServer(("127.0.0.1", 0), _ChatHandler)
        self._http.script = self

    @property
    def base_url(self) -> str: return f"http://127.0.0.1:{self._http.server_address[1]}/v1"
    def __enter__(self) -> ScriptedChatServer: return self.start()
    def __exit__(self, *exc: Any) -> None: self.stop()

    def start(self) -> ScriptedChatServer:
        "Serve in a background thread; returns the server."
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        "Stop serving and close the port (slow replies still waiting are dropped)."
        self._stopping.set(); self._http.shutdown(); self._http.server_close()

    def _reply_to(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if request.path.rstrip("/") != "/v1/chat/completions": return error_reply(404, f"no route {request.path}")
            if self.replies: return self.replies.pop(0)
        if callable(self.default): return self.default(request)
        return self.default or error_reply(400, "the script has no reply left", retry=False)


def answer_by_schema(answers: Mapping[str, Any]) -> Callable[[RecordedRequest], Reply]:
    "A default reply that answers each structured-output request with `answers[schema name]`."
    def reply(request: RecordedRequest) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        name = (body.get("response_format") or {}).get("json_schema", {}).get("name")
        if name not in answers: return error_reply(400, f"no scripted answer for schema {name!r}")
        return chat_completion(answers[name])
    return reply


@contextmanager
def small_file_system(size: str = "256k", read_only: bool = False) -> Iterator[Path | None]:
    "A fresh tmpfs of `size` mounted on a temporary folder; None where mounting is not allowed (not root, no mount)."
    with tempfile.TemporaryDirectory() as folder:
        options = f"size={size}" + (",ro" if read_only else "")
        try: mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", folder],
                                      capture_output=True).returncode == 0
        except OSError: mounted = False  # no mount program here
        try: yield Path(folder) if mounted else None
        finally:
            if mounted: subprocess.run(["umount", folder], check=True)


def remount(disk: Path, options: str) -> None:
    "Change a mounted tmpfs's options (its size, read-only or not)."
    subprocess.run(["mount", "-o", f"remount,{options}", str(disk)], check=True)


def toy_only(line: str, cell: str) -> Any:
    "Cell magic: run the cell (its last expression shown) unless the notebook's `lesson` is a real model."
    from IPython import get_ipython
    shell = get_ipython()
    lesson = shell.user_ns.get("lesson")
    if lesson is not None and not lesson.is_toy:
        print(f"skipped: {line.strip() or 'a check of exact values on tiny or toy models'}; "
              f"the lesson runs on {lesson.model}")
        return None
    *body, last = ast.parse(shell.transform_cell(cell)).body or [ast.Pass()]
    exec(compile(ast.Module(body=body, type_ignores=[]), "<toy_only cell>", "exec"), shell.user_ns)
    if isinstance(last, ast.Expr):
        return eval(compile(ast.Expression(body=last.value), "<toy_only cell>", "eval"), shell.user_ns)
    exec(compile(ast.Module(body=[last], type_ignores=[]), "<toy_only cell>", "exec"), shell.user_ns)
    return None


def _register_toy_only() -> None:
    "Make `%%toy_only` known to the IPython shell this module is imported in (none outside IPython)."
    try: from IPython import get_ipython
    except ImportError: return
    shell = get_ipython()
    if shell is not None: shell.register_magic_function(toy_only, "cell", "toy_only")


_register_toy_only()
