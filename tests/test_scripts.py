"""Traditional and Simplified characters match each other; the article's own text is never changed."""

from __future__ import annotations

import json

import pytest

from assistant import Assistant
from assistant.config import Settings
from assistant.errors import ModelMismatchError
from assistant.indexing import build_index, current_version, load_index

TRADITIONAL = ("# 黃河簡介\n\n黃河是中國第二長河,全長約5464公里,流域面積約75萬平方公里。"
               "它發源於青海省巴顏喀拉山脈北麓,最後在山東省東營市注入渤海。\n")


def test_a_traditional_question_over_a_simplified_article(assistant):
    answer = assistant.ask("英偉達是誰創立的?")
    assert not answer.refused and "黄仁勋" in answer.plain_answer
    assert assistant.ask("為什麼說上海發展AI需要長期主義?").kind == "explanation"


@pytest.fixture(scope="module")
def traditional(tmp_path_factory, embeddings):
    root = tmp_path_factory.mktemp("traditional")
    (root / "corpus" / "articles").mkdir(parents=True)
    (root / "corpus" / "articles" / "huanghe.md").write_text(TRADITIONAL, encoding="utf-8")
    build_index(root / "corpus", root / "index", embeddings)
    settings = Settings.load(corpus_dir=root / "corpus", index_dir=root / "index", data_dir=root / "data")
    return root, Assistant(settings, load_index(root / "index", embeddings), embeddings)


@pytest.mark.parametrize("question, expected", [("黄河全长多少公里?", "5464公里"), ("黄河发源于哪里?", "巴顏喀拉山")])
def test_a_simplified_question_over_a_traditional_article(traditional, question, expected):
    _, assistant = traditional
    answer = assistant.ask(question)
    assert not answer.refused and expected in answer.plain_answer  # quoted as the article wrote it
    assert "黃河" in answer.sources[0].text


def test_the_matching_rule_is_recorded_and_an_index_without_it_is_rebuilt(traditional, embeddings, capsys):
    root, _ = traditional
    manifest_path = current_version(root / "index") / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest["matching"] == "nfkc+lower+opencc-t2s"
    del manifest["matching"]  # as an index built before this rule would be
    manifest_path.write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ModelMismatchError, match="assistant index build"):
        load_index(root / "index", embeddings, verify=False)
    report = build_index(root / "corpus", root / "index", embeddings)
    assert report.full and "matching" in report.full_reason
    load_index(root / "index", embeddings)
