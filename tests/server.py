"""A real `assistant serve` process over a copy of the seed article, for the browser and API tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .conftest import SEED


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(root: Path, *serve_args: str, env: dict[str, str] | None = None):
    """Index the seed article under `root`, serve it on a free port, yield the base URL (no trailing /)."""
    extra = env or {}
    (root / "corpus" / "articles").mkdir(parents=True)
    shutil.copy(SEED, root / "corpus" / "articles" / SEED.name)
    env = {**os.environ, **extra, "ASSISTANT_CORPUS_DIR": str(root / "corpus"), "ASSISTANT_INDEX_DIR": str(root / "index"),
           "ASSISTANT_DATA_DIR": str(root / "data")}
    subprocess.run([sys.executable, "-m", "assistant", "index", "build"], env=env, check=True, capture_output=True)
    port = free_port()
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "assistant", "serve", "--port", str(port), *serve_args],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert proc.poll() is None, (root / "server.log").read_text()
            time.sleep(0.5)
    time.sleep(1.0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # open keep-alive connections can hold the graceful shutdown
            proc.kill()
            proc.wait()
