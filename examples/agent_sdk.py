"""Seed 001's Python agent script, written with the heyvm SDK instead of
shelling out to the CLI: create a sandbox running an app, wait for it,
run a command inside, print the URL, clean up.

    PYTHONPATH=sdk/python HEYVM_API_URL=http://127.0.0.1:34099 python3 examples/agent_sdk.py
"""

import time

from heyvm import Sandbox

SERVER = """
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""

sbx = Sandbox.create(name="agent-worker", size_class="small", ttl_seconds=3600)
try:
    sbx.files.write("/workspace/server.py", SERVER)
    sbx.commands.run("cd /workspace && nohup python3 server.py >/dev/null 2>&1 &", check=True)
    for _ in range(100):
        if sbx.commands.run("python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health')\"").exit_code == 0:
            break
        time.sleep(0.2)
    print(f"Deployed: http://{sbx.get_host(8080)}")
    result = sbx.commands.run("python3 -c 'import sys; print(sys.version)'")
    print(f"Python version: {result.stdout.strip()}")
finally:
    sbx.kill()
