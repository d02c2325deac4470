"""Segments: global BM25 statistics, tombstones and merges give the answers one fresh build would give."""

from __future__ import annotations

import numpy as np
import pytest

import assistant.indexing as indexing
from assistant.indexing import build_index, load_index
from assistant.lexical import tokenize

QUERIES = ["英伟达是谁创立的", "上海的人工智能产业", "量子计算小镇", "火星基地的预算", "潮汐工程"]


def _article(i: int) -> str:
    return (f"第{i}号实验室\n\n第{i}号实验室位于临港,研究量子计算小镇的第{i}个课题。"
            f"火星基地的预算为{i}亿元,潮汐工程由第{i}号实验室负责。\n")


def _scores_by_id(index, query):
    scores = index.bm25.scores(tokenize(query, index.segmenter))
    return {index.chunks[r].id: round(float(s), 4) for r, s in enumerate(scores) if s > 0}


def test_bm25_with_one_segment_scores_as_bm25s_does(built, embeddings):
    import bm25s

    index = load_index(built.index_dir, embeddings)
    assert len(index.parts) == 1
    reference = bm25s.BM25()  # the library's own scoring, over the same tokens
    reference.index([tokenize(c.text, index.segmenter) or ["\u2205"] for c in index.chunks], show_progress=False)
    for query in QUERIES:
        tokens = tokenize(query, index.segmenter)
        ours, theirs = index.bm25.scores(tokens), reference.get_scores(tokens)
        assert np.argmax(ours) == np.argmax(theirs)
        assert np.allclose(ours, theirs, rtol=0.02, atol=0.02)  # the placeholder token shifts avgdl slightly


def test_adds_removals_and_merges_score_like_one_full_build(corpus, tmp_path, embeddings, monkeypatch):
    monkeypatch.setattr(indexing.limits, "MERGE_FACTOR", 3)
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, user_words=False, embeddings=embeddings)
    merged = 0
    for i in range(7):  # one small segment each, merged three at a time
        (corpus / "articles" / f"lab{i}.txt").write_text(_article(i), encoding="utf-8")
        report = build_index(corpus, index_dir, embeddings, user_words=False)
        assert not report.full and report.embedded <= 4
        merged += report.merged
    (corpus / "articles" / "lab3.txt").unlink()  # a tombstone
    (corpus / "articles" / "lab5.txt").write_text(_article(50), encoding="utf-8")  # a replacement
    build_index(corpus, index_dir, embeddings, user_words=False)
    incremental = load_index(index_dir, embeddings)
    assert merged >= 3 and len(incremental.parts) < 8

    fresh = build_index(corpus, tmp_path / "fresh", embeddings, user_words=False)
    assert fresh.full and fresh.segments == 1
    once = load_index(tmp_path / "fresh", embeddings)
    assert sorted(c.id for c in incremental.chunks) == sorted(c.id for c in once.chunks)
    assert not any(c.doc_id == "lab3.txt" for c in incremental.chunks)
    for query in QUERIES:  # global statistics: the same score for every chunk, whichever segment holds it
        assert _scores_by_id(incremental, query) == _scores_by_id(once, query)
        vector = embeddings.encode_queries([query])[0]
        got = [(incremental.chunks[r].id, round(s, 4)) for r, s in incremental.store.search_by_vector(vector, 8)]
        want = [(once.chunks[r].id, round(s, 4)) for r, s in once.store.search_by_vector(vector, 8)]
        assert [s for _, s in got] == [s for _, s in want] and {i for i, _ in got} == {i for i, _ in want}
    assert incremental.idf == once.idf


def test_a_full_build_in_many_parts_and_segments_scores_like_one(corpus, tmp_path, embeddings, monkeypatch):
    for i in range(7):
        (corpus / "articles" / f"lab{i}.txt").write_text(_article(i), encoding="utf-8")
    whole = build_index(corpus, tmp_path / "whole", embeddings)
    monkeypatch.setattr(indexing.limits, "PART_ROWS", 3)  # files are read, embedded and tokenised a few at a time
    monkeypatch.setattr(indexing.limits, "SEGMENT_ROWS", 12)
    parts = build_index(corpus, tmp_path / "parts", embeddings)
    assert whole.segments == 1 and parts.segments >= 3 and parts.chunks == whole.chunks
    one, many = load_index(tmp_path / "whole", embeddings), load_index(tmp_path / "parts", embeddings, verify=True)
    assert [c.id for c in many.chunks] == [c.id for c in one.chunks]  # same order: files in corpus order
    assert many.segmenter.words == one.segmenter.words
    for query in QUERIES:
        assert _scores_by_id(many, query) == _scores_by_id(one, query)
        vector = embeddings.encode_queries([query])[0]
        got = [(many.chunks[r].id, round(s, 4)) for r, s in many.store.search_by_vector(vector, 8)]
        assert got == [(one.chunks[r].id, round(s, 4)) for r, s in one.store.search_by_vector(vector, 8)]


