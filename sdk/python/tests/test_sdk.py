"""The SDK against a real daemon (HEYVM_API_URL, set by the Rust e2e test)."""

import asyncio
import uuid

import pytest

from heyvm import AsyncSandbox, CommandExitError, HeyvmError, Sandbox


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_sync_surface():
    sbx = Sandbox.create(name=name("py"), size_class="micro")
    try:
        r = sbx.commands.run("echo out; echo err >&2; exit 3")
        assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 3)
        with pytest.raises(CommandExitError) as e:
            sbx.commands.run("exit 4", check=True)
        assert e.value.exit_code == 4
        seen = []
        r = sbx.commands.run("for i in 1 2 3; do echo line-$i; done", on_stdout=seen.append)
        assert r.exit_code == 0 and "".join(seen) == r.stdout == "line-1\nline-2\nline-3\n"
        assert sbx.commands.run("sleep 5", timeout=0.5).timed_out

        sbx.files.write("/workspace/sub/hello.txt", "héllo")
        assert sbx.files.read("/workspace/sub/hello.txt") == "héllo"
        assert sbx.files.read("/workspace/sub/hello.txt", format="bytes") == "héllo".encode()
        listed = sbx.files.list("/workspace/sub")
        assert [(e.name, e.type) for e in listed] == [("hello.txt", "file")]
        with pytest.raises(HeyvmError) as e:
            sbx.files.read("/workspace/missing.txt")
        assert e.value.status == 404

        assert sbx.sandbox_id in [s.sandbox_id for s in Sandbox.list()]
        again = Sandbox.connect(sbx.sandbox_id)
        assert again.commands.run("cat /workspace/sub/hello.txt").stdout == "héllo"
        host = sbx.get_host(8080)
        assert ":" in host and "/" not in host
        assert sbx.get_host(8080) == host

        sbx.stop()
        assert sbx.get_info().status == "stopped"
        sbx.start()
        assert sbx.commands.run("cat /workspace/sub/hello.txt").stdout == "héllo"
    finally:
        sbx.kill()
    with pytest.raises(HeyvmError) as e:
        Sandbox.connect(sbx.sandbox_id)
    assert (e.value.status, e.value.code) == (404, "sandbox_not_found")


def test_async_surface():
    async def main():
        sbx = await AsyncSandbox.create(name=name("apy"), size_class="micro")
        try:
            r = await sbx.commands.run("echo hi; exit 2")
            assert (r.stdout, r.exit_code) == ("hi\n", 2)
            chunks = []
            r = await sbx.commands.run("echo streamed", on_stdout=chunks.append)
            assert "".join(chunks) == "streamed\n"
            await sbx.files.write("/workspace/a.bin", b"\x00\x01\x02")
            assert await sbx.files.read("/workspace/a.bin", format="bytes") == b"\x00\x01\x02"
            assert "a.bin" in [e.name for e in await sbx.files.list("/workspace")]
            assert sbx.sandbox_id in [s.sandbox_id for s in await AsyncSandbox.list()]
            await sbx.stop()
            await sbx.start()
            assert ":" in await sbx.get_host(3000)
        finally:
            await sbx.kill()

    asyncio.run(main())
