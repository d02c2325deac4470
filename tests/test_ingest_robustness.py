"""Issue 26, Ingest and Names: one bad file never costs the others, and no added file silently replaces another."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
import unicodedata
from pathlib import Path

import pytest

from assistant.assistant import add_files
from assistant.cli import EXIT_SKIPPED, main
from assistant.config import Settings
from assistant.corpus import MAX_FILE_CHARS, MAX_FILE_CHUNKS, PENDING
from assistant.errors import CorpusError, CorpusWriteError
from assistant.indexing import build_index, current_version, load_index, read_manifest
from assistant.loaders import MAX_FILE_BYTES, load_file
from assistant.names import MAX_STEM_BYTES, article_name, printable

MARS = "# 火星基地\n\n火星基地的代号是赤焰,建于2031年。\n"
MOON = "月球基地的代号是广寒,建于2029年。基地有三座温室。\n"
SEA = "深海站的代号是沧溟,建于2033年。\n"
ONE_LINE = "2022年中国电影市场分析：票房收入共计300.67亿元，其中国产电影占84."  # noqa: RUF001


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A corpus of two short articles (fast to embed)."""
    corpus = tmp_path / "corpus"
    (corpus / "articles").mkdir(parents=True)
    (corpus / "articles" / "mars.md").write_text(MARS, encoding="utf-8")
    (corpus / "articles" / "moon.txt").write_text(MOON, encoding="utf-8")
    return corpus


def _settings(corpus: Path, tmp_path: Path) -> Settings:
    return Settings.load(corpus_dir=corpus, index_dir=tmp_path / "index", data_dir=tmp_path / "data")


def _texts(index_dir: Path, embeddings) -> str:
    return "\n".join(c.text for c in load_index(index_dir, embeddings).chunks)


def _cli(*args: str) -> int:
    return main([str(a) for a in args])


BAD_FILES = {
    "zero.txt": b"",
    "nul.txt": "火星基地的代号是赤焰。".encode() + b"\x00\x01\x02" * 50,
    "sjis.txt": "東京は日本の首都です。人口は約千四百万人です。".encode("shift_jis"),
    "boilerplate.txt": "评论列表\n责任编辑:王五\n".encode(),
    "huge.txt": b"a" * (MAX_FILE_BYTES + 300_000),
}


# --- 1. a build indexes what it can and lists the rest --------------------------------------------------------

@pytest.mark.parametrize("full", [True, False], ids=["full", "incremental"])
def test_bad_files_are_skipped_by_name_and_the_good_ones_indexed(tiny, tmp_path, embeddings, full):
    index_dir = tmp_path / "index"
    if not full:
        build_index(tiny, index_dir, embeddings)
    for name, data in BAD_FILES.items():
        (tiny / "articles" / name).write_bytes(data)
    (tiny / "articles" / "sea.txt").write_text(SEA, encoding="utf-8")
    report = build_index(tiny, index_dir, embeddings)
    skipped = {s["file"]: s["reason"] for s in report.skipped}
    assert set(skipped) == {f"articles/{name}" for name in BAD_FILES}
    assert "empty" in skipped["articles/zero.txt"] and "NUL" in skipped["articles/nul.txt"]
    assert "Re-save it as UTF-8" in skipped["articles/sjis.txt"] and "MB limit" in skipped["articles/huge.txt"]
    assert "boilerplate" in skipped["articles/boilerplate.txt"]
    assert "articles/sea.txt" in report.added and "沧溟" in _texts(index_dir, embeddings)
    assert read_manifest(index_dir)["skipped"] == report.skipped  # kept for `index status`


