"""Speed and memory of the assistant on this machine: prints figures, asserts nothing.

    python benchmarks/bench_ask.py [--index DIR] [--rounds 3] [--answerer reader|extractive]

Warm `ask` over every eval question (p50 / p95 per answer kind and overall), the cold start of `assistant ask` (process start to
first answer) and its peak memory, cold `assistant index status` and `assistant index add` of one article (wall, on a copy
of the index), a full index build, and the process's peak memory. The first line says which CPU kind gave the figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_kind() -> str:
    """AMX, AVX-512 or AVX2, and whether it has VNNI / BF16: the figures differ by a factor of two or more."""
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return "unknown CPU"
    kind = "AMX" if "amx_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    # what decides the reader's runtime (assistant/onnx_runtime.py): int8 dot products, native bf16
    extras = [name for name, flag in (("VNNI", {"avx512_vnni", "avx_vnni"}), ("BF16", {"avx512_bf16"}))
              if flags & flag and kind != "AMX"]
    return f"{kind}{' + ' + ' + '.join(extras) if extras else ''}, {os.cpu_count()} cores"


# Runs the CLI in a fresh interpreter and reports its own peak RSS (VmHWM of its memory map): a child's rusage
# would report this benchmark's own peak, which Linux hands to a child at exec.
CLI = """import sys
from assistant.cli import main
try:
    rc = main(sys.argv[1:])
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    sys.stderr.write("PEAK_KB " + peak.split()[1] + "\\n")
sys.exit(rc)
"""


def timed(args: list[str], env: dict, rounds: int = 2) -> tuple[float, float]:
    """(best wall seconds, peak RSS MB of that run) of `assistant ARGS...` in a fresh process."""
    best, rss = float("inf"), 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CLI, *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"assistant {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
        if wall < best:
            peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_KB ")]
            best, rss = wall, int(peak[-1].split()[1]) / 1024
    return best, rss


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1)]


def bounded_request_cost(assistant, answerer: str, rounds: int = 10) -> None:
    """A plain question against the largest request the validation layer lets through (and a far larger one)."""
    from assistant import validation

    question = "英伟达是谁创立的?"
    turn = {"question": "问" * validation.MAX_TURN_CHARS, "answer": "答" * validation.MAX_TURN_CHARS}
    cases = {"plain question": ("上海为什么要发展人工智能产业?", []),
             "follow-up (history rewritten)": ("他在哪一年创立了英伟达?", [{"question": question, "answer": "黄仁勋"}]),
             "max-size request": ("问" * (validation.MAX_QUESTION_CHARS - 1) + "?",
                                  [turn] * validation.MAX_HISTORY_TURNS),
             "450k-char history (trimmed)": (question, [turn] * 450)}
    base = None
    for name, (q, history) in cases.items():
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            assistant.ask(q, history, answerer=answerer)
            times.append((time.perf_counter() - t) * 1000)
        p50 = statistics.median(times)
        base = base or p50
        ratio = f" ({p50 / base:.1f}x the plain question)" if name != "plain question" else ""
        print(f"  {name:<30} p50 {p50:.1f} ms, max {max(times):.1f} ms{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", default=os.environ.get("ASSISTANT_INDEX_DIR", str(ROOT / "index")))
    parser.add_argument("--corpus", default=os.environ.get("ASSISTANT_CORPUS_DIR", str(ROOT / "corpus")))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--answerer", default=None, help="default: the configured answerer (reader)")
    args = parser.parse_args()
    from assistant.onnx_runtime import bf16_is_fast, reader_runtime
    from assistant.reader import READER_FILE

    runtime = reader_runtime(READER_FILE)
    reader = ({"int8": "ONNX Runtime int8", "uint8": "ONNX Runtime int8 (unsigned weights)",
               "onnx": "ONNX Runtime float32"}.get(runtime)
              or f"torch {'bf16' if bf16_is_fast() else 'float32'}")  # bf16_is_fast imports torch: only here
    print(f"CPU: {cpu_kind()}; runtime: {os.environ.get('ASSISTANT_RUNTIME', 'auto')} (ASSISTANT_RUNTIME), "
          f"the reader in {reader}")

    from assistant import Assistant
    from assistant.config import Settings
    from assistant.embeddings import get_embeddings
    from assistant.indexing import build_index
    from assistant.scoring import load_questions

    with tempfile.TemporaryDirectory() as tmp:
        emb = get_embeddings(Settings.load().embed_model)
        emb.encode_documents(["warm up"])
        started = time.perf_counter()
        report = build_index(Path(args.corpus), Path(tmp) / "index", emb, full=True)
        build_s = time.perf_counter() - started
    print(f"full index build (model already loaded): {build_s:.2f} s, {report.chunks} chunks, "
          f"unknown-token share {report.unknown_token_share:.1%}")

    load_started = time.perf_counter()
    assistant = Assistant.load(args.index)
    assistant.warm("上海")
    print(f"Assistant.load (model already loaded) + warm-up (one ask, the answerers' late loads): "
          f"{time.perf_counter() - load_started:.2f} s")
    questions = load_questions(ROOT / "corpus" / "eval" / "questions.jsonl")
    answerer = args.answerer or assistant.settings.answerer
    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for q in questions:
            t = time.perf_counter()
            answer = assistant.ask(q.question, q.history, answerer=answerer)
            ms = (time.perf_counter() - t) * 1000
            latencies.append(ms)
            by_kind.setdefault("refused" if answer.refused else answer.kind, []).append(ms)
    print(f"warm ask, {answerer}, {len(questions)} questions x {args.rounds}: p50 {statistics.median(latencies):.1f} ms, "
          f"p95 {percentile(latencies, 95):.1f} ms, max {max(latencies):.1f} ms")
    for kind, values in sorted(by_kind.items()):
        print(f"  {kind:<12} n={len(values):<4} p50 {statistics.median(values):.1f} ms, p95 {percentile(values, 95):.1f} ms")
    bounded_request_cost(assistant, answerer)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")

    env = {**os.environ, "ASSISTANT_INDEX_DIR": args.index}
    cold, rss = timed(["ask", "英伟达是谁创立的?"], env)
    print(f"cold start `assistant ask` (process start to first answer): {cold:.2f} s best of 2, peak RSS {rss:.0f} MB")
    cold, rss = timed(["index", "status"], env)
    print(f"cold `assistant index status`: {cold:.2f} s, peak RSS {rss:.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        import shutil

        shutil.copytree(args.index, Path(tmp) / "index")
        shutil.copytree(args.corpus, Path(tmp) / "corpus")
        article = Path(tmp) / "new-article.txt"
        article.write_text("标题:测试新增文章\n\n" + "这是一段用来测量新增文章耗时的正文,讲述一家公司的成立与发展。" * 20,
                           encoding="utf-8")
        add_env = {**env, "ASSISTANT_INDEX_DIR": str(Path(tmp) / "index"), "ASSISTANT_CORPUS_DIR": str(Path(tmp) / "corpus")}
        wall, rss = timed(["index", "add", str(article)], add_env, rounds=1)
    print(f"cold `assistant index add` of one short article (wall): {wall:.2f} s, peak RSS {rss:.0f} MB")

if __name__ == "__main__":
    main()
