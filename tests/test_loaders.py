import pytest

from assistant.errors import CorpusError
from assistant.loaders import load_file

ARTICLE = "上海正在汇聚人工智能产业的力量。\n沐曦股份登陆科创板,壁仞科技在港股上市。\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16"])
def test_every_encoding_loads(tmp_path, encoding):
    path = tmp_path / "a.txt"
    path.write_bytes(ARTICLE.encode(encoding))
    assert load_file(path).text.replace("\ufeff", "") == ARTICLE


def test_markdown_title_images_and_links(tmp_path):
    path = tmp_path / "a.md"
    path.write_text("# 新文章标题\n\n**沐曦**登陆[科创板](https://x.y)。\n\n![张江的人工智能小镇](img.png)\n",
                    encoding="utf-8")
    loaded = load_file(path)
    assert loaded.title == "新文章标题"
    assert "沐曦登陆科创板。" in loaded.text
    assert "张江的人工智能小镇" in loaded.text and "img.png" not in loaded.text


def test_html_main_text_only(tmp_path):
    path = tmp_path / "a.html"
    body = "".join(f"<p>第{i}段:上海的人工智能产业生态正在形成,芯片、算力、模型与应用协同发展。</p>" for i in range(6))
    path.write_text(
        f"<html><head><title>测试文章</title></head><body><nav>首页 | 新闻 | 登录</nav>"
        f"<article><h1>测试文章</h1>{body}</article><footer>版权所有 备案号</footer></body></html>",
        encoding="gbk",
    )
    loaded = load_file(path)
    assert "上海的人工智能产业生态正在形成" in loaded.text
    assert "备案号" not in loaded.text and "登录" not in loaded.text


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.txt", None, "no such file"),
        ("empty.txt", b"", "empty"),
        ("blank.txt", b"  \n\n ", "empty"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20, "binary"),
        ("bad.txt", b"\x81\x20\xfe\xff\x81\x7f" * 40, "cannot decode"),
        ("article.pdf", "文本".encode(), "unsupported file type"),
    ],
)
def test_bad_files_get_a_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        load_file(path)
