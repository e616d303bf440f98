"""Server memory across index create/delete cycles with distinct encoder configs.

    .venv/bin/python bench/encoder_memory.py [--code .] [--cycles 10]

Starts ``foveal serve`` (``--code`` on ``PYTHONPATH``, so an older checkout can be measured) with an empty
``FOVEAL_HOME``, then per cycle: creates an index whose encoder has another TempScale temperature (0.90, 0.91, ...:
other weights, so another loaded model), runs one dense search on it (the model encodes a query), deletes the index,
and reads the server's resident memory (``VmRSS`` in ``/proc/<pid>/status``). Prints one JSON line per cycle and a
summary: RSS after the first cycle, after the last, and the growth between them. The issue's bound: growth within
100 MB over 10 cycles.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--cycles", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="foveal-memory-") as home:
        env = dict(os.environ, FOVEAL_HOME=home, PYTHONPATH=str(args.code.resolve()), HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", FOVEAL_QUEUE="embedded")
        port = free_port()
        # cwd: "python -m" puts the working directory first on sys.path, before PYTHONPATH
        server = subprocess.Popen([sys.executable, "-m", "foveal.cli", "serve", "--port", str(port)], env=env,
                                  cwd=args.code.resolve(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not become ready")
                time.sleep(0.3)
            print(json.dumps({"cycle": 0, "rss_mib": round(rss_mib(server.pid), 1)}), flush=True)
            after = []
            with httpx.Client(base_url=base, timeout=300) as http:
                for cycle in range(1, args.cycles + 1):
                    name = f"tau{cycle}"
                    tau = round(0.9 + 0.01 * (cycle - 1), 3)
                    response = http.post("/v1/indexes", json={"name": name,
                                                              "config": {"encoder": {"attention_temperature": tau}}})
                    response.raise_for_status()
                    http.post(f"/v1/indexes/{name}/search", json={"query": "tides", "pipeline": "dense"}
                              ).raise_for_status()
                    encoder_config = http.get(f"/v1/indexes/{name}").json()["config"]["encoder"]
                    assert encoder_config["attention_temperature"] == tau, encoder_config
                    http.delete(f"/v1/indexes/{name}").raise_for_status()
                    after.append(rss_mib(server.pid))
                    print(json.dumps({"cycle": cycle, "attention_temperature": tau, "rss_mib": round(after[-1], 1),
                                      "anon_mib": round(rss_mib(server.pid, "RssAnon"), 1),
                                      "file_mib": round(rss_mib(server.pid, "RssFile"), 1)}),
                          flush=True)
            print(json.dumps({"code": str(args.code.resolve()), "cycles": args.cycles,
                              "rss_after_first_mib": round(after[0], 1), "rss_after_last_mib": round(after[-1], 1),
                              "growth_mib": round(after[-1] - after[0], 1)}), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
