#!/usr/bin/env python3
"""How long a real request waits while idle connections hold a listener.

Starts `BINARY serve` on loopback (port 0, a fresh data dir), opens N idle
connections that send nothing (`https`: TLS handshakes completed; `admin`:
plain TCP), then times one request with curl: an authenticated delivery
(`https`) or GET /healthz (`admin`). Needs python3 and curl.

    benches/idle-connections.py BINARY https 1024
    benches/idle-connections.py BINARY admin 64
"""
import os, re, socket, ssl, subprocess, sys, tempfile, time

binary, listener, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = tempfile.mkdtemp()
config = os.path.join(data, "auditsink.toml")
with open(config, "w") as f:
    f.write(f'data_dir = "{data}/data"\n[server]\nlisten = "127.0.0.1:0"\n'
            '[admin]\nlisten = "127.0.0.1:0"\n'
            '[[source]]\nname = "bench"\npath = "/audit-logs"\nauthorization = "Bearer bench"\n')
server = subprocess.Popen([binary, "serve", "--config", config],
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
pattern = r"listening on https://127.0.0.1:(\d+)" if listener == "https" else r"admin on http://127.0.0.1:(\d+)"
port = None
for line in server.stderr:
    match = re.search(pattern, line)
    if match:
        port = int(match.group(1))
        break
try:
    if listener == "https":
        context = ssl._create_unverified_context()
        held = [context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
                for _ in range(n)]
        body = os.path.join(data, "batch")
        with open(body, "w") as f:
            f.write("CEF:0|KongInc|Konnect|1.0|c|n|1|rt=1764100000000 id=bench\n")
        command = ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer bench",
                   "--data-binary", "@" + body, f"https://127.0.0.1:{port}/audit-logs"]
    else:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        time.sleep(0.3)
        command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/healthz"]
    started = time.monotonic()
    status = subprocess.run(command + ["--max-time", "120"], capture_output=True, text=True).stdout
    print(f"{listener}: {n} idle connections open, request answered {status} in {time.monotonic() - started:.3f} s")
finally:
    server.kill()
