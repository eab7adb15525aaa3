"""The asyncio client: `AsyncSandbox`, the same surface as `Sandbox` with `await`."""

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
from ._sync import HTTP_TIMEOUT


class AsyncCommands:
    def __init__(self, sbx: "AsyncSandbox"):
        self._sbx = sbx

    async def run(
        self,
        cmd: str,
        timeout: Optional[float] = None,
        on_stdout: Optional[Callable[[str], Any]] = None,
        on_stderr: Optional[Callable[[str], Any]] = None,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        check: bool = False,
    ) -> CommandResult:
        body = exec_body(cmd, timeout, cwd, envs)
        if on_stdout is None and on_stderr is None:
            result = result_from(await self._sbx._request("POST", "/execute", json=body))
        else:
            collector = StreamCollector(on_stdout, on_stderr)
            parser = SseParser(collector)
            async with self._sbx._http.stream("POST", self._sbx._path("/exec/stream"), json=body) as resp:
                if resp.status_code >= 300:
                    await resp.aread()
                    check_resp(resp)
                async for line in resp.aiter_lines():
                    parser.line(line)
            parser.line("")
            result = collector.finish()
        if check and result.exit_code != 0:
            raise CommandExitError(result)
        return result


def check_resp(resp: httpx.Response) -> Any:
    return check(resp)


class AsyncFiles:
    def __init__(self, sbx: "AsyncSandbox"):
        self._sbx = sbx

    async def write(self, path: str, data: Union[str, bytes]) -> None:
        mount, rel = split_path(path)
        await self._sbx._request("POST", "/files/upload", json={"mount_path": mount, "file_path": rel, "content": encode(data)})

    async def read(self, path: str, format: str = "text") -> Union[str, bytes]:
        mount, rel = split_path(path)
        resp = await self._sbx._http.get(self._sbx._path(f"/files/{quote(rel)}"), params={"mount_path": mount})
        if not 200 <= resp.status_code < 300:
            check(resp)
        return resp.text if format == "text" else resp.content

    async def list(self, path: str = "/workspace") -> List[EntryInfo]:
        mount, rel = split_path(path)
        return entries(await self._sbx._request("GET", "/files", params={"mount_path": mount, "path": rel}), path)


class AsyncSandbox:
    def __init__(self, info: Dict[str, Any], base_url: Optional[str] = None, api_key: Optional[str] = None):
        url, headers = settings(base_url, api_key)
        self._http = httpx.AsyncClient(base_url=url, headers=headers, timeout=HTTP_TIMEOUT)
        self.info = info
        self.sandbox_id: str = info["id"]
        self.commands = AsyncCommands(self)
        self.files = AsyncFiles(self)

    @classmethod
    async def create(
        cls,
        name: Optional[str] = None,
        image: Optional[str] = None,
        size_class: Optional[str] = None,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        **options: Any,
    ) -> "AsyncSandbox":
        body = {k: v for k, v in dict(name=name, image=image, size_class=size_class, **options).items() if v is not None}
        url, headers = settings(base_url, api_key)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=HTTP_TIMEOUT) as c:
            info = check(await c.post("/sandboxes", json=body))
        return cls(info, base_url, api_key)

    @classmethod
    async def connect(cls, sandbox_id: str, base_url: Optional[str] = None, api_key: Optional[str] = None) -> "AsyncSandbox":
        url, headers = settings(base_url, api_key)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=HTTP_TIMEOUT) as c:
            info = check(await c.get(f"/sandboxes/{quote(sandbox_id, safe='')}"))
        return cls(info, base_url, api_key)

    @staticmethod
    async def list(base_url: Optional[str] = None, api_key: Optional[str] = None) -> List[SandboxInfo]:
        url, headers = settings(base_url, api_key)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=HTTP_TIMEOUT) as c:
            return [SandboxInfo.from_json(v) for v in check(await c.get("/sandboxes"))]

    def _path(self, suffix: str) -> str:
        return f"/sandboxes/{quote(self.sandbox_id, safe='')}{suffix}"

    async def _request(self, method: str, suffix: str, **kw: Any) -> Any:
        return check(await self._http.request(method, self._path(suffix), **kw))

    async def get_info(self) -> SandboxInfo:
        self.info = await self._request("GET", "")
        return SandboxInfo.from_json(self.info)

    async def get_host(self, port: int) -> str:
        for ep in (await self._request("GET", "/proxy")).get("proxies", []):
            if ep["port"] == port and ep.get("is_public", True):
                return urlsplit(ep["url"]).netloc
        ep = await self._request("POST", "/proxy", json={"port": port})
        return urlsplit(ep["url"]).netloc

    async def start(self) -> None:
        self.info = await self._request("POST", "/start")

    async def stop(self) -> None:
        self.info = await self._request("POST", "/stop")

    async def kill(self) -> None:
        await self._request("DELETE", "")
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.kill()
        except Exception:
            pass
