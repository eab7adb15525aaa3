"""heyvm: isolated Linux sandboxes from Python.

    from heyvm import Sandbox

    sbx = Sandbox.create(name="demo")          # HEYVM_API_URL / HEYVM_API_KEY
    r = sbx.commands.run("echo hi")            # r.stdout, r.stderr, r.exit_code
    sbx.files.write("/workspace/a.txt", "hello")
    sbx.kill()                                 # deletes the sandbox

`AsyncSandbox` has the same surface with `await`.
"""

from ._async import AsyncSandbox
from ._models import CommandExitError, CommandResult, EntryInfo, HeyvmError, SandboxInfo
from ._sync import Sandbox

__all__ = ["Sandbox", "AsyncSandbox", "CommandResult", "CommandExitError", "EntryInfo", "HeyvmError", "SandboxInfo"]
