"""Managing articles like a knowledge base: remove, replace, list, and questions scoped to chosen articles."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from assistant import Assistant
from assistant.assistant import NO_ARTICLES, remove_articles
from assistant.config import Settings
from assistant.corpus import PENDING, begin_remove
from assistant.errors import CorpusError, InputError, UnknownNameError
from assistant.indexing import Scope, build_index, committed_sources
from assistant.segments import DenseBuilder, Segment
from assistant.vectorstore import SegmentedVectorStore

from .conftest import SEED

# A second article on another topic that shares words with the seed (上海, 公司, 成立), so that an unscoped
# question about it can reach the seed and a scoped one must not.
TEA = """上海茶叶公司的百年故事

上海茶叶公司成立于1952年,总部位于上海黄浦区。公司的创始人是张伯年。
公司每年出口绿茶三千吨,主要销往摩洛哥和乌兹别克斯坦。
2019年,公司在杭州建立了新的茶叶研究所,有研究人员四十人。
"""


@pytest.fixture
def two(corpus, tmp_path, embeddings) -> Settings:
    """Settings over the seed and the tea article, with a reference full text for the tea article."""
    (corpus / "articles" / "tea.md").write_text(TEA, encoding="utf-8")
    refs = corpus / "references" / "tea"
    refs.mkdir(parents=True)
    (refs / "1.txt").write_text("茶叶出口报告\n\n2020年中国绿茶出口量为29万吨。\n", encoding="utf-8")
    settings = Settings.load(corpus_dir=corpus, index_dir=tmp_path / "index", data_dir=tmp_path / "data")
    build_index(corpus, settings.index_dir, embeddings)
    return settings


def test_the_list_names_every_article_with_its_counts(two, embeddings):
    listed = {a["id"]: a for a in Assistant.load(settings=two).articles()}
    assert set(listed) == {"shanghai-ai.txt", "tea.md"}
    tea = listed["tea.md"]
    assert tea["title"] == "上海茶叶公司的百年故事" and tea["file"] == "articles/tea.md"
    assert tea["reference_texts"] == 1 and tea["chunks"] >= 4 and tea["size"] > len(TEA.encode()) // 2
    assert listed["shanghai-ai.txt"]["references"] == 6 and tea["added_at"].startswith("20")


def test_remove_takes_an_article_and_its_references_out_in_one_commit(two, embeddings):
    assistant = Assistant.load(settings=two)
    question = "上海茶叶公司的创始人是谁?"
    assert any(s.doc_id == "tea.md" for s in assistant.ask(question).sources)
    report = assistant.remove_articles(["tea"])  # the id without its extension
    assert sorted(report.removed) == ["articles/tea.md", "references/tea/1.txt"]
    assert not (two.corpus_dir / "articles" / "tea.md").exists()
    assert not (two.corpus_dir / "references" / "tea").exists()
    assert not (two.corpus_dir / PENDING).exists()
    assert [a["id"] for a in assistant.articles()] == ["shanghai-ai.txt"]
    assert all(s.doc_id.startswith("shanghai-ai") for s in assistant.ask(question).sources)
    assert set(committed_sources(two.index_dir)) == {"articles/shanghai-ai.txt"}


def test_an_unknown_name_removes_nothing_and_names_the_closest(two, embeddings):
    before = committed_sources(two.index_dir)
    with pytest.raises(UnknownNameError, match=r"did you mean tea\.md"):
        remove_articles(["tea.txt", "shanghai-ai.txt"], two, embeddings)
    assert committed_sources(two.index_dir) == before
    assert (two.corpus_dir / "articles" / "shanghai-ai.txt").exists()


def test_removing_the_last_article_leaves_an_empty_index_that_says_so(corpus, tmp_path, embeddings):
    settings = Settings.load(corpus_dir=corpus, index_dir=tmp_path / "index", data_dir=tmp_path / "data")
    build_index(corpus, settings.index_dir, embeddings)
    assistant = Assistant.load(settings=settings)
    assistant.remove_articles(["shanghai-ai.txt"])
    answer = assistant.ask("英伟达的创始人是谁?")
    assert answer.refused and answer.answer == NO_ARTICLES and answer.sources == []
    assert assistant.ask("Who founded Nvidia?").answer.startswith("The index holds no articles")
    assert assistant.articles() == [] and assistant.status()["chunks"] == 0
    reloaded = Assistant.load(settings=settings)  # a valid index on disk, not only in this process
    assert reloaded.ask("英伟达的创始人是谁?").answer == NO_ARTICLES
    # an ordinary build of the empty corpus leaves it as it is, and the article comes back with an add
    with pytest.raises(CorpusError, match="No articles"):
        build_index(corpus, settings.index_dir, embeddings)
    source = tmp_path / "shanghai-ai.txt"
    source.write_text(SEED.read_text(encoding="utf-8"), encoding="utf-8")
    assistant.add_files([source])
    assert "黄仁勋" in assistant.ask("英伟达的创始人是谁?").answer


def test_remove_then_add_again_is_answered_again(two, tmp_path, embeddings):
    assistant = Assistant.load(settings=two)
    assistant.remove_articles(["tea.md"])
    copy = tmp_path / "tea.md"
    copy.write_text(TEA, encoding="utf-8")
    report = assistant.add_files([copy])
    assert report.added == ["articles/tea.md"]
    answer = assistant.ask("上海茶叶公司的创始人是谁?")
    assert "张伯年" in answer.answer and answer.sources[0].doc_id == "tea.md"


def test_replace_swaps_the_content_in_one_commit(two, tmp_path):
    assistant = Assistant.load(settings=two)
    edited = tmp_path / "tea.md"
    edited.write_text(TEA.replace("张伯年", "李文涛"), encoding="utf-8")
    with pytest.raises(CorpusError, match="Use --replace"):
        assistant.add_files([edited])
    report = assistant.add_files([edited], replace=True)
    assert report.changed == ["articles/tea.md"]
    assert "李文涛" in assistant.ask("上海茶叶公司的创始人是谁?").answer


def test_a_killed_removal_is_rolled_back_at_the_next_start(two, embeddings):
    article = two.corpus_dir / "articles" / "tea.md"
    begin_remove(two.corpus_dir, [article])  # what a removal does before the commit, then it is killed
    article.unlink()
    report = build_index(two.corpus_dir, two.index_dir, embeddings)
    assert article.exists() and report.up_to_date and not (two.corpus_dir / PENDING).exists()


def test_a_scoped_question_gets_its_full_k_sources_from_the_chosen_article(two):
    assistant = Assistant.load(settings=two)
    question = "英伟达的创始人是谁?"
    unscoped = assistant.ask(question, k=3)
    assert unscoped.sources[0].doc_id == "shanghai-ai.txt"  # the best source lies outside the scope
    scoped = assistant.ask(question, k=3, articles=["tea.md"])
    assert len(scoped.sources) == 3 and all(s.doc_id.startswith("tea") for s in scoped.sources)
    assert "黄仁勋" not in scoped.answer
    # the scope holds for a follow-up, and names resolve as for remove (title here)
    follow = assistant.ask("它在哪里?", [{"question": "上海茶叶公司的创始人是谁?", "answer": "张伯年"}],
                           articles=["上海茶叶公司的百年故事"])
    assert all(s.doc_id.startswith("tea") for s in follow.sources)


def test_an_unknown_scope_is_a_clear_input_error(two):
    assistant = Assistant.load(settings=two)
    with pytest.raises(InputError, match="did you mean tea.md") as raised:
        assistant.ask("公司在哪里?", articles=["teas"])
    assert raised.value.field == "articles"
    with pytest.raises(InputError, match="list of article ids"):
        assistant.ask("公司在哪里?", articles=[3])
    assert assistant.ask("公司在哪里?", articles=[]).sources  # empty: every article


def test_a_scope_walks_no_graph_when_it_is_small():
    """A scope of a few rows of an HNSW segment is searched exactly: a filtered graph walk ends before it meets
    them. Without the exact path this returns fewer than k rows, or not the best."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 32)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    builder = DenseBuilder(32, graph=True)
    builder.add(vectors)
    segment = Segment("s", builder.index, _empty_postings(3000), [])
    assert isinstance(segment.dense, faiss.IndexHNSW)
    rows = np.arange(3000, dtype=np.int64)
    store = SegmentedVectorStore(None, 32, [(segment, rows)], list(range(3000)))
    chosen = rng.choice(3000, size=8, replace=False)
    mask = np.zeros(3000, dtype=bool)
    mask[chosen] = True
    scope = Scope(("a",), mask, chosen)
    query = vectors[0]
    found = store.search_by_vector(query, 5, scope=scope)
    best = sorted(chosen, key=lambda r: -float(vectors[r] @ query))[:5]
    assert [r for r, _ in found] == [int(r) for r in best]