def test_the_cli_lists_skipped_files_and_exits_with_its_own_code(tiny, tmp_path, capsys):
    (tiny / "articles" / "zero.txt").write_bytes(b"")
    assert _cli("index", "build", "--corpus", tiny, "--index", tmp_path / "index") == EXIT_SKIPPED
    err = capsys.readouterr().err
    assert "articles/zero.txt: the file is empty" in err and "Traceback" not in err
    assert _cli("index", "build", "--corpus", tiny, "--index", tmp_path / "index") == EXIT_SKIPPED  # still listed
    capsys.readouterr()
    assert _cli("index", "status", "--index", tmp_path / "index") == 0
    assert "articles/zero.txt: the file is empty" in capsys.readouterr().out
    assert _cli("index", "status", "--index", tmp_path / "index", "--json") == 0
    assert json.loads(capsys.readouterr().out)["skipped"][0]["file"] == "articles/zero.txt"
    (tiny / "articles" / "zero.txt").write_text(SEA, encoding="utf-8")  # fixed
    assert _cli("index", "build", "--corpus", tiny, "--index", tmp_path / "index") == 0
    capsys.readouterr()
    assert _cli("index", "status", "--index", tmp_path / "index", "--json") == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == []


def test_a_build_where_every_file_is_bad_is_an_error(tmp_path, embeddings):
    corpus = tmp_path / "corpus"
    (corpus / "articles").mkdir(parents=True)
    (corpus / "articles" / "zero.txt").write_bytes(b"")
    (corpus / "articles" / "nul.txt").write_bytes(BAD_FILES["nul.txt"])
    with pytest.raises(CorpusError, match="No article could be indexed.*zero.txt.*empty"):
        build_index(corpus, tmp_path / "index", embeddings)
    assert not (tmp_path / "index").exists() or current_version(tmp_path / "index") is None
    assert [p for p in (tmp_path / "index").iterdir() if p.name.startswith((".tmp", "v-"))] == []


def test_a_stray_bad_file_in_the_corpus_never_fails_a_later_add(tiny, tmp_path, embeddings):
    settings = _settings(tiny, tmp_path)
    build_index(tiny, settings.index_dir, embeddings)
    (tiny / "articles" / "stray.txt").write_bytes(b"")
    new = tmp_path / "sea.txt"
    new.write_text(SEA, encoding="utf-8")
    report = add_files([new], settings, embeddings)
    assert report.added == ["articles/sea.txt"] and report.refused == []
    assert [s["file"] for s in report.skipped] == ["articles/stray.txt"]  # listed, not blamed on the upload


def test_an_add_adds_the_good_files_and_lists_the_bad_ones(tiny, tmp_path, embeddings, capsys):
    settings = _settings(tiny, tmp_path)
    build_index(tiny, settings.index_dir, embeddings)
    good, bad = tmp_path / "sea.txt", tmp_path / "zero.txt"
    good.write_text(SEA, encoding="utf-8")
    bad.write_bytes(b"")
    code = _cli("index", "add", good, bad, "--corpus", tiny, "--index", settings.index_dir)
    err = capsys.readouterr().err
    assert code == EXIT_SKIPPED and f"{bad}: the file is empty" in err
    assert (tiny / "articles" / "sea.txt").exists() and not (tiny / "articles" / "zero.txt").exists()
    assert _cli("index", "add", bad, "--corpus", tiny, "--index", settings.index_dir) == 2  # nothing to add


# --- 2. one short line ------------------------------------------------------------------------------------------

def test_a_file_of_one_short_line_is_an_article_whose_title_and_body_are_that_line(tiny, tmp_path, embeddings):
    (tiny / "articles" / "film.txt").write_text(ONE_LINE, encoding="utf-8")
    report = build_index(tiny, tmp_path / "index", embeddings)
    assert report.skipped == [] and "articles/film.txt" in report.added
    index = load_index(tmp_path / "index", embeddings)
    article = index.documents["film.txt"]
    assert article.title == ONE_LINE and article.text == ONE_LINE
    assert any(c.doc_id == "film.txt" and "300.67亿元" in c.text for c in index.chunks)


def test_a_markdown_file_of_one_heading_is_an_article(tmp_path):
    path = tmp_path / "a.md"
    path.write_text("# 火星基地建于2031年\n", encoding="utf-8")
    loaded = load_file(path)
    assert loaded.title == "火星基地建于2031年" and "2031" in loaded.text