def test_a_full_build_that_fails_between_its_passes_leaves_the_last_index(corpus, tmp_path, embeddings,
                                                                         monkeypatch):
    from assistant.catalog import Catalog
    from assistant.errors import IndexWriteError

    index_dir = tmp_path / "index"
    first = build_index(corpus, index_dir, embeddings, user_words=False)
    assert not list(index_dir.rglob(indexing.limits.PENDING_VECTORS))  # the vectors between the passes are gone
    (corpus / "articles" / "lab.txt").write_text(_article(1), encoding="utf-8")
    real = Catalog.segment_texts
    monkeypatch.setattr(Catalog, "segment_texts", lambda self, *args: real(self, *args)[:-1])  # a row lost
    with pytest.raises(IndexWriteError, match="missing from the build's own files.*previous index is unchanged"):
        build_index(corpus, index_dir, embeddings, user_words=False, full=True)
    monkeypatch.undo()
    index = load_index(index_dir, embeddings, verify=True)
    assert len(index.chunks) == first.chunks and not any(c.doc_id == "lab.txt" for c in index.chunks)
    assert sorted(p.name for p in index_dir.iterdir() if p.name.startswith(".tmp-")) == []


def test_a_segment_filled_part_by_part_is_a_graph_only_when_large_and_keeps_its_vectors(monkeypatch):
    import faiss

    import assistant.segments as segments

    monkeypatch.setattr(segments, "GRAPH_MIN_ROWS", 50)
    vectors = np.random.default_rng(0).standard_normal((80, 16)).astype("float32")
    for rows, graph in [(49, False), (50, True), (80, True)]:
        builder = segments.DenseBuilder(16)
        for start in range(0, rows, 7):  # parts of a full build, its size unknown until the end
            builder.add(vectors[start:min(rows, start + 7)])
        dense = builder.finish()
        assert isinstance(dense, faiss.IndexHNSW) == graph and dense.ntotal == rows
        assert np.array_equal(dense.reconstruct_n(0, rows), vectors[:rows])
        scores, found = dense.search(vectors[:5], 1)
        assert found[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_graph_segments_find_what_a_scan_finds_and_skip_tombstones(corpus, tmp_path, embeddings, monkeypatch):
    import faiss

    import assistant.segments as segments

    for i in range(7):
        (corpus / "articles" / f"lab{i}.txt").write_text(_article(i), encoding="utf-8")
    build_index(corpus, tmp_path / "scan", embeddings, user_words=False)
    monkeypatch.setattr(segments, "GRAPH_MIN_ROWS", 1)  # every segment an HNSW graph
    build_index(corpus, tmp_path / "graph", embeddings, user_words=False)
    scan, graph = load_index(tmp_path / "scan", embeddings), load_index(tmp_path / "graph", embeddings)
    assert all(isinstance(s.dense, faiss.IndexHNSW) for s, _ in graph.parts)
    assert not any(isinstance(s.dense, faiss.IndexHNSW) for s, _ in scan.parts)

    def top(index, query, k=8):
        vector = embeddings.encode_queries([query])[0]
        return [(index.chunks[r].id, round(s, 4)) for r, s in index.store.search_by_vector(vector, k)]

    for query in QUERIES:
        assert top(graph, query) == top(scan, query)
    (corpus / "articles" / "lab3.txt").unlink()  # tombstoned rows inside a graph segment
    build_index(corpus, tmp_path / "graph", embeddings, user_words=False)
    graph = load_index(tmp_path / "graph", embeddings)
    assert any((rows < 0).any() for _, rows in graph.parts)
    assert graph.parts[0][0].vectors([0]).shape == (1, embeddings.dimension)  # rows read back from the graph
    for query in [*QUERIES, "第3号实验室的课题"]:
        got = graph.store.search_by_vector(embeddings.encode_queries([query])[0], 20)
        assert len(got) == 20 and not any(graph.chunks[r].doc_id == "lab3.txt" for r, _ in got)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)


def test_full_size_segments_are_never_merged_by_an_add(corpus, tmp_path, embeddings, monkeypatch):
    monkeypatch.setattr(indexing.limits, "MERGE_FACTOR", 2)
    monkeypatch.setattr(indexing.limits, "PART_ROWS", 3)
    monkeypatch.setattr(indexing.limits, "SEGMENT_ROWS", 12)
    for i in range(7):
        (corpus / "articles" / f"lab{i}.txt").write_text(_article(i), encoding="utf-8")
    full = build_index(corpus, tmp_path / "index", embeddings, user_words=False)
    index = load_index(tmp_path / "index", embeddings)
    big = {segment.name for segment, rows in index.parts if 2 * (rows >= 0).sum() >= 12}
    assert full.segments >= 3 and len(big) >= 2  # two of one tier: MERGE_FACTOR would merge them
    for i in range(7, 10):  # small segments still merge among themselves, never into the full-size ones
        (corpus / "articles" / f"lab{i}.txt").write_text(_article(i), encoding="utf-8")
        build_index(corpus, tmp_path / "index", embeddings, user_words=False)
    after = load_index(tmp_path / "index", embeddings)
    assert big <= {segment.name for segment, _ in after.parts}
    built = {segment.name for segment, _ in index.parts}  # (the seed's one file is a segment of its own size)
    assert all(segment.rows <= 12 for segment, _ in after.parts if segment.name not in built)
    assert len(after.parts) < len(index.parts) + 3  # the three adds' segments did merge


