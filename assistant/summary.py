"""Extractive summaries: the few sentences of an article that stand most for the whole.

Each body sentence is scored by how close its embedding (already in the index) is to the
article's centroid, with a small bonus for opening a paragraph; sentences are then picked by
maximal marginal relevance, so the summary does not say the same thing twice, and returned in
reading order.
"""

from __future__ import annotations

import numpy as np

from .chunking import Chunk

MAX_SENTENCE_CHARS = 120
LEAD_BONUS = 0.03
MMR_LAMBDA = 0.7


def summary_size(n_sentences: int) -> int:
    return 3 if n_sentences <= 20 else 4 if n_sentences <= 60 else 5


def key_sentences(chunks: list[Chunk], vectors: np.ndarray, n: int | None = None) -> list[Chunk]:
    """The article's key sentences in reading order (chunks: its body sentences, vectors: theirs)."""
    keep = [i for i, c in enumerate(chunks) if c.kind == "body" and 8 <= len(c.text) <= MAX_SENTENCE_CHARS]
    if not keep:
        keep = [i for i, c in enumerate(chunks) if c.kind == "body"]
    if not keep:
        return []
    vecs = vectors[keep]
    centroid = vecs.mean(axis=0)
    centroid /= np.linalg.norm(centroid) or 1.0
    first_of_paragraph = {min((i for i in keep if chunks[i].paragraph == p), default=None)
                          for p in {chunks[i].paragraph for i in keep}}
    relevance = vecs @ centroid + np.array([LEAD_BONUS if i in first_of_paragraph else 0.0 for i in keep])
    n = min(n or summary_size(len(chunks)), len(keep))
    chosen: list[int] = []
    while len(chosen) < n:
        if chosen:
            redundancy = (vecs @ vecs[chosen].T).max(axis=1)
            score = MMR_LAMBDA * relevance - (1 - MMR_LAMBDA) * redundancy
            score[chosen] = -np.inf
        else:
            score = relevance
        chosen.append(int(np.argmax(score)))
    return [chunks[keep[i]] for i in sorted(chosen)]
