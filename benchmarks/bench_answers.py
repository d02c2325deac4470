"""Answer quality on every set, per answerer, in one table: prints figures, asserts nothing.

    python benchmarks/bench_answers.py [--answerers reader combined] [--limit N] [--json OUT]

The project's question files over the seed corpus (`corpus/eval/*.jsonl`), the independent natural questions
(`../shared/eval/natural_seed.jsonl`), and the public SQuAD-format sets the README reports on: CMRC 2018
trial (passage given, and open corpus with all 256 passages indexed), DuReader-robust dev and
DuReader-checklist dev (passage given; checklist's unanswerable questions expect a refusal). Each row is
`assistant eval` run in this process, exactly as the README's commands run it. The public data is read from
../shared/ (or ASSISTANT_DATASETS / ASSISTANT_EVAL); a missing file is named and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATASETS = Path(os.environ.get("ASSISTANT_DATASETS", ROOT.parent / "shared" / "datasets"))
EVAL = Path(os.environ.get("ASSISTANT_EVAL", ROOT.parent / "shared" / "eval"))

QUESTION_SETS = {"questions": ROOT / "corpus/eval/questions.jsonl", "heldout": ROOT / "corpus/eval/heldout.jsonl",
                 "heldout2": ROOT / "corpus/eval/heldout2.jsonl", "natural_seed": EVAL / "natural_seed.jsonl",
                 "english": ROOT / "corpus/eval/english.jsonl", "english_zh": ROOT / "corpus/eval/english_zh.jsonl"}
SQUAD_SETS = {"cmrc_trial (passage)": ("cmrc2018/cmrc2018_trial.json", ["--passage-given"]),
              "cmrc_trial (open)": ("cmrc2018/cmrc2018_trial.json", []),
              "dureader_robust (passage)": ("dureader/dureader_robust_dev.json", ["--passage-given"]),
              "dureader_checklist (passage)": ("dureader/dureader_checklist_dev.json", ["--passage-given"])}


def cpu_kind() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    kind = "AMX" if "amx_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "?"
    return f"{kind}, {os.cpu_count()} cores, {platform.machine()}"


def run(argv: list[str], out: Path) -> dict | None:
    from contextlib import redirect_stdout
    from io import StringIO

    from assistant.cli import main

    with redirect_stdout(StringIO()):
        code = main([*argv, "--json", str(out), "--no-progress"])
    if code not in (0, 1) or not out.is_file():
        print(f"FAILED: assistant {' '.join(argv)} (exit {code})", file=sys.stderr)
        return None
    return json.loads(out.read_text(encoding="utf-8"))["summary"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--answerers", nargs="+", default=["reader", "combined"])
    parser.add_argument("--limit", type=int, default=0, help="with SQuAD sets: the first N questions")
    parser.add_argument("--sets", nargs="+", help="only these rows (names as printed)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    report: dict = {"cpu": cpu_kind(), "rows": {}}
    with tempfile.TemporaryDirectory(prefix="bench-answers-") as tmp:
        index = Path(tmp) / "index"
        from assistant.cli import main as cli

        cli(["index", "build", "--index", str(index)])
        for answerer in args.answerers:
            for name, path in QUESTION_SETS.items():
                if args.sets and name not in args.sets:
                    continue
                if not path.is_file():
                    print(f"SKIPPED {name}: {path} is missing", file=sys.stderr)
                    continue
                started = time.perf_counter()
                s = run(["eval", "--index", str(index), "--questions", str(path), "--answerer", answerer],
                        Path(tmp) / "out.json")
                if s:
                    report["rows"][f"{name} / {answerer}"] = s
                    print(f"{name:<30}{answerer:<10} accuracy {s['answer_accuracy']:.3f}  refused unanswerable "
                          f"{_f(s.get('refusal_accuracy'))}  refused answerable {_f(s.get('false_refusal_rate'))}  "
                          f"hit@5 {_f(s.get('hit@5'))}  ({time.perf_counter() - started:.0f} s)", flush=True)
            for name, (rel, mode) in SQUAD_SETS.items():
                if args.sets and name not in args.sets:
                    continue
                path = DATASETS / rel
                if not path.is_file():
                    print(f"SKIPPED {name}: {path} is missing", file=sys.stderr)
                    continue
                started = time.perf_counter()
                s = run(["eval", "--squad", str(path), *mode, "--answerer", answerer,
                         *(["--limit", str(args.limit)] if args.limit else [])], Path(tmp) / "out.json")
                if s:
                    report["rows"][f"{name} / {answerer}"] = s
                    print(f"{name:<30}{answerer:<10} EM {s['em']:.1f}  F1 {s['f1']:.1f}  refused answerable "
                          f"{s['refusal_rate']:.3f}  refused unanswerable {_f(s.get('unanswerable_refused'))}  "
                          f"hit@5 {s['hit@5']:.3f}  ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"CPU: {report['cpu']}")
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
