"""The README and docs stay true to the code: every `assistant` command they show parses, every benchmark
script they name exists and answers --help, every environment variable is one the settings read, and every
link to a file or section resolves."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from assistant.cli import build_parser

from .conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _text(path) -> str:
    return path.read_text(encoding="utf-8")


def _commands(text: str) -> list[list[str]]:
    """`assistant …` invocations in code blocks (after `$ `) and in table cells (between backticks)."""
    found = []
    for line in text.splitlines():
        for match in re.finditer(r"(?:^\$ |^|`)(assistant (?:[a-z-]+)(?: [a-z-]+)?)", line):
            found.append(match.group(1).split())
    return found


def test_readme_is_a_short_guide():
    lines = _text(ROOT / "README.md").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; history and method belong in docs/"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_command_shown_parses(path):
    parser = build_parser()
    sub = {a.dest: a for a in parser._actions if a.dest == "command" or getattr(a, "choices", None)}
    commands = _commands(_text(path))
    if path.name == "README.md":
        assert len(commands) >= 10
    for words in commands:
        args = words[1:]
        # `assistant index build` has two levels; `assistant ask "…"` one: keep what names subcommands
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*_subcommand(parser, args), "--help"])
        assert exit_info.value.code == 0, words
    assert sub  # the parser has subcommands at all


def _subcommand(parser, args: list[str]) -> list[str]:
    path = []
    for word in args:
        choices = next((a.choices for a in parser._actions if isinstance(getattr(a, "choices", None), dict)), None)
        if not choices or word.startswith("-"):
            break
        # below a command that has subcommands (`index`), the next word must be one of them
        named = " ".join(["assistant", *path])
        assert word in choices, f"`assistant {' '.join(args)}`: {word!r} is not a subcommand of `{named}`"
        path.append(word)
        parser = choices[word]
    assert path, f"`assistant {' '.join(args)}` names no command"
    return path


def test_benchmark_scripts_named_in_the_docs_exist_and_answer_help():
    scripts = set()
    for path in DOCS:
        scripts |= set(re.findall(r"benchmarks/(bench_[a-z_]+\.py)", _text(path)))
    assert "bench_ask.py" in scripts and "bench_answers.py" in scripts
    for script in sorted(scripts):
        file = ROOT / "benchmarks" / script
        assert file.is_file(), f"{script} is named in the docs but missing"
        done = subprocess.run([sys.executable, str(file), "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (script, done.stderr[-500:])


def test_environment_variables_in_the_docs_are_read_by_the_code():
    code = "\n".join(_text(p) for p in [*(ROOT / "assistant").rglob("*.py"), *(ROOT / "ui").rglob("*.py"),
                                         ROOT / "Makefile", *(ROOT / "benchmarks").glob("*.py")])
    for path in DOCS:
        for name in set(re.findall(r"ASSISTANT_[A-Z0-9_]+", _text(path))):
            if name.endswith("_"):
                continue
            assert name in code, f"{path.name} documents {name}, which nothing reads"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_links_resolve(path):
    text = _text(path)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        doc = (path.parent / file) if file else path
        assert doc.exists(), f"{path.name} links to {target}, which does not exist"
        if anchor and doc.suffix == ".md":
            assert anchor in _anchors(_text(doc)), f"{path.name} links to #{anchor}, not a heading of {doc.name}"


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in text.splitlines():
        if line.startswith("#") and not line.startswith("#!"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", title)))
    return anchors


def test_shell_blocks_in_the_readme_are_well_formed():
    for block in re.findall(r"```(?:bash|console)\n(.*?)```", _text(ROOT / "README.md"), re.S):
        for line in block.splitlines():
            command = line.removeprefix("$ ").split("  #")[0]
            if command.strip():
                shlex.split(command)  # raises on an unbalanced quote