def test_removing_every_chunk_of_a_segment_drops_the_segment(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    (corpus / "articles" / "lab.txt").write_text(_article(1), encoding="utf-8")
    assert build_index(corpus, index_dir, embeddings).segments == 2
    (corpus / "articles" / "lab.txt").unlink()
    report = build_index(corpus, index_dir, embeddings)
    assert report.segments == 1 and report.merged == 1
    index = load_index(index_dir, embeddings)
    assert [p.name for p in (index.path / "segments").iterdir()] == [index.parts[0][0].name]


def test_a_serving_assistant_sees_another_process_commit(corpus, tmp_path, embeddings):
    from assistant import Assistant
    from assistant.config import Settings

    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    settings = Settings.load(corpus_dir=corpus, index_dir=index_dir, data_dir=tmp_path / "data")
    serving = Assistant(settings, load_index(index_dir, embeddings), embeddings)
    before = serving.index.version
    (corpus / "articles" / "lab.txt").write_text(_article(7), encoding="utf-8")
    build_index(corpus, index_dir, embeddings)  # as `assistant index add` from a shell would
    answer = serving.ask("第7号实验室位于哪里?")
    assert serving.index.version != before
    assert answer.sources and answer.sources[0].doc_id == "lab.txt"


CRASH = {  # where a build process dies (os._exit: no cleanup runs), and whether its add was committed
    "segment written, not committed": ("write_segment", 1, False),
    "inside the commit transaction": ("put_documents", 1, False),
    "merge written, not committed": ("write_segment", 2, True),
    "merge committed, old segments not removed": ("rmtree", 1, True),
}
_CHILD = """
import os, shutil, sys
import assistant.indexing as ix
from assistant.catalog import Catalog
from assistant.embeddings import get_embeddings
point, nth = sys.argv[3], int(sys.argv[4])
ix.limits.MERGE_FACTOR = 2
calls = {"n": 0}
def dying(real):
    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        if point != "rmtree" or "segments" in str(args[0]):
            calls["n"] += 1
            if calls["n"] == nth:
                os._exit(9)
        return result
    return wrapper
if point == "write_segment":
    ix.build.write_segment = ix.merge.write_segment = dying(ix.build.write_segment)  # one count for both
elif point == "put_documents":
    Catalog.put_documents = staticmethod(dying(Catalog.put_documents))
else:
    ix.build.shutil.rmtree = dying(shutil.rmtree)
ix.build_index(sys.argv[1], sys.argv[2], get_embeddings("intfloat/multilingual-e5-small"), user_words=False)
os._exit(0)
"""


@pytest.mark.parametrize("point", list(CRASH), ids=list(CRASH))
def test_a_build_killed_at_any_step_of_a_commit_or_merge_leaves_a_loadable_index(corpus, tmp_path, embeddings,
                                                                                 point):
    import subprocess
    import sys

    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings, user_words=False)
    (corpus / "articles" / "lab0.txt").write_text(_article(0), encoding="utf-8")
    build_index(corpus, index_dir, embeddings, user_words=False)
    (corpus / "articles" / "lab1.txt").write_text(_article(1), encoding="utf-8")  # this add merges (factor 2)
    function, nth, committed = CRASH[point]
    child = subprocess.run([sys.executable, "-c", _CHILD, str(corpus), str(index_dir), function, str(nth)],
                           capture_output=True, text=True)
    assert child.returncode == 9, child.stderr[-2000:]
    index = load_index(index_dir, embeddings)  # the last committed state
    assert any(c.doc_id == "lab1.txt" for c in index.chunks) == committed
    assert any(c.doc_id == "lab0.txt" for c in index.chunks)
    report = build_index(corpus, index_dir, embeddings, user_words=False)  # the next build finishes the job
    assert not report.full
    index = load_index(index_dir, embeddings, verify=True)
    assert {c.doc_id for c in index.chunks} >= {"lab0.txt", "lab1.txt"}
    on_disk = {p.name for p in (index.path / "segments").iterdir()}
    assert on_disk == {segment.name for segment, _ in index.parts}  # nothing orphaned is left
