"""How indexing and answering scale with the corpus: prints figures, asserts nothing.

    python benchmarks/bench_scale.py [--sizes 1000 8000] [--huge]   (--huge adds 50,000 articles)

Synthetic corpora of N articles, each made of consecutive sentences of the public reading-comprehension
passages in ../shared/datasets/ (DRCD dev/test, CMRC 2018 trial; ASSISTANT_DATASETS elsewhere), about 20
sentences an article. For each size: full build time and its peak memory (a fresh process), adding and
removing one article (model loaded, process start excluded), loading the index, warm query p50/p95 over
CMRC questions, and the index size on disk. Backend: the embedded index (FAISS + BM25 segments under a
SQLite catalog). "load" is
`Assistant(settings, load_index(...))` with the model already loaded: the index and everything built on it.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATASETS = Path(os.environ.get("ASSISTANT_DATASETS") or ROOT.parent / "shared" / "datasets")
FILES = ["drcd/DRCD_dev.json", "drcd/DRCD_test.json", "cmrc2018/cmrc2018_trial.json"]
SENTENCES_PER_ARTICLE = 20


def sentences() -> list[str]:
    missing = [f for f in FILES if not (DATASETS / f).exists()]
    if missing:
        sys.exit(f"bench_scale needs {', '.join(missing)} under {DATASETS} (set ASSISTANT_DATASETS); "
                 "see ../shared/datasets/README.md.")
    from assistant.language import simplified
    from assistant.squad import load_squad

    out = []
    for name in FILES:
        for passage in load_squad(DATASETS / name).passages.values():
            out.extend(s for s in re.split(r"(?<=[。!?！？])", simplified(passage.context)) if len(s.strip()) > 4)
    return out


def write_corpus(folder: Path, n: int, pool: list[str], seed: int = 0) -> None:
    rng = random.Random(seed)
    articles = folder / "articles"
    articles.mkdir(parents=True)
    for i in range(n):
        start = rng.randrange(len(pool) - SENTENCES_PER_ARTICLE)
        body = "".join(pool[start:start + SENTENCES_PER_ARTICLE])
        path = articles / f"a{i:05d}.txt"
        path.write_text(f"第{i}篇\n\n{body}\n", encoding="utf-8")
        os.utime(path, (time.time() - 3600,) * 2)  # saved an hour ago, as a real corpus is: trusted by size and time


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def full_build_in_child(corpus: Path, index: Path) -> tuple[float, float]:
    """(seconds, peak RSS MB) of `build_index` in a fresh process, the model load excluded from the time."""
    code = ("import json,resource,sys,time\n"
            "from assistant.embeddings import get_embeddings\nfrom assistant.indexing import build_index\n"
            "e=get_embeddings('intfloat/multilingual-e5-small'); e.dimension\n"
            "t=time.perf_counter(); r=build_index(sys.argv[1], sys.argv[2], e, full=True)\n"
            "print(json.dumps({'s': time.perf_counter()-t, 'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024,"
            " 'chunks': r.chunks}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(corpus), str(index)], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["s"], data["rss"], data["chunks"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000])
    parser.add_argument("--huge", action="store_true", help="also 50,000 articles")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    sizes = args.sizes + ([50_000] if args.huge else [])

    from assistant import Assistant
    from assistant.config import Settings
    from assistant.embeddings import get_embeddings
    from assistant.indexing import build_index, load_index
    from assistant.squad import load_squad

    pool = sentences()
    questions = [q.question for q in load_squad(DATASETS / FILES[2]).questions if q.answerable][: args.queries]
    embeddings = get_embeddings("intfloat/multilingual-e5-small")
    _ = embeddings.dimension
    print(f"{len(pool)} sentences; backend: embedded (FAISS + BM25 segments, SQLite catalog)")
    print("| articles | chunks | full build | peak RSS | add one | remove one | load | ask p50 / p95 | disk |")
    print("| --: | --: | --: | --: | --: | --: | --: | --: | --: |")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            corpus, index = Path(tmp) / "corpus", Path(tmp) / "index"
            write_corpus(corpus, n, pool)
            build_s, rss, chunks = full_build_in_child(corpus, index)
            extra = corpus / "articles" / "zz-new.txt"
            extra.write_text("新文章\n\n" + "".join(pool[:SENTENCES_PER_ARTICLE]) + "\n", encoding="utf-8")
            t = time.perf_counter()
            build_index(corpus, index, embeddings)
            add_s = time.perf_counter() - t
            extra.unlink()
            t = time.perf_counter()
            build_index(corpus, index, embeddings)
            remove_s = time.perf_counter() - t
            settings = Settings.load(corpus_dir=corpus, index_dir=index, data_dir=Path(tmp) / "data")
            Assistant(settings, load_index(index, embeddings), embeddings)  # the reader, once per process
            t = time.perf_counter()
            assistant = Assistant(settings, load_index(index, embeddings), embeddings)  # index + retrievers
            load_s = time.perf_counter() - t
            assistant.ask(questions[0])
            times = []
            for q in questions:
                t = time.perf_counter()
                assistant.ask(q)
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
            print(f"| {n:,} | {chunks:,} | {build_s:.0f} s | {rss / 1024:.2f} GB | {add_s:.1f} s | {remove_s:.1f} s | "
                  f"{load_s:.1f} s | {statistics.median(times):.0f} / {p95:.0f} ms | {disk_mb(index):.0f} MB |",
                  flush=True)


if __name__ == "__main__":
    main()
