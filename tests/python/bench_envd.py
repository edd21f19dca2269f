"""The official E2B Python SDK's side of `cargo xtask bench` (envd and sandboxd benches).

Run by crates/courier-envd/examples/bench_envd.rs (debug mode: ``E2B_DEBUG=true`` and
``E2B_SANDBOX_URL`` at a local courier-envd) and by
crates/courier-sandboxd/examples/bench_sandboxd.rs (``--sandbox-id``: ``E2B_API_URL``,
``E2B_SANDBOX_URL`` and ``E2B_API_KEY`` at a local courier-sandboxd; the sandbox is
connected to, never created or killed here).

Prints one JSON object on the last line of stdout: seconds per ``run("true")`` round trip
(every sample), and MB/s for stdout streaming, upload and download (absent when their
size is 0). Measures only; asserts no timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from e2b import Sandbox


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--stream-mb", type=int, default=200)
    parser.add_argument("--file-mb", type=int, default=64)
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--sandbox-id")
    parser.add_argument(
        "--home",
        help="HOME for every command (an empty dir keeps the host's login profile out)",
    )
    args = parser.parse_args()

    if args.sandbox_id:
        sbx = Sandbox.connect(args.sandbox_id)
    else:
        if os.environ.get("E2B_DEBUG", "").lower() != "true":
            print("bench_envd.py: set E2B_DEBUG=true (local courier-envd only)", file=sys.stderr)
            return 2
        sbx = Sandbox.create()

    envs = {"HOME": args.home} if args.home else None
    out: dict = {}
    sbx.commands.run("true", envs=envs)  # warm the connection pool
    samples = []
    for _ in range(args.runs):
        start = time.perf_counter()
        sbx.commands.run("true", envs=envs)
        samples.append(time.perf_counter() - start)
    out["run_true_s"] = samples

    if args.stream_mb > 0:
        received = 0

        def count(chunk: str) -> None:
            nonlocal received
            received += len(chunk)

        start = time.perf_counter()
        sbx.commands.run(
            f"head -c {args.stream_mb}M /dev/zero",
            on_stdout=count,
            envs=envs,
            timeout=600,
            request_timeout=600,
        )
        elapsed = time.perf_counter() - start
        out["stream_mb_s"] = received / 1e6 / elapsed
        out["stream_bytes"] = received

    if args.file_mb > 0:
        data = os.urandom(args.file_mb * 1024 * 1024)
        path = os.path.join(args.dir, "bench-python.bin")
        start = time.perf_counter()
        sbx.files.write(path, data, request_timeout=600)
        out["upload_mb_s"] = len(data) / 1e6 / (time.perf_counter() - start)
        start = time.perf_counter()
        back = sbx.files.read(path, format="bytes", request_timeout=600)
        out["download_mb_s"] = len(back) / 1e6 / (time.perf_counter() - start)
        if len(back) != len(data):
            print(f"bench_envd.py: read {len(back)} bytes, wrote {len(data)}", file=sys.stderr)
            return 1
        sbx.files.remove(path)

    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