# --- 3. deep HTML -------------------------------------------------------------------------------------------------

def test_deeply_nested_html_gives_its_text(tmp_path):
    body = "<p>火星基地的代号是赤焰,建于2031年。基地位于火星北极附近,由三个国家共同建设。</p>"
    path = tmp_path / "deep.html"
    path.write_text(f"<html><head><title>火星基地</title></head><body>{'<div>' * 2000}{body}{'</div>' * 2000}"
                    "</body></html>", encoding="utf-8")
    loaded = load_file(path)
    assert "赤焰" in loaded.text and loaded.title == "火星基地"
    path.write_text(f"<html><body>{'<div>' * 5000}{body}{'</div>' * 5000}</body></html>", encoding="utf-8")
    with pytest.raises(CorpusError, match="nested more than 2,048 levels deep"):  # past any parser: the reason
        load_file(path)


# --- 4. front matter ----------------------------------------------------------------------------------------------

def test_markdown_front_matter_is_metadata_not_text(tiny, tmp_path, embeddings):
    (tiny / "articles" / "post.md").write_text(
        "---\ntitle: 深海站建设纪实\nauthor: 李四\ntags: [海洋, 工程]\n---\n\n深海站的代号是沧溟,建于2033年。\n",
        encoding="utf-8")
    loaded = load_file(tiny / "articles" / "post.md")
    assert loaded.title == "深海站建设纪实" and loaded.author == "李四"
    assert "tags" not in loaded.text and "---" not in loaded.text
    build_index(tiny, tmp_path / "index", embeddings)
    index = load_index(tmp_path / "index", embeddings)
    assert index.documents["post.md"].author == "李四"
    texts = [c.text for c in index.chunks if c.doc_id == "post.md"]
    assert texts == ["深海站的代号是沧溟,建于2033年。"]
    assert "作者:李四" in index.documents["post.md#meta"].text


def test_a_rule_at_the_top_of_markdown_is_still_text(tmp_path):
    path = tmp_path / "rule.md"
    path.write_text("---\n\n火星基地的代号是赤焰。\n\n---\n\n建于2031年。\n", encoding="utf-8")
    assert "赤焰" in load_file(path).text


# --- 5. unreadable and vanished files ------------------------------------------------------------------------------

def _unreadable(path: Path, monkeypatch) -> None:
    """chmod 000; as root (who reads anything) the read is made to fail the same way."""
    path.chmod(0)
    if os.geteuid() == 0:
        real = Path.read_bytes

        def read_bytes(self):
            if self == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)


@pytest.mark.parametrize("user_words", ["1", "0"])
def test_an_unreadable_file_is_named_not_a_traceback(tiny, tmp_path, monkeypatch, capsys, user_words):
    monkeypatch.setenv("ASSISTANT_USER_WORDS", user_words)
    locked = tiny / "articles" / "locked.txt"
    locked.write_text(SEA, encoding="utf-8")
    _unreadable(locked, monkeypatch)
    assert _cli("index", "build", "--corpus", tiny, "--index", tmp_path / "index") == EXIT_SKIPPED
    err = capsys.readouterr().err
    assert "articles/locked.txt: cannot be read: permission denied" in err and "chmod" in err
    assert "Make the folder writable" not in err and "Traceback" not in err


def test_an_unreadable_file_given_to_add_is_named(tiny, tmp_path, embeddings, monkeypatch, capsys):
    build_index(tiny, tmp_path / "index", embeddings)
    locked = tmp_path / "locked.txt"
    locked.write_text(SEA, encoding="utf-8")
    _unreadable(locked, monkeypatch)
    assert _cli("index", "add", locked, "--corpus", tiny, "--index", tmp_path / "index") == 2
    err = capsys.readouterr().err
    assert f"{locked}: cannot be read: permission denied" in err and err.count("\n") == 1


