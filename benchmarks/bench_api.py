"""Concurrent clients against a real server: the JSON API beside Gradio's own endpoint. Prints figures.

    python benchmarks/bench_api.py [--clients 20,50]

Starts `assistant serve` on a free port over a temporary copy of the corpus, then for each client count
sends that many questions at once to POST /api/ask and to Gradio's /ask (through gradio_client), and prints
median / p95 latency and how many answers held the expected text, then the serving process's peak RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = [("英伟达是谁创立的?", "黄仁勋"), ("苹果在哪一年IPO?", "1980"), ("商汤大装置具备多少算力?", "1.2万PetaFLOPS"),
             ("文章的作者是谁?", "忆海"), ("PayPal是谁创办的?", "莱文")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int, field: str = "VmHWM") -> float:
    """The process's high-water resident set (VmHWM), or its resident set now (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(label: str, call, n: int) -> None:
    items = [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]

    def one(item):
        question, expected = item
        started = time.perf_counter()
        answer = call(question)
        return expected in answer, (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, items))
    ms = sorted(r[1] for r in results)
    print(f"{label:<22} {n:>3} clients: median {statistics.median(ms):6.0f} ms, p95 {ms[int(0.95 * n) - 1]:6.0f} ms, "
          f"{sum(r[0] for r in results)}/{n} correct")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="20,50")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "corpus" / "articles", root / "corpus" / "articles")
        env = {**os.environ, "ASSISTANT_CORPUS_DIR": str(root / "corpus"), "ASSISTANT_INDEX_DIR": str(root / "index"),
               "ASSISTANT_DATA_DIR": str(root / "data")}
        subprocess.run([sys.executable, "-m", "assistant", "index", "build"], env=env, check=True, capture_output=True)
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "assistant", "serve", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                try:
                    if httpx.get(url + "/api/status", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            from gradio_client import Client

            client = httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=100))
            gradio = Client(url + "/", verbose=False)
            ready = _peak_rss_mb(proc.pid, "VmRSS")
            print(f"serving process ready (models loaded, no question yet): RSS {ready:.0f} MB")
            for n in (int(c) for c in args.clients.split(",")):
                run("POST /api/ask", lambda q: client.post("/api/ask", json={"question": q}).json()["answer"], n)
                run("Gradio /ask", lambda q: gradio.predict(q, [], 5, api_name="/ask")["answer"], n)
            print(f"serving process after the runs: peak RSS {_peak_rss_mb(proc.pid):.0f} MB "
                  f"(runtime {os.environ.get('ASSISTANT_RUNTIME', 'auto')})")
        finally:
            proc.terminate()  # open keep-alive connections can hold uvicorn's graceful shutdown
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
