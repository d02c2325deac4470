"""The audit's rows as regression tests: careless and hostile input at the corpus, index and CLI."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import opencc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant import Assistant
from assistant.chunking import MAX_SENTENCE_CHARS, ChunkerSettings, chunk_document, split_sentences
from assistant.cleaning import clean_article
from assistant.config import Settings
from assistant.corpus import PENDING
from assistant.errors import CorpusError, IndexCorruptError, IndexWriteError
from assistant.indexing import CURRENT, MANIFEST, build_index, current_version, load_index, read_manifest
from assistant.loaders import decode, load_file
from assistant.segments import SEGMENTS

from .conftest import SEED

NOTE = "# 火星基地\n\n火星基地的代号是赤焰,建于2031年。\n"
OTHER = "# 月球基地\n\n月球基地的代号是广寒,建于2029年。\n"


def _assistant(corpus, index_dir, embeddings) -> Assistant:
    settings = Settings.load(corpus_dir=corpus, index_dir=index_dir, data_dir=index_dir.parent / "data")
    return Assistant(settings, load_index(index_dir, embeddings), embeddings)


# --- documents are keyed by file name, extension included --------------------------------------

def test_same_name_with_two_extensions_is_two_documents(corpus, tmp_path, embeddings):
    (corpus / "articles" / "base.txt").write_text(NOTE, encoding="utf-8")
    (corpus / "articles" / "base.md").write_text(OTHER, encoding="utf-8")
    build_index(corpus, tmp_path / "index", embeddings)
    assistant = _assistant(corpus, tmp_path / "index", embeddings)
    status = assistant.status()
    assert status["documents"] == 3 and len([t for t in status["titles"] if t["kind"] == "article"]) == 3
    assert "赤焰" in assistant.ask("火星基地的代号是什么?").plain_answer
    assert "广寒" in assistant.ask("月球基地的代号是什么?").plain_answer


def test_duplicate_content_under_two_names_is_shown_once(corpus, tmp_path, embeddings):
    (corpus / "articles" / "mars.txt").write_text(NOTE, encoding="utf-8")
    (corpus / "articles" / "mars-copy.txt").write_text(NOTE, encoding="utf-8")
    build_index(corpus, tmp_path / "index", embeddings)
    sources = _assistant(corpus, tmp_path / "index", embeddings).ask("火星基地的代号是什么?").sources
    texts = [s.text for s in sources]
    assert sum("赤焰" in t for t in texts) == 1


def test_a_link_out_of_the_corpus_is_skipped(corpus, tmp_path, embeddings, caplog):
    outside = tmp_path / "secret.txt"
    outside.write_text("# 机密\n\n服务器的管理员密码是hunter2。\n", encoding="utf-8")
    (corpus / "articles" / "link.txt").symlink_to(outside)
    report = build_index(corpus, tmp_path / "index", embeddings)
    assert report.documents == 1 and "outside the corpus" in caplog.text
    index = load_index(tmp_path / "index", embeddings)
    assert not any("hunter2" in c.text for c in index.chunks)


# --- ingest --------------------------------------------------------------------------------------

def test_big5_is_decoded_and_japanese_or_korean_refused():
    simplified = "黄河是中国第二长河,全长约5464公里,流域面积约75万平方公里。"
    traditional = opencc.OpenCC("s2t").convert(simplified)
    assert decode(traditional.encode("big5")) == (traditional, "big5")
    assert decode(simplified.encode("gbk"))[0] == simplified
    for text, encoding in (("東京は日本の首都です。人口は約千四百万人です。", "shift_jis"),
                           ("서울은 대한민국의 수도이다. 인구는 약 천만 명이다.", "euc_kr")):
        with pytest.raises(CorpusError, match="Re-save it as UTF-8"):
            decode(text.encode(encoding))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_any_bytes_give_a_document_or_a_clear_error(tmp_path, data):
    path = tmp_path / "any.txt"
    path.write_bytes(data)
    try:
        loaded = load_file(path)
    except CorpusError as exc:
        assert str(exc).startswith(str(path)) and "Traceback" not in str(exc)
    else:
        assert loaded.text.strip()


def test_an_endless_line_becomes_bounded_chunks():
    text = "上海" + "人工智能产业生态" * 250_000  # 2 MB, no punctuation
    doc = clean_article(text, "long.txt", None)
    chunks = chunk_document(doc, ChunkerSettings())
    assert len(chunks) > 1000 and max(len(c.text) for c in chunks) <= MAX_SENTENCE_CHARS
    assert "".join(c.text for c in chunks) == doc.text.strip()


def test_an_exclamation_mark_in_markdown_image_syntax_does_not_end_a_sentence():
    text = "这是图片![示意图](a.png)的说明。第二句。"
    assert [text[s:e] for s, e in split_sentences(text)] == ["这是图片![示意图](a.png)的说明。", "第二句。"]


def test_a_killed_add_is_rolled_back_at_the_next_start(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    before = current_version(index_dir)
    article = tmp_path / "mars.md"
    article.write_text(NOTE, encoding="utf-8")
    env = {**os.environ, "ASSISTANT_CORPUS_DIR": str(corpus), "ASSISTANT_INDEX_DIR": str(index_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "assistant", "index", "add", str(article)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    copied = corpus / "articles" / "mars.md"
    deadline = time.time() + 60
    while not copied.exists() and time.time() < deadline:  # killed after the copy, before the commit
        assert proc.poll() is None, "the add ended before it copied the article"
        time.sleep(0.005)
    assert copied.exists() and proc.poll() is None and (corpus / PENDING).exists()  # the add is under way
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and copied.exists()  # killed with the copy made, not committed
    assert current_version(index_dir) == before
    report = build_index(corpus, index_dir, embeddings)
    assert not copied.exists() and not (corpus / PENDING).exists()
    assert report.up_to_date and "mars.md" not in json.dumps(read_manifest(index_dir)["sources"])


# --- every broken index state: the corrupt-index error, and `build --full` recovers ---------------

def _break_current(index_dir, how):
    pointer = index_dir / CURRENT
    if how == "folder":
        pointer.unlink()
        pointer.mkdir()
        (pointer / "x").write_text("x")
    else:
        pointer.write_bytes(how)


def _break_manifest(index_dir, value):
    (current_version(index_dir) / MANIFEST).write_text(json.dumps(value), encoding="utf-8")


def _segment(index_dir):
    found = next((current_version(index_dir) / SEGMENTS).iterdir(), None)
    if found is None:
        raise FileNotFoundError("no segment left to damage")
    return found


def _sql(index_dir, statement):
    path = current_version(index_dir) / "catalog.sqlite"
    try:
        with sqlite3.connect(f"file:{path}?mode=rw", uri=True) as db:  # never creates a missing catalog
            db.execute(statement)
    except sqlite3.DatabaseError as exc:
        raise OSError(f"the catalog is already too broken for this damage: {exc}") from None


BROKEN = [
    ("CURRENT bad byte", lambda d: _break_current(d, b"v-2026\xff")),
    ("CURRENT empty", lambda d: _break_current(d, b"")),
    ("CURRENT names nothing", lambda d: _break_current(d, b"v-20990101T000000-abcdef\n")),
    ("CURRENT path", lambda d: _break_current(d, b"../../etc\n")),
    ("CURRENT folder", lambda d: _break_current(d, "folder")),
    ("manifest list", lambda d: _break_manifest(d, [1, 2])),
    ("manifest empty", lambda d: _break_manifest(d, {})),
    ("manifest embedding string", lambda d: _break_manifest(d, {**read_manifest(d), "embedding": "x"})),
    ("manifest dimension string", lambda d: _break_manifest(
        d, {**read_manifest(d), "embedding": {**read_manifest(d)["embedding"], "dimension": "x"}})),
    ("manifest not json", lambda d: (current_version(d) / MANIFEST).write_bytes(b"\xff{")),
    ("version removed", lambda d: shutil.rmtree(current_version(d))),
    ("catalog garbage", lambda d: (current_version(d) / "catalog.sqlite").write_bytes(b"\x00" * 5000)),
    ("catalog removed", lambda d: (current_version(d) / "catalog.sqlite").unlink()),
    ("catalog without chunks", lambda d: _sql(d, "DROP TABLE chunks")),
    ("catalog row past its segment", lambda d: _sql(d, "UPDATE chunks SET seg_row = 99999 WHERE rowid = 1")),
    ("segment removed", lambda d: shutil.rmtree(_segment(d))),
    ("segment terms garbage", lambda d: (_segment(d) / "terms.json").write_bytes(b"\x00" * 50)),
    ("segment postings removed", lambda d: (_segment(d) / "postings.npz").unlink()),
]


@pytest.mark.parametrize("name, damage", BROKEN, ids=[b[0] for b in BROKEN])
def test_every_broken_index_state_is_reported_and_rebuilt(corpus, tmp_path, embeddings, name, damage):
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    damage(index_dir)
    with pytest.raises(IndexCorruptError, match="assistant index build --full"):
        load_index(index_dir, embeddings)
    report = build_index(corpus, index_dir, embeddings, full=True)
    assert report.full and len(load_index(index_dir, embeddings).chunks) > 50


@pytest.mark.parametrize("name, damage", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_plain_build_also_repairs_every_broken_state(corpus, tmp_path, embeddings, name, damage):
    # found by the state machine: a catalog missing a table, or a row pointing past its segment, once passed
    # the build's check, so the incremental build failed or committed onto a broken index
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    damage(index_dir)
    (corpus / "articles" / "mars.md").write_text(NOTE, encoding="utf-8")
    report = build_index(corpus, index_dir, embeddings)
    assert report.full
    index = load_index(index_dir, embeddings)
    assert len(index.chunks) > 50 and any(c.doc_id == "mars.md" for c in index.chunks)


def test_a_broken_index_is_one_line_in_the_cli(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    _break_current(index_dir, "folder")
    env = {**os.environ, "ASSISTANT_CORPUS_DIR": str(corpus), "ASSISTANT_INDEX_DIR": str(index_dir)}
    status = subprocess.run([sys.executable, "-m", "assistant", "index", "status"], env=env, capture_output=True,
                            text=True)
    assert status.returncode == 3 and "Traceback" not in status.stderr and "build --full" in status.stderr
    rebuilt = subprocess.run([sys.executable, "-m", "assistant", "index", "build", "--full"], env=env,
                             capture_output=True, text=True)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert subprocess.run([sys.executable, "-m", "assistant", "index", "status"], env=env).returncode == 0


WRITE_FAILURES = [OSError(code, os.strerror(code)) for code in (errno.ENOSPC, errno.EROFS, errno.EACCES)] + [
    RuntimeError("simulated crash while writing")]  # faiss reports a full disk as RuntimeError


@pytest.mark.parametrize("failure", WRITE_FAILURES, ids=["ENOSPC", "EROFS", "EACCES", "RuntimeError"])
def test_a_full_or_read_only_disk_is_one_line_and_leaves_no_temp_folder(corpus, tmp_path, embeddings,
                                                                         monkeypatch, failure):
    import assistant.indexing as indexing

    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    before = current_version(index_dir)
    (corpus / "articles" / "mars.md").write_text(NOTE, encoding="utf-8")
    segments = sorted(p.name for p in (before / SEGMENTS).iterdir())
    real_write = indexing.build.write_segment

    def write_then_fail(*args):
        real_write(*args)  # the segment is on disk when the disk gives out; the catalog has not committed it
        raise failure

    monkeypatch.setattr(indexing.build, "write_segment", write_then_fail)
    with pytest.raises(IndexWriteError, match="previous index is unchanged") as info:
        build_index(corpus, index_dir, embeddings)
    reason = failure.strerror if isinstance(failure, OSError) else str(failure)
    assert "\n" not in str(info.value) and reason in str(info.value)
    assert sorted(p.name for p in index_dir.iterdir() if p.name not in (".lock", CURRENT)) == [before.name]
    assert sorted(p.name for p in (before / SEGMENTS).iterdir()) == segments
    assert current_version(index_dir) == before
    assert not any(c.doc_id == "mars.md" for c in load_index(index_dir, embeddings).chunks)
    monkeypatch.undo()
    report = build_index(corpus, index_dir, embeddings)  # the next build succeeds, incrementally
    assert report.added == ["articles/mars.md"] and not report.full


def test_an_unwritable_index_folder_is_one_line(corpus, tmp_path, embeddings):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(IndexWriteError, match="Cannot write the index"):
        build_index(corpus, blocker / "index", embeddings)


@pytest.fixture(scope="module", autouse=True)
def _seed_untouched():
    """Every test here damages copies only: the project's seed article is byte for byte the same after them all."""
    before = SEED.read_bytes()
    yield
    assert SEED.read_bytes() == before, f"a test of {__name__} changed {SEED}"


