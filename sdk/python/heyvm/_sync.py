"""The blocking client: `Sandbox`."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Union
from urllib.parse import quote, urlsplit

import httpx

from ._models import (
    CommandExitError,
    CommandResult,
    EntryInfo,
    SandboxInfo,
    SseParser,
    StreamCollector,
    check,
    encode,
    entries,
    exec_body,
    result_from,
    settings,
    split_path,
)

# Commands may run long; the server enforces the command's own timeout.
HTTP_TIMEOUT = httpx.Timeout(30.0, read=None)


class Commands:
    def __init__(self, sbx: "Sandbox"):
        self._sbx = sbx

    def run(
        self,
        cmd: str,
        timeout: Optional[float] = None,
        on_stdout: Optional[Callable[[str], Any]] = None,
        on_stderr: Optional[Callable[[str], Any]] = None,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        check: bool = False,
    ) -> CommandResult:
        """Runs `cmd` with /bin/sh -c. A non-zero exit is returned, not
        raised, unless `check=True`. With `on_stdout`/`on_stderr` output is
        streamed to the callbacks as it is produced."""
        body = exec_body(cmd, timeout, cwd, envs)
        if on_stdout is None and on_stderr is None:
            result = result_from(self._sbx._request("POST", "/execute", json=body))
        else:
            collector = StreamCollector(on_stdout, on_stderr)
            parser = SseParser(collector)
            with self._sbx._http.stream("POST", self._sbx._path("/exec/stream"), json=body) as resp:
                if resp.status_code >= 300:
                    resp.read()
                    _check(resp)
                for line in resp.iter_lines():
                    parser.line(line)
            parser.line("")
            result = collector.finish()
        if check and result.exit_code != 0:
            raise CommandExitError(result)
        return result


class Files:
    def __init__(self, sbx: "Sandbox"):
        self._sbx = sbx

    def write(self, path: str, data: Union[str, bytes]) -> None:
        mount, rel = split_path(path)
        self._sbx._request("POST", "/files/upload", json={"mount_path": mount, "file_path": rel, "content": encode(data)})

    def read(self, path: str, format: str = "text") -> Union[str, bytes]:
        mount, rel = split_path(path)
        resp = self._sbx._http.get(self._sbx._path(f"/files/{quote(rel)}"), params={"mount_path": mount})
        _check(resp, raw=True)
        return resp.text if format == "text" else resp.content

    def list(self, path: str = "/workspace") -> List[EntryInfo]:
        mount, rel = split_path(path)
        return entries(self._sbx._request("GET", "/files", params={"mount_path": mount, "path": rel}), path)


def _check(resp: httpx.Response, raw: bool = False) -> Any:
    if raw and 200 <= resp.status_code < 300:
        return None
    return check(resp)


class Sandbox:
    """A heyvm sandbox. Build one with `create`, `connect` or from `list`."""

    def __init__(self, info: Dict[str, Any], base_url: Optional[str] = None, api_key: Optional[str] = None):
        url, headers = settings(base_url, api_key)
        self._http = httpx.Client(base_url=url, headers=headers, timeout=HTTP_TIMEOUT)
        self.info = info
        self.sandbox_id: str = info["id"]
        self.commands = Commands(self)
        self.files = Files(self)

    @classmethod
    def create(
        cls,
        name: Optional[str] = None,
        image: Optional[str] = None,
        size_class: Optional[str] = None,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        **options: Any,
    ) -> "Sandbox":
        """Creates and starts a sandbox. Extra keyword arguments are passed
        as create fields (`ttl_seconds`, `env_vars`, `open_ports`, …)."""
        body = {k: v for k, v in dict(name=name, image=image, size_class=size_class, **options).items() if v is not None}
        url, headers = settings(base_url, api_key)
        with httpx.Client(base_url=url, headers=headers, timeout=HTTP_TIMEOUT) as c:
            info = check(c.post("/sandboxes", json=body))
        return cls(info, base_url, api_key)

    @classmethod
    def connect(cls, sandbox_id: str, base_url: Optional[str] = None, api_key: Optional[str] = None) -> "Sandbox":
        url, headers = settings(base_url, api_key)
        with httpx.Client(base_url=url, headers=headers, timeout=HTTP_TIMEOUT) as c:
            info = check(c.get(f"/sandboxes/{quote(sandbox_id, safe='')}"))
        return cls(info, base_url, api_key)

    @staticmethod
    def list(base_url: Optional[str] = None, api_key: Optional[str] = None) -> List[SandboxInfo]:
        url, headers = settings(base_url, api_key)
        with httpx.Client(base_url=url, headers=headers, timeout=HTTP_TIMEOUT) as c:
            return [SandboxInfo.from_json(v) for v in check(c.get("/sandboxes"))]

    def _path(self, suffix: str) -> str:
        return f"/sandboxes/{quote(self.sandbox_id, safe='')}{suffix}"

    def _request(self, method: str, suffix: str, **kw: Any) -> Any:
        return check(self._http.request(method, self._path(suffix), **kw))

    def get_info(self) -> SandboxInfo:
        self.info = self._request("GET", "")
        return SandboxInfo.from_json(self.info)

    def get_host(self, port: int) -> str:
        """`host:port` reaching `port` inside the sandbox through the proxy
        (an endpoint is created if the port has none)."""
        for ep in self._request("GET", "/proxy").get("proxies", []):
            if ep["port"] == port and ep.get("is_public", True):
                return urlsplit(ep["url"]).netloc
        ep = self._request("POST", "/proxy", json={"port": port})
        return urlsplit(ep["url"]).netloc

    def start(self) -> None:
        self.info = self._request("POST", "/start")

    def stop(self) -> None:
        self.info = self._request("POST", "/stop")

    def kill(self) -> None:
        """Deletes the sandbox with all its files."""
        self._request("DELETE", "")
        self._http.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.kill()
        except Exception:
            pass