def test_a_file_deleted_between_scan_and_read_is_skipped_by_name(tiny, tmp_path, embeddings, monkeypatch):
    gone = tiny / "articles" / "gone.txt"
    gone.write_text(SEA, encoding="utf-8")
    real = Path.read_bytes

    def read_bytes(self):  # deleted by someone else just as the build reads it
        if self == gone:
            gone.unlink()
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    report = build_index(tiny, tmp_path / "index", embeddings, user_words=False)
    assert [s.get("file") for s in report.skipped] == ["articles/gone.txt"]
    assert "no such file" in report.skipped[0]["reason"] and report.documents == 2


# --- 6. adding a file that is already in the corpus -----------------------------------------------------------------

@pytest.mark.parametrize("replace", [False, True])
def test_adding_a_corpus_file_again_reindexes_it(tiny, tmp_path, embeddings, replace):
    settings = _settings(tiny, tmp_path)
    build_index(tiny, settings.index_dir, embeddings)
    moon = tiny / "articles" / "moon.txt"
    moon.write_text(MOON.replace("广寒", "望舒"), encoding="utf-8")  # edited in place
    report = add_files([moon], settings, embeddings, replace=replace)
    assert report.changed == ["articles/moon.txt"] and report.renamed == []
    texts = _texts(settings.index_dir, embeddings)
    assert "望舒" in texts and "广寒" not in texts


# --- 7. a full disk during an add -------------------------------------------------------------------------------------

def test_a_full_disk_during_an_add_is_one_clear_error_and_leaves_nothing(tiny, tmp_path, embeddings, monkeypatch,
                                                                       caplog):
    settings = _settings(tiny, tmp_path)
    build_index(tiny, settings.index_dir, embeddings)
    before = current_version(settings.index_dir)
    new, edited = tmp_path / "sea.txt", tmp_path / "moon.txt"
    new.write_text(SEA, encoding="utf-8")
    edited.write_text(MOON.replace("广寒", "望舒"), encoding="utf-8")

    def disk_full(source, target, *args, **kwargs):
        Path(target).write_bytes(Path(source).read_bytes()[:5])  # part of the file, then no more space
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(shutil, "copyfile", disk_full)
    with caplog.at_level(logging.WARNING), pytest.raises(CorpusWriteError, match="disk is full") as info:
        add_files([new, edited], settings, embeddings, replace=True)
    assert "unchanged" in str(info.value) and "\n" not in str(info.value)
    assert "earlier" not in caplog.text
    assert sorted(p.name for p in tiny.iterdir()) == ["articles"]  # no journal, no backup
    assert sorted(p.name for p in (tiny / "articles").iterdir()) == ["mars.md", "moon.txt"]
    assert (tiny / "articles" / "moon.txt").read_text(encoding="utf-8") == MOON
    assert current_version(settings.index_dir) == before and not (tiny / PENDING).exists()
    monkeypatch.undo()
    assert _cli("index", "add", new, "--corpus", tiny, "--index", settings.index_dir) == 0


# --- 8. change detection ---------------------------------------------------------------------------------------------

def test_an_edit_with_the_old_size_and_time_restored_is_found(tiny, tmp_path, embeddings):
    past = time.time() - 3600  # files saved long before the build, as in a real corpus
    for path in (tiny / "articles").iterdir():
        os.utime(path, (past, past))
    build_index(tiny, tmp_path / "index", embeddings)
    moon = tiny / "articles" / "moon.txt"
    stat = moon.stat()
    edited = MOON.replace("广寒", "望舒")
    assert len(edited.encode()) == stat.st_size
    moon.write_text(edited, encoding="utf-8")
    os.utime(moon, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # what `cp -p` and `rsync -t` do
    report = build_index(tiny, tmp_path / "index", embeddings)
    assert report.changed == ["articles/moon.txt"] and not report.up_to_date
    assert "望舒" in _texts(tmp_path / "index", embeddings)


# --- 9. bounded cost per file ----------------------------------------------------------------------------------------

def test_a_file_past_one_articles_cost_is_refused_quickly_before_embedding(tiny, tmp_path, embeddings):
    settings = _settings(tiny, tmp_path)
    build_index(tiny, settings.index_dir, embeddings)
    line = tmp_path / "line.txt"
    line.write_text("上海人工智能产业生态发展迅速" * 43_000, encoding="utf-8")  # 600k characters' bytes, one line
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(f"第{i}行" for i in range(MAX_FILE_CHUNKS + 10)), encoding="utf-8")
    embedded = len(embeddings.embedded)
    started = time.perf_counter()
    with pytest.raises(CorpusError, match=f"limit is {MAX_FILE_CHARS:,} characters.*Split it") as info:
        add_files([line, lines], settings, embeddings)
    assert time.perf_counter() - started < 30 and len(embeddings.embedded) == embedded
    assert "line.txt" in str(info.value) and "lines.txt" in str(info.value)
    (tiny / "articles" / "line.txt").write_bytes(line.read_bytes())  # the same in the corpus: skipped, not embedded
    report = build_index(tiny, settings.index_dir, embeddings)
    assert [s["file"] for s in report.skipped] == ["articles/line.txt"] and len(embeddings.embedded) == embedded


