"""How indexing and answering scale with the corpus: prints figures, asserts nothing.

    python benchmarks/bench_scale.py [--sizes 1000 8000] [--huge]   (--huge adds 50,000 articles)

Synthetic corpora of N articles, each made of consecutive sentences of the public reading-comprehension
passages in ../shared/datasets/ (DRCD dev/test, CMRC 2018 trial; ASSISTANT_DATASETS elsewhere), about 20
sentences an article. For each size: full build time and its peak memory (a fresh process), adding one
article and removing it with `remove_articles` (what `assistant index remove` runs; model loaded, process
start excluded), loading the index, warm query p50/p95 over CMRC questions (retrieval alone, retrieval
scoped to one article and to half of them, whole answers with the default answerer, and whole answers with
the rules answerer `extractive`, the answerer of the issue's first measurement), and the index size on disk. Backend:
the embedded index (FAISS + BM25 segments under a SQLite catalog). "load" is
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


def full_build_in_child(corpus: Path, index: Path, backend) -> tuple[float, float, int]:  # noqa: ANN001
    """(seconds, peak RSS MB, chunks) of `build_index` in a fresh process, the model load excluded from the time.

    The peak is the build process's own (exact, ru_maxrss), or, if higher, the most that the process and its
    children (the child a large build learns its words in) held together, sampled every 20 ms. (A child's own
    ru_maxrss is no measure here: a spawned child starts as a fork of the build process, and Linux keeps the
    fork's resident size in its maximum.)"""
    code = ("import json,os,resource,sys,threading,time\n"
            "from pathlib import Path\n"
            "from assistant.config import Backend\n"
            "from assistant.embeddings import get_embeddings\nfrom assistant.indexing import build_index\n"
            "def rss(pid):\n"
            "    try: return int(open(f'/proc/{pid}/statm').read().split()[1])*resource.getpagesize()/2**20\n"
            "    except OSError: return 0.0\n"
            "def tree(pid):\n"
            "    out=[pid]\n"
            "    for t in Path(f'/proc/{pid}/task').glob('*/children'):\n"
            "        try: out += [q for c in t.read_text().split() for q in tree(int(c))]\n"
            "        except OSError: pass\n"
            "    return out\n"
            "top=[0.0]; done=threading.Event()\n"
            "def sample():\n"
            "    while not done.wait(0.02): top[0]=max(top[0], sum(rss(p) for p in tree(os.getpid())))\n"
            "e=get_embeddings('intfloat/multilingual-e5-small'); e.dimension\n"
            "b=Backend(*json.loads(sys.argv[3])); threading.Thread(target=sample, daemon=True).start()\n"
            "t=time.perf_counter(); r=build_index(sys.argv[1], sys.argv[2], e, full=True, backend=b)\n"
            "s=time.perf_counter()-t; done.set()\n"
            "print(json.dumps({'s': s, 'rss': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024,"
            " 'together': top[0], 'chunks': r.chunks}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(corpus), str(index),
                          json.dumps([backend.name, backend.milvus_uri, backend.milvus_analyzer])],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  full build: own peak {data['rss']:,.0f} MB; with its children, sampled: {data['together']:,.0f} MB",
          flush=True)
    return data["s"], max(data["rss"], data["together"]), data["chunks"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000])
    parser.add_argument("--huge", action="store_true", help="also 50,000 articles")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--backend", choices=["embedded", "milvus"], default="embedded",
                        help="milvus: Milvus Lite in a file beside the index (needs the milvus extra)")
    args = parser.parse_args()
    sizes = args.sizes + ([50_000] if args.huge else [])

    from assistant import Assistant
    from assistant.assistant import remove_articles
    from assistant.config import Backend, Settings
    from assistant.embeddings import get_embeddings
    from assistant.indexing import build_index, load_index
    from assistant.squad import load_squad

    pool = sentences()
    questions = [q.question for q in load_squad(DATASETS / FILES[2]).questions if q.answerable][: args.queries]
    embeddings = get_embeddings("intfloat/multilingual-e5-small")
    _ = embeddings.dimension
    label = "embedded (FAISS + BM25 segments, SQLite catalog)" if args.backend == "embedded" else \
        "Milvus Lite (one collection, hybrid search server-side) + SQLite catalog"
    print(f"{len(pool)} sentences; backend: {label}")
    print("| articles | chunks | full build | peak RSS | add one | remove one | load | search p50 / p95 | "
          "search scoped to 1 article / to half | ask p50 / p95 | ask (rules) p50 / p95 | disk |")
    print("| --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            corpus, index = Path(tmp) / "corpus", Path(tmp) / "index"
            backend = Backend(args.backend, str(Path(tmp) / "milvus.db") if args.backend == "milvus" else "")
            write_corpus(corpus, n, pool)
            build_s, rss, chunks = full_build_in_child(corpus, index, backend)
            extra = corpus / "articles" / "zz-new.txt"
            extra.write_text("新文章\n\n" + "".join(pool[:SENTENCES_PER_ARTICLE]) + "\n", encoding="utf-8")
            t = time.perf_counter()
            build_index(corpus, index, embeddings, backend=backend)
            add_s = time.perf_counter() - t
            settings = Settings.load(corpus_dir=corpus, index_dir=index, data_dir=Path(tmp) / "data",
                                     backend=backend.name, milvus_uri=backend.milvus_uri or None)
            t = time.perf_counter()
            remove_articles([extra.name], settings, embeddings)  # what `assistant index remove` runs
            remove_s = time.perf_counter() - t
            Assistant(settings, load_index(index, embeddings), embeddings)  # the reader, once per process
            t = time.perf_counter()
            assistant = Assistant(settings, load_index(index, embeddings), embeddings)  # index + retrievers
            load_s = time.perf_counter() - t
            assistant.warm(questions[0])  # as a server does before its first user
            times, search = _timed(assistant, questions)
            rules, _ = _timed(assistant, questions, "extractive")
            ids = [a["id"] for a in assistant.articles()]
            _, one = _timed(assistant, questions, "extractive", ids[len(ids) // 2:len(ids) // 2 + 1])
            _, half = _timed(assistant, questions, "extractive", ids[::2])
            size = disk_mb(index) + (disk_mb(Path(tmp)) - disk_mb(corpus) - disk_mb(index) if backend.milvus_uri else 0)
            print(f"| {n:,} | {chunks:,} | {build_s:.0f} s | {rss / 1024:.2f} GB | {add_s:.1f} s | {remove_s:.1f} s | "
                  f"{load_s:.1f} s | {_p50_p95(search)} | {_p50_p95(one)}, {_p50_p95(half)} | {_p50_p95(times)} | "
                  f"{_p50_p95(rules)} | {size:.0f} MB |", flush=True)


def _timed(assistant, questions: list[str], answerer: str | None = None,  # noqa: ANN001
           articles: list[str] | None = None) -> tuple[list[float], list[float]]:
    """Milliseconds of each whole answer, and of its retrieval (scoped to `articles` when given)."""
    times, search = [], []
    for q in questions:
        t = time.perf_counter()
        answer = assistant.ask(q, answerer=answerer, articles=articles)
        times.append((time.perf_counter() - t) * 1000)
        search.append(answer.timings["retrieve_ms"])
    return times, search


def _p50_p95(values: list[float]) -> str:
    values = sorted(values)
    return f"{statistics.median(values):.0f} / {values[min(len(values) - 1, int(0.95 * len(values)))]:.0f} ms"


if __name__ == "__main__":
    main()
