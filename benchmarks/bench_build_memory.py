"""Where a full build's memory peaks, stage by stage: prints figures, asserts nothing.

    python benchmarks/bench_build_memory.py [--articles 1000] [--fake-vectors] [--embed-only]

The synthetic corpus of bench_scale.py (N articles of DRCD/CMRC sentences). The process's peak RSS (VmHWM) is
read and reset (`/proc/self/clear_refs`, Linux) around each stage of `build_index(full=True)`, so every figure
is that stage's exact high point, not a sample; "(between)" is the code that runs between the stages.

--fake-vectors replaces the embedder's passage vectors with random unit vectors (the model stays loaded, so
the baseline is the same): the build's own structures (segments, postings, catalog, words) at 177k chunks in
about three minutes instead of most of an hour. --embed-only embeds the corpus's chunks and builds nothing:
the embedder's own peak. A full build runs in two passes (embed every part, then fill the segments), so its
peak is about the higher of the two, not their sum (docs/benchmarks.md). The child process a large build learns
its words in is not counted here (bench_scale.py counts it).
"""

from __future__ import annotations

import argparse
import collections
import functools
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_scale  # noqa: E402

from assistant import indexing  # noqa: E402
from assistant.chunking import ChunkerSettings  # noqa: E402
from assistant.corpus import process, scan_corpus  # noqa: E402

# The stages: functions of the build, each wrapped (outermost call only).
STAGES = [
    (indexing.build._Job, "learn", "learn words (all files read once)"),
    (indexing.build, "process", "read and chunk one file"),
    (indexing.build._Job, "embed", "embed a part"),
    (indexing.build.Catalog, "put_chunks", "write a part's chunk rows"),
    (indexing.build._SegmentDraft, "add", "add a part to its segment (vectors, postings)"),
    (indexing.build._SegmentDraft, "finish", "finish and write a segment"),
    (indexing.build._Job, "record", "write a part's documents and sources"),
    (indexing.build, "_report", "report"),
]


def _mb(key: str) -> int:
    return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) // 1024


class Peaks:
    """The high point of each stage (MB), VmHWM reset after each reading."""

    def __init__(self) -> None:
        self.peak: dict[str, int] = collections.defaultdict(int)
        self.calls: collections.Counter[str] = collections.Counter()
        self.depth = 0

    def note(self, label: str) -> None:
        self.peak[label] = max(self.peak[label], _mb("VmHWM"))
        self.calls[label] += 1
        Path("/proc/self/clear_refs").write_text("5")

    def wrap(self, owner, name: str, label: str) -> None:  # noqa: ANN001 - a module or a class
        raw = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        fn = raw.__func__ if isinstance(raw, staticmethod) else raw

        @functools.wraps(fn)
        def staged(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if self.depth:
                return fn(*args, **kwargs)
            self.note("(between)")
            self.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth -= 1
                self.note(label)

        setattr(owner, name, staticmethod(staged) if isinstance(raw, staticmethod) else staged)

    def table(self) -> str:
        rows = sorted(self.peak.items(), key=lambda kv: -kv[1])
        return "\n".join(f"| {label} | {self.calls[label]:,} | {mb:,} MB |" for label, mb in rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--fake-vectors", action="store_true", help="random unit vectors instead of the model's")
    parser.add_argument("--embed-only", action="store_true", help="embed the chunks, build nothing")
    args = parser.parse_args()
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("bench_build_memory reads /proc/self/status and resets /proc/self/clear_refs: Linux only.")

    import numpy as np

    from assistant.embeddings import get_embeddings

    peaks = Peaks()
    pool = bench_scale.sentences()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        corpus, index = Path(tmp) / "corpus", Path(tmp) / "index"
        bench_scale.write_corpus(corpus, args.articles, pool)
        del pool
        peaks.note("(corpus written)")
        embeddings = get_embeddings("intfloat/multilingual-e5-small")
        _ = embeddings.dimension
        peaks.note("model load")
        loaded = _mb("VmRSS")
        if args.fake_vectors:
            rng = np.random.default_rng(0)

            def random_unit(texts, show_progress=False):  # noqa: ANN001, ANN202, ARG001
                v = rng.standard_normal((len(texts), int(embeddings.dimension))).astype("float32")
                return v / np.linalg.norm(v, axis=1, keepdims=True)

            embeddings.encode_documents = random_unit
        started = time.perf_counter()
        if args.embed_only:
            texts = [c.text for s in scan_corpus(corpus) for c in process(s, ChunkerSettings())[1]]
            peaks.note("read and chunk every file")
            for i in range(0, len(texts), indexing.limits.PART_ROWS):
                embeddings.encode_documents(texts[i:i + indexing.limits.PART_ROWS])
            peaks.note("embed every chunk")
            chunks = len(texts)
        else:
            for owner, name, label in STAGES:
                peaks.wrap(owner, name, label)
            chunks = indexing.build_index(corpus, index, embeddings, full=True).chunks
            peaks.note("(after the last stage)")
        seconds = time.perf_counter() - started
    mode = "embedding only" if args.embed_only else "full build, random vectors" if args.fake_vectors else "full build"
    print(f"{args.articles:,} articles, {chunks:,} chunks, {mode}: {seconds:.0f} s; "
          f"model loaded {loaded:,} MB, at the end {_mb('VmRSS'):,} MB")
    print("| stage | calls | peak RSS |\n| --- | --: | --: |")
    print(peaks.table())


if __name__ == "__main__":
    main()