def test_the_caps_are_far_above_a_real_article(seed_text):
    from assistant.chunking import chunk_document
    from assistant.cleaning import clean_article

    doc = clean_article(seed_text, "seed.txt")
    assert len(doc.text) * 8 < MAX_FILE_CHARS and len(chunk_document(doc)) * 8 < MAX_FILE_CHUNKS


# --- 10. names --------------------------------------------------------------------------------------------------------

def _files(tmp_path: Path, *pairs: tuple[str, str]) -> list[Path]:
    paths = []
    for n, (name, text) in enumerate(pairs):
        folder = tmp_path / f"d{n}"
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
        paths.append(folder / name)
    return paths


@pytest.mark.parametrize("names", [("x.txt", "x.txt"), ("a b.txt", "a-b.txt"), ("🚀.txt", "🌕.txt")],
                         ids=["same-name", "space-vs-dash", "emoji-only"])
def test_two_files_of_one_add_never_share_an_id(tiny, tmp_path, embeddings, names):
    settings = _settings(tiny, tmp_path)
    build_index(tiny, settings.index_dir, embeddings)
    paths = _files(tmp_path, (names[0], SEA), (names[1], MOON.replace("月球基地", "金星基地")))
    report = add_files(paths, settings, embeddings)
    assert len(report.added) == 2 and report.refused == []
    texts = _texts(settings.index_dir, embeddings)
    assert "沧溟" in texts and "金星基地" in texts


def test_two_uploads_of_one_name_in_one_request_are_two_articles(tiny, tmp_path, embeddings):
    settings = _settings(tiny, tmp_path)
    build_index(tiny, settings.index_dir, embeddings)
    first, second = tmp_path / "0.txt", tmp_path / "1.txt"  # how an upload is saved: not under its own name
    first.write_text(SEA, encoding="utf-8")
    second.write_text(MOON.replace("月球基地", "金星基地"), encoding="utf-8")
    report = add_files([first, second], settings, embeddings, names=["报告.txt", "报告.txt"])
    assert report.added == ["articles/报告-2.txt", "articles/报告.txt"]
    assert report.renamed == [{"file": "报告.txt", "stored": "报告-2.txt"}]
    same = tmp_path / "2.txt"
    same.write_text(SEA, encoding="utf-8")
    again = add_files([first, same], settings, embeddings, names=["海.txt", "海.txt"])  # one content: one article
    assert again.added == ["articles/海.txt"]


@pytest.mark.parametrize("existing, given", [("A.txt", "a.txt"), (unicodedata.normalize("NFD", "café.txt"),
                                                                   unicodedata.normalize("NFC", "café.txt"))],
                         ids=["case", "nfd-nfc"])
