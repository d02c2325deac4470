"""The stock LangChain recipe, for comparison: 500/100 character splitter, MiniLM, dense top-5."""

from __future__ import annotations

import faiss
import numpy as np
from langchain_text_splitters import RecursiveCharacterTextSplitter

from .config import Settings
from .corpus import scan_corpus
from .loaders import load_file
from .scoring import EvalQuestion, hit_rank, summarize


def run_baseline(settings: Settings, questions: list[EvalQuestion]) -> dict:
    """Retrieval figures of the recipe on the same questions (it has no answerer)."""
    from .embeddings import MINILM, get_embeddings

    embeddings = get_embeddings(MINILM)
    splitter = RecursiveCharacterTextSplitter(chunk_size=500, chunk_overlap=100)
    texts = []
    for source in scan_corpus(settings.corpus_dir):
        texts.extend(splitter.split_text(load_file(source.path).text))  # raw text, as the recipe loads it
    vectors = np.asarray(embeddings.embed_documents(texts), dtype="float32")
    store = faiss.IndexFlatIP(vectors.shape[1])  # the recipe's FAISS store: flat inner product, top-5
    store.add(vectors)
    results = []
    for q in questions:
        query = " ".join([*q.history, q.question])  # the recipe has no rewriting: it sees the whole turn
        _, rows = store.search(np.asarray([embeddings.embed_query(query)], dtype="float32"), 5)
        results.append({"id": q.id, "correct": False, "refused": False, "latency_ms": 0.0,
                        "hit_rank": hit_rank(q, [texts[r] for r in rows[0] if r >= 0])})
    summary = summarize(results, questions)
    summary["answer_accuracy"] = None
    for block in summary["by_type"].values():
        block["answer_accuracy"] = None
    return {"summary": summary, "config": {"chunks": len(texts), "splitter": "RecursiveCharacterTextSplitter(500, 100)"}}
