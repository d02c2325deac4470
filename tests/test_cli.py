import ast
import json
import os
import re
import subprocess
import sys

import pytest

from assistant.cli import main
from assistant.indexing import current_version


def test_index_build_status_and_add(corpus, tmp_path, capsys):
    index = tmp_path / "index"
    assert main(["index", "build", "--corpus", str(corpus), "--index", str(index)]) == 0
    out = capsys.readouterr()
    assert "chunks" in out.out and re.search(r"unknown-token share +0.0%", out.out) and "Warning" not in out.err
    assert "full: no index yet" in out.out and "passages/s" in out.out
    assert main(["index", "status", "--index", str(index), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert isinstance(status["documents"], int) and isinstance(status["chunks"], int)
    assert status["documents"] == 1 and status["chunks"] > 80
    assert status["titles"][0]["title"].startswith("一座城市的长期主义")

    article = tmp_path / "new.md"
    article.write_text("# 量子小镇\n\n临港新片区建成了一座量子计算小镇,首批入驻企业有十二家。\n", encoding="utf-8")
    assert main(["index", "add", str(article), "--corpus", str(corpus), "--index", str(index)]) == 0
    assert (corpus / "articles" / "new.md").exists()
    assert main(["ask", "量子计算小镇首批入驻了几家企业?", "--index", str(index), "--json"]) == 0
    capsys.readouterr()
    assert main(["ask", "量子计算小镇首批入驻了几家企业?", "--index", str(index), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert "十二家" in answer["answer"] and answer["sources"][0]["doc_id"] == "new.md"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.txt", None, "no such file"),
        ("empty.txt", b"", "empty"),
        ("bin.txt", b"\x00\xff" * 50, "binary"),
        ("a.docx", b"PK", "unsupported"),
        ("bad.txt", b"\x81\x20\xfe\xff" * 30, "cannot decode"),
    ],
)
def test_index_add_bad_input_changes_nothing(built, tmp_path, capsys, name, content, message):
    before = current_version(built.index_dir)
    files_before = sorted(p.name for p in (built.corpus_dir / "articles").iterdir())
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code = main(["index", "add", str(path), "--corpus", str(built.corpus_dir),
                 "--index", str(built.index_dir)])
    err = capsys.readouterr().err
    assert code != 0 and message in err and err.count("\n") == 1  # one line, no traceback
    assert current_version(built.index_dir) == before
    assert sorted(p.name for p in (built.corpus_dir / "articles").iterdir()) == files_before


def test_missing_and_corrupt_index(tmp_path, corpus, capsys):
    assert main(["index", "status", "--index", str(tmp_path / "none")]) == 3
    assert "assistant index build" in capsys.readouterr().err
    index = tmp_path / "index"
    main(["index", "build", "--corpus", str(corpus), "--index", str(index)])
    (next((current_version(index) / "segments").iterdir()) / "terms.json").write_text("{broken", encoding="utf-8")
    capsys.readouterr()
    assert main(["ask", "英伟达是谁创立的?", "--index", str(index)]) == 3
    err = capsys.readouterr().err
    assert "terms.json" in err and "--full" in err


def test_ask_bad_questions(built, capsys):
    for question in ("", "   ", "问" * 20000, "?!?"):
        assert main(["ask", question, "--index", str(built.index_dir)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err


def test_ask_json_schema(built, capsys):
    assert main(["ask", "英伟达是谁创立的?", "--index", str(built.index_dir), "--json", "--k", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["answer"] == "黄仁勋[1]" and data["refused"] is False
    assert data["question"] == data["rewritten_question"] == "英伟达是谁创立的?"
    assert len(data["sources"]) == 3
    s = data["sources"][0]
    assert {"doc_id", "title", "paragraph", "text", "score", "start", "end", "citations"} <= set(s)
    assert isinstance(data["latency_ms"], float)


def test_env_vars_and_flags(built, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ASSISTANT_INDEX_DIR", str(built.index_dir))
    assert main(["index", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chunks"] > 80
    assert main(["index", "status", "--json", "--index", str(tmp_path / "nope")]) == 3  # the flag wins


def test_python_m_and_interactive_loop(built):
    env = {**os.environ, "ASSISTANT_INDEX_DIR": str(built.index_dir)}
    proc = subprocess.run([sys.executable, "-m", "assistant", "ask"], input="英伟达是谁创立的?\n他在哪一年创立了英伟达?\n\n",
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "黄仁勋" in proc.stdout and "1993年" in proc.stdout and "黄仁勋在哪一年创立了英伟达" in proc.stdout


def test_a_cold_ask_imports_only_what_answering_needs(built):
    # issue 29: a command line question waits for every import; these serve other commands or other models
    # (`tokenizers` holds 290 MB for the e5 vocabulary: answering tokenizes with sentencepiece, assistant/bert.py)
    unused = ["sentence_transformers", "transformers", "gradio", "fastapi", "langchain_core.retrievers", "langsmith",
              "tokenizers"]
    # and torch: one question reads in ONNX Runtime, once the graphs are written (the first run may export them)
    code = ("import sys; from assistant.cli import main; code = main(['ask', '英伟达是谁创立的?']); "
            f"print([m for m in {[*unused, 'torch']!r} if m in sys.modules]); sys.exit(code)")
    env = {**os.environ, "ASSISTANT_INDEX_DIR": str(built.index_dir)}
    env.pop("ASSISTANT_RUNTIME", None)
    for run in ("first", "second"):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        imported = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
        assert "黄仁勋" in proc.stdout and [m for m in imported if run == "second" or m != "torch"] == [], run


def test_serve_refuses_a_network_host_without_the_flag(built, capsys):
    assert main(["serve", "--index", str(built.index_dir), "--host", "0.0.0.0"]) == 2  # bad input (README)
    assert "--allow-remote" in capsys.readouterr().err


def test_the_build_summary_counts_files_past_ten():
    import io

    from assistant.cli import _print_report
    from assistant.indexing import BuildReport

    report = BuildReport(documents=848, chunks=11598, references=0, model="m", dimension=384,
                         unknown_token_share=0.0, seconds=44.0, full=False, embedded=11598, reused=0,
                         added=[f"articles/a{i:03}.txt" for i in range(848)], removed=["articles/old.txt"])
    out = io.StringIO()
    _print_report(report, out)
    lines = out.getvalue().splitlines()
    added = next(line for line in lines if line.strip().startswith("added"))
    assert added.count("articles/") == 10 and "848:" in added and "and 838 more" in added
    assert any(line.strip() == "removed     1: articles/old.txt" for line in lines)


def test_index_status_reads_no_vectors_but_notices_a_missing_file(built, embeddings, tmp_path, capsys):
    """`index status` costs the catalog, not the vectors: a segment whose vector file is garbage of the recorded
    size still gets its status (what `index verify` is for), the same as a loaded index reports it; a missing file
    is one line with the fix."""
    import shutil

    from assistant.indexing import load_index
    from assistant.indexing.generations import CURRENT

    index = tmp_path / "index"
    shutil.copytree(built.index_dir, index)
    assert main(["index", "status", "--index", str(index), "--json"]) == 0
    light = json.loads(capsys.readouterr().out)
    assert light == load_index(index, embeddings, check_model=False).status()
    version = index / (index / CURRENT).read_text().strip()
    dense = next(version.glob("segments/*/dense.faiss"))
    dense.write_bytes(b"\0" * dense.stat().st_size)  # same size, unreadable as FAISS
    assert main(["index", "status", "--index", str(index), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chunks"] == light["chunks"]
    assert main(["index", "verify", "--index", str(index)]) == 3
    capsys.readouterr()
    dense.unlink()
    assert main(["index", "status", "--index", str(index)]) == 3
    err = capsys.readouterr().err
    assert "dense.faiss" in err and "build --full" in err and err.count("\n") == 1


@pytest.mark.parametrize("args, env, says", [
    (["serve", "--auth", "onlyuser"], {}, "user:password"),
    (["serve"], {"ASSISTANT_ALLOWED_HOSTS": "not a host!"}, "is not a host name"),
    (["train-reader", "--data", "x.json", "--pack", "pack", "--draws", "0"], {}, "at least 1 draw"),
])
def test_a_misconfigured_command_is_bad_input(built, tmp_path, args, env, says):
    """Exit 2 (bad input, README), one line saying what to do; a server never starts on a bad setting."""
    env = {**os.environ, "ASSISTANT_INDEX_DIR": str(built.index_dir), **env}
    proc = subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "pack").exists()