def _empty_postings(rows: int):
    from scipy import sparse

    return sparse.csc_array((rows, 0), dtype=np.float32)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASSISTANT_CORPUS_DIR": str(settings.corpus_dir), "ASSISTANT_INDEX_DIR": str(settings.index_dir),
           "ASSISTANT_DATA_DIR": str(settings.data_dir)}
    return subprocess.run([sys.executable, "-m", "assistant", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_cli_lists_removes_and_scopes(two):
    status = _cli(two, "index", "status")
    assert "tea.md: 上海茶叶公司的百年故事" in status.stdout and "1 full texts" in status.stdout
    wrong = _cli(two, "index", "remove", "teaa")
    assert wrong.returncode == 2 and "did you mean tea.md" in wrong.stderr and "Nothing was removed" in wrong.stderr
    scoped = _cli(two, "ask", "英伟达的创始人是谁?", "--article", "tea.md", "--json")
    assert scoped.returncode == 0, scoped.stderr
    assert {s["doc_id"][:3] for s in json.loads(scoped.stdout)["sources"]} == {"tea"}
    bad_scope = _cli(two, "ask", "公司在哪里?", "--article", "nope")
    assert bad_scope.returncode == 2 and "no article named nope" in bad_scope.stderr.lower()
    removed = _cli(two, "index", "remove", "tea.md")
    assert removed.returncode == 0 and "removed     2: articles/tea.md, references/tea/1.txt" in removed.stdout
    assert "tea.md" not in _cli(two, "index", "status").stdout


def test_eval_runs_within_the_chosen_articles(two):
    from assistant.evaluation import EvalQuestion, run_eval

    assistant = Assistant.load(settings=two)
    questions = [EvalQuestion(id="t1", question="上海茶叶公司的创始人是谁?", type="factoid", answers=["张伯年"])]
    report = run_eval(assistant, questions, articles=["tea"])
    assert report["config"]["articles"] == ["tea.md"] and report["results"][0]["correct"]
    assert all(s["doc_id"].startswith("tea") for s in report["results"][0]["sources"])
    with pytest.raises(InputError, match="No article named coffee"):
        run_eval(assistant, questions, articles=["coffee"])
