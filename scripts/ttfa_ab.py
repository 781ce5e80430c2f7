"""Single-stream server TTFA of an earlier commit against the working tree, interleaved.

    python scripts/ttfa_ab.py 735839a --runs 60

Checks out ``REV`` into a temporary git worktree, makes it importable as
``streamvox`` through a shim folder on ``PYTHONPATH`` (no install needed),
starts both servers, and speaks the latency benchmark's paragraph through
each in alternating order (so drift on a shared machine hits both alike).
Prints p50 / p95 / mean of the server TTFA and the ratios now / before.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from streamvox.stream_server.bench_latency import PARAGRAPH, _percentile, _server_utterance, _start_server

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "stream_server", "codecs", "web_demo")


def _start(pythonpath: str | None) -> tuple[subprocess.Popen[bytes], str]:
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else None
    proc, port = _start_server(threads=0, max_lead=0.0, workers=None, env=env)
    return proc, f"ws://127.0.0.1:{port}/v1/stream"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the earlier commit")
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree, shim = Path(tmp) / "tree", Path(tmp) / "shim" / "streamvox"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.rev], check=True)
        try:
            shim.mkdir(parents=True)
            (shim / "__init__.py").touch()
            for name in PACKAGES:
                (shim / name).symlink_to(tree / name)
            servers = {"before": _start(str(shim.parent)), "now": _start(None)}
            ttfa: dict[str, list[float]] = {"before": [], "now": []}
            try:
                for i in range(args.runs + 2):  # the first two rounds warm both up
                    order = ("before", "now") if i % 2 == 0 else ("now", "before")
                    for name in order:
                        run = asyncio.run(_server_utterance(servers[name][1], PARAGRAPH))
                        if i >= 2:
                            ttfa[name].append(run.ttfa_server_ms)
            finally:
                for proc, _ in servers.values():
                    proc.terminate()
                    proc.wait(30)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    for name, values in ttfa.items():
        label = f"before ({args.rev})" if name == "before" else "now"
        print(
            f"{label}: server TTFA p50 {_percentile(values, 50):.1f} ms, p95 {_percentile(values, 95):.1f} ms, "
            f"mean {statistics.mean(values):.1f} ms (n={len(values)})"
        )
    now, before = ttfa["now"], ttfa["before"]
    print(
        f"ratio now / before: p50 {_percentile(now, 50) / _percentile(before, 50):.3f}, "
        f"p95 {_percentile(now, 95) / _percentile(before, 95):.3f}, "
        f"mean {statistics.mean(now) / statistics.mean(before):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
