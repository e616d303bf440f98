"""Start-up cost of one CLI process: user+sys CPU seconds and peak RSS, median of N runs, with GNU time.

    .venv/bin/python bench/startup.py [--code .] [--runs 3] [--docs 200]

Builds a small index (``--docs`` documents that carry precomputed 384-d vectors, so no model is needed to ingest
them) in a temporary ``FOVEAL_HOME``, then times whole processes of ``python -m foveal.cli`` run with ``--code`` on
``PYTHONPATH`` (point it at an older checkout to measure that one):

* ``search "river moon" --pipeline bm25 --index small``
* ``stats --index small`` (older code has no ``stats`` command: there the same work is done by
  ``python -c "Engine().get('small').stats()"``)
* ``ingest more.jsonl --index small`` of 50 further vector-carrying documents (a fresh file each run, so every run
  writes)

Prints one JSON line per command: ``{"command", "cpu_s", "max_rss_mib", "runs": [...]}``. Needs ``/usr/bin/time``
(``apt-get install -y time``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = "alpha beta gamma delta tide moon protein folding river ocean star planet cell gene".split()


def write_docs(path: Path, start: int, count: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for i in range(start, start + count):
            text = " ".join(rng.choice(WORDS) for _ in range(12)) + f" tok{i}"
            vector = [round(rng.gauss(0, 1), 5) for _ in range(384)]
            handle.write(json.dumps({"_id": f"d{i}", "title": f"doc {i}", "text": text, "vector": vector}) + "\n")


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(user+sys seconds, max RSS MiB) of one process, from GNU time's verbose report."""
    proc = subprocess.run(["/usr/bin/time", "-v", *argv], env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    report = proc.stderr
    user = float(re.search(r"User time \(seconds\): ([\d.]+)", report).group(1))
    system = float(re.search(r"System time \(seconds\): ([\d.]+)", report).group(1))
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1))
    return user + system, rss_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose foveal is measured")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--docs", type=int, default=200)
    args = parser.parse_args()
    code = args.code.resolve()
    has_stats = "def stats(" in (code / "foveal" / "cli.py").read_text()
    with tempfile.TemporaryDirectory(prefix="foveal-startup-") as workdir:
        work = Path(workdir)  # also the working directory: "python -m" puts it first on sys.path, not --code
        env = dict(os.environ, FOVEAL_HOME=str(work / "home"), PYTHONPATH=str(code), HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", NO_COLOR="1")
        cli = [sys.executable, "-m", "foveal.cli"]
        write_docs(work / "docs.jsonl", 0, args.docs, seed=1)
        subprocess.run([*cli, "ingest", str(work / "docs.jsonl"), "--index", "small"], env=env, cwd=work,
                       check=True, capture_output=True)
        stats = [*cli, "stats", "--index", "small"] if has_stats else [
            sys.executable, "-c", "from foveal.engine import Engine; print(Engine().get('small').stats()['documents'])"]
        commands = {
            "search --pipeline bm25": lambda run: [*cli, "search", "river moon", "--pipeline", "bm25", "--index", "small"],
            "stats": lambda run: stats,
            "ingest (vector-carrying)": lambda run: [*cli, "ingest", str(work / f"more{run}.jsonl"), "--index", "small"],
        }
        for run in range(args.runs):
            write_docs(work / f"more{run}.jsonl", args.docs + 50 * run, 50, seed=100 + run)
        for name, argv in commands.items():
            runs = [timed(argv(run), env, work) for run in range(args.runs)]
            print(json.dumps({
                "command": name,
                "cpu_s": round(statistics.median(r[0] for r in runs), 2),
                "max_rss_mib": round(statistics.median(r[1] for r in runs), 1),
                "runs": [[round(c, 2), round(m, 1)] for c, m in runs],
                "code": str(code),
            }), flush=True)


if __name__ == "__main__":
    main()