# --- the index state machine: whatever happens, the index loads or says how to rebuild -------------

ARTICLES = {f"a{i}.md": f"# 基地{i}\n\n第{i}号基地的代号是星{i},建于20{i}0年。\n" for i in range(4)}


def test_index_state_machine(tmp_path_factory, embeddings):
    from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

    class IndexMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            root = tmp_path_factory.mktemp("machine")
            self.corpus, self.index = root / "corpus", root / "index"
            (self.corpus / "articles").mkdir(parents=True)
            (self.corpus / "articles" / "seed.txt").write_text(NOTE, encoding="utf-8")
            build_index(self.corpus, self.index, embeddings)
            self.indexed = {"seed.txt"}
            self.damaged = False

        @rule(name=st.sampled_from(sorted(ARTICLES)))
        def add(self, name):
            (self.corpus / "articles" / name).write_text(ARTICLES[name], encoding="utf-8")

        @rule(name=st.sampled_from(sorted(ARTICLES)))
        def remove(self, name):
            (self.corpus / "articles" / name).unlink(missing_ok=True)

        @rule(full=st.booleans())
        def build(self, full):
            build_index(self.corpus, self.index, embeddings, full=full)  # a plain build recovers too
            self.indexed = {p.name for p in (self.corpus / "articles").iterdir()}
            self.damaged = False

        @rule(damage=st.sampled_from([b[1] for b in BROKEN]))
        def break_it(self, damage):
            try:
                damage(self.index)
            except (IndexCorruptError, OSError):
                pass  # already too broken for this kind of damage
            self.damaged = True

        @invariant()
        def loads_or_names_the_fix(self):
            try:
                index = load_index(self.index, embeddings)
            except IndexCorruptError as exc:
                assert self.damaged and "assistant index build --full" in str(exc)
                return
            # it loaded: undamaged, or the damage was harmless (to the .lock); either way it holds what was built
            assert {d.id for d in index.documents.values() if d.kind == "article"} == self.indexed
            assert sum(int((rows >= 0).sum()) for _, rows in index.parts) == len(index.chunks)

    run_state_machine_as_test(IndexMachine, settings=settings(max_examples=8, stateful_step_count=10, deadline=None))