def test_a_name_that_only_looks_different_is_refused_naming_the_clash(tiny, tmp_path, embeddings, existing, given):
    settings = _settings(tiny, tmp_path)
    (tiny / "articles" / existing).write_text(SEA, encoding="utf-8")
    build_index(tiny, settings.index_dir, embeddings)
    path = _files(tmp_path, (given, MOON.replace("月球基地", "金星基地")))[0]
    with pytest.raises(CorpusError, match="differs only in case or Unicode form"):
        add_files([path], settings, embeddings, replace=True)
    assert sorted(p.name for p in (tiny / "articles").iterdir()) == sorted(["mars.md", "moon.txt", existing])


def test_a_build_skips_a_second_file_that_looks_the_same(tiny, tmp_path, embeddings):
    (tiny / "articles" / unicodedata.normalize("NFD", "café.txt")).write_text(SEA, encoding="utf-8")
    (tiny / "articles" / unicodedata.normalize("NFC", "café.txt")).write_text(MOON, encoding="utf-8")
    report = build_index(tiny, tmp_path / "index", embeddings)
    assert len(report.skipped) == 1 and "looks the same as" in report.skipped[0]["reason"]


@pytest.mark.parametrize("given", ["长" * 100 + ".txt", "x" * 300 + ".md", "a\x00b.txt", "../../etc/passwd.txt",
                                   "a\nb\x1b[31m.txt"],
                         ids=["100-chinese", "300-chars", "nul", "path", "escapes"])
def test_long_and_odd_names_become_short_safe_ids(tiny, tmp_path, embeddings, given):
    name = article_name(given)
    assert len(name.encode("utf-8")) <= MAX_STEM_BYTES + len(".markdown")
    assert "/" not in name and "\x00" not in name and name.isprintable() and not name.startswith(".")
    assert article_name(given) == name  # the same name again finds the same article
    settings = _settings(tiny, tmp_path)
    build_index(tiny, settings.index_dir, embeddings)
    upload = tmp_path / ("upload" + Path(name).suffix)
    upload.write_text(SEA, encoding="utf-8")
    report = add_files([upload], settings, embeddings, names=[given])
    assert report.added == [f"articles/{name}"] and (tiny / "articles" / name).exists()


def test_names_are_printed_with_control_characters_escaped(tiny, tmp_path, capsys):
    assert printable("a\nb\x1b[31m\u202ec") == "a\\nb\\x1b[31m\\u202ec"
    assert printable("火星 基地.txt") == "火星 基地.txt"
    (tiny / "articles" / "evil\x1b[2J\n.txt").write_text(SEA, encoding="utf-8")
    (tiny / "articles" / "bad\x1b]0;x\x07.txt").write_bytes(b"")
    assert _cli("index", "build", "--corpus", tiny, "--index", tmp_path / "index") == EXIT_SKIPPED
    out = capsys.readouterr()
    assert "\x1b" not in out.out + out.err and "evil\\x1b[2J\\n.txt" in out.out
    assert "bad\\x1b]0;x\\x07.txt" in out.err
    assert _cli("index", "status", "--index", tmp_path / "index") == 0
    assert "\x1b" not in capsys.readouterr().out


def test_the_http_api_gives_every_upload_its_own_id_and_never_a_500(tiny, tmp_path, embeddings):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from assistant import Assistant
    from ui.api import router

    settings = _settings(tiny, tmp_path)
    build_index(tiny, settings.index_dir, embeddings)
    app = FastAPI()
    app.include_router(router(Assistant(settings, load_index(settings.index_dir, embeddings), embeddings),
                              uploads=tmp_path / "uploads"))
    files = [("files", ("报告.txt", SEA.encode())), ("files", ("报告.txt", MOON.encode())),
             ("files", ("长" * 100 + ".txt", "金星基地的代号是启明。".encode())),
             ("files", ("a\x00b.txt", "水星基地的代号是辰星。".encode())), ("files", ("empty.txt", b""))]
    response = TestClient(app).post("/api/articles", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["added"]) == 4 and len(set(body["added"])) == 4
    assert [r["file"] for r in body["refused"]] == ["empty.txt"] and "empty" in body["refused"][0]["reason"]
    assert {"file": "报告.txt", "stored": "报告-2.txt"} in body["renamed"]
