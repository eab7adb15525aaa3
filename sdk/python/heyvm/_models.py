"""Results, errors and request helpers shared by the sync and async clients."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

DEFAULT_URL = "http://127.0.0.1:34099"
WORKSPACE = "/workspace"


class HeyvmError(Exception):
    """An error answer from the API: HTTP status, stable code, message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message} (HTTP {status})")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class CommandResult:
    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    error: Optional[str] = None


class CommandExitError(HeyvmError):
    """Raised by `commands.run(..., check=True)` when the exit code is not 0."""

    def __init__(self, result: CommandResult):
        super().__init__(200, "command_failed", f"exit code {result.exit_code}: {result.stderr.strip()[-500:]}")
        self.result = result
        self.stdout, self.stderr, self.exit_code = result.stdout, result.stderr, result.exit_code


@dataclass
class SandboxInfo:
    sandbox_id: str
    name: str
    status: str
    raw: Dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_json(cls, v: Dict[str, Any]) -> "SandboxInfo":
        return cls(sandbox_id=v["id"], name=v.get("name", ""), status=v.get("status", ""), raw=v)


@dataclass
class EntryInfo:
    name: str
    path: str
    type: str  # "file" or "dir"
    size: int


def settings(base_url: Optional[str], api_key: Optional[str]) -> Tuple[str, Dict[str, str]]:
    url = (base_url or os.environ.get("HEYVM_API_URL") or DEFAULT_URL).rstrip("/")
    key = api_key or os.environ.get("HEYVM_API_KEY")
    return url, ({"Authorization": f"Bearer {key}"} if key else {})


def check(resp: Any) -> Any:
    """The JSON body of a 2xx answer, else a HeyvmError."""
    if 200 <= resp.status_code < 300:
        return resp.json() if resp.content else None
    try:
        body = resp.json()
        code, message = body.get("error", "error"), body.get("message", resp.text)
    except ValueError:
        code, message = "error", resp.text
    raise HeyvmError(resp.status_code, code, message)


def split_path(path: str) -> Tuple[str, str]:
    """An absolute sandbox path as (mount_path, path under it)."""
    if path == WORKSPACE:
        return WORKSPACE, ""
    if path.startswith(WORKSPACE + "/"):
        return WORKSPACE, path[len(WORKSPACE) + 1 :]
    if not path.startswith("/"):
        return WORKSPACE, path
    return WORKSPACE, path


def exec_body(cmd: str, timeout: Optional[float], cwd: Optional[str], envs: Optional[Dict[str, str]]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"command": "/bin/sh", "args": ["-c", cmd]}
    if timeout is not None:
        body["timeout_secs"] = float(timeout)
    if cwd:
        body["cwd"] = cwd
    if envs:
        body["env"] = dict(envs)
    return body


def result_from(v: Dict[str, Any]) -> CommandResult:
    return CommandResult(stdout=v.get("stdout", ""), stderr=v.get("stderr", ""), exit_code=int(v.get("exit_code", -1)), timed_out=bool(v.get("timed_out", False)))


def encode(data: Any) -> str:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return base64.b64encode(raw).decode()


def entries(v: Dict[str, Any], base: str) -> List[EntryInfo]:
    out = []
    for f in v.get("files", []):
        kind = "dir" if f.get("is_dir") or f.get("type") == "dir" else "file"
        out.append(EntryInfo(name=f["name"], path=f"{base.rstrip('/')}/{f['name']}", type=kind, size=int(f.get("size", 0))))
    return out


class SseParser:
    """Feeds text lines of an event stream; calls back per (event, data)."""

    def __init__(self, on_event: Callable[[str, Dict[str, Any]], None]):
        self.on_event, self.name, self.data = on_event, "message", []

    def line(self, line: str) -> None:
        if line == "":
            if self.data:
                self.on_event(self.name, json.loads("\n".join(self.data)))
            self.name, self.data = "message", []
        elif line.startswith("event:"):
            self.name = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].lstrip())


class StreamCollector:
    """Assembles a CommandResult from exec/stream events, calling the hooks."""

    def __init__(self, on_stdout: Optional[Callable[[str], Any]], on_stderr: Optional[Callable[[str], Any]]):
        self.on_stdout, self.on_stderr = on_stdout, on_stderr
        self.out: List[str] = []
        self.err: List[str] = []
        self.result: Optional[CommandResult] = None

    def __call__(self, name: str, data: Dict[str, Any]) -> None:
        if name == "stdout":
            self.out.append(data.get("data", ""))
            if self.on_stdout:
                self.on_stdout(data.get("data", ""))
        elif name == "stderr":
            self.err.append(data.get("data", ""))
            if self.on_stderr:
                self.on_stderr(data.get("data", ""))
        elif name == "exit":
            self.result = CommandResult("".join(self.out), "".join(self.err), int(data.get("exit_code", -1)), bool(data.get("timed_out", False)))
        elif name == "error":
            raise HeyvmError(200, data.get("error", "exec_failed"), data.get("message", str(data)))

    def finish(self) -> CommandResult:
        if self.result is None:
            raise HeyvmError(0, "stream_ended", "the exec stream ended without an exit event")
        return self.result