# --- eval files ----------------------------------------------------------------------------------

def test_an_eval_row_that_fails_at_run_time_is_recorded_and_the_run_goes_on(assistant, tmp_path, monkeypatch):
    from assistant.evaluation import load_questions, run_eval

    path = tmp_path / "q.jsonl"
    rows = [{"id": "s", "question": "\ud800英伟达是谁创立的?", "type": "t", "answers": ["黄仁勋"]},
            {"id": "boom", "question": "苹果在哪一年IPO?", "type": "t", "answers": ["1980"]},
            {"id": "ok", "question": "文章的作者是谁?", "type": "t", "answers": ["忆海"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")  # \ud800 stays an escape
    questions = load_questions(path)
    real_ask = assistant.ask

    def ask(question, *args, **kwargs):
        if "苹果" in question:
            raise RuntimeError("simulated failure")
        return real_ask(question, *args, **kwargs)

    monkeypatch.setattr(assistant, "ask", ask)
    report = run_eval(assistant, questions)
    by_id = {r["id"]: r for r in report["results"]}
    assert by_id["s"]["correct"] and by_id["ok"]["correct"]
    assert "simulated failure" in by_id["boom"]["error"] and report["summary"]["errors"] == 1


def test_a_same_size_change_is_found_by_index_verify(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    dense = _segment(index_dir) / "dense.faiss"
    data = bytearray(dense.read_bytes())
    data[-100] ^= 0xFF  # same size, one vector changed
    dense.write_bytes(bytes(data))
    load_index(index_dir, embeddings)  # a start only stats the files
    env = {**os.environ, "ASSISTANT_CORPUS_DIR": str(corpus), "ASSISTANT_INDEX_DIR": str(index_dir)}
    result = subprocess.run([sys.executable, "-m", "assistant", "index", "verify"], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 3 and "dense.faiss" in result.stderr and "checksum" in result.stderr
    assert "Traceback" not in result.stderr
    build_index(corpus, index_dir, embeddings, full=True)
    ok = subprocess.run([sys.executable, "-m", "assistant", "index", "verify"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "every checksum matches" in ok.stdout


def test_renaming_an_article_relinks_its_references(corpus, tmp_path, embeddings):
    (corpus / "articles" / "mars.txt").write_text(NOTE, encoding="utf-8")
    refs = corpus / "references" / "mars"
    refs.mkdir(parents=True)
    (refs / "1.md").write_text("# 火星报告\n\n火星基地的供氧系统来自月球。\n", encoding="utf-8")
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    (corpus / "articles" / "mars.txt").rename(corpus / "articles" / "mars.md")  # same stem, new id
    build_index(corpus, index_dir, embeddings)
    index = load_index(index_dir, embeddings)
    assert index.documents["mars.md#ref-1-text"].parent == "mars.md"
    assert not any(d.startswith("mars.txt") for d in index.documents)


def test_changing_the_user_dictionary_setting_rebuilds(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    report = build_index(corpus, index_dir, embeddings, user_words=False)
    assert report.full and "user-dictionary" in report.full_reason
    assert read_manifest(index_dir)["lexicon"]["words"] == 0


def test_a_segment_left_by_a_killed_build_is_ignored_and_removed(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    build_index(corpus, index_dir, embeddings)
    stray = current_version(index_dir) / SEGMENTS / "s999999-abcdef"  # written, never committed
    stray.mkdir()
    (stray / "dense.faiss").write_bytes(b"half a file")
    assert len(load_index(index_dir, embeddings).parts) == 1
    (corpus / "articles" / "mars.md").write_text(NOTE, encoding="utf-8")
    report = build_index(corpus, index_dir, embeddings)
    assert report.added == ["articles/mars.md"] and not report.full and not stray.exists()


def test_an_exclamation_mark_before_a_citation_still_ends_the_sentence():
    text = "很好![1]下一句。"
    assert [text[s:e] for s, e in split_sentences(text)] == ["很好![1]", "下一句。"]
