"""The `assistant` command: index build/add/status, ask, eval, serve."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

from .config import Settings
from .errors import AssistantError, ConfigError
from .names import printable


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import warnings

    warnings.filterwarnings("ignore")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(
        corpus_dir=getattr(args, "corpus", None),
        index_dir=getattr(args, "index", None),
        k=getattr(args, "k", None),
        answerer=getattr(args, "answerer", None),
    )


def _embeddings(settings: Settings):
    from .embeddings import get_embeddings

    return get_embeddings(settings.embed_model, settings.allow_download)


MAX_NAMES = 10  # file names per line of the build summary; the rest are counted
# A build that indexed what it could but skipped files (listed with the reason), or an add that added some of the
# files it was given: done, yet something needs the user. Failures keep 2 (bad input), 3 (index or folder), 4 (model).
EXIT_SKIPPED = 5


def _print_report(report, out=None) -> None:
    out = out or sys.stdout
    for item in report.renamed:
        print(f"  {item['file']} is stored as {item['stored']}", file=out)
    if report.up_to_date:
        print(f"Index is up to date: {report.documents} documents, {report.chunks} chunks ({report.version}).", file=out)
        _print_problems(report)
        return
    kind = f"full: {report.full_reason}" if report.full and report.full_reason else (
        "full" if report.full else "incremental")
    rate = f", {report.passages_per_second:.0f} passages/s" if report.passages_per_second else ""
    lines = [
        f"Built index {report.version} ({kind}) in {report.seconds:.1f} s",
        f"  documents   {report.documents}",
        f"  chunks      {report.chunks}  (embedded {report.embedded}{rate}, reused {report.reused})",
        f"  references  {report.references}",
        f"  segments    {report.segments}" + (f"  ({report.merged} merged away)" if report.merged else ""),
        f"  model       {report.model} ({report.dimension} dims)",
        f"  unknown-token share  {report.unknown_token_share:.1%}",
    ]
    for label, items in (("added", report.added), ("changed", report.changed), ("removed", report.removed)):
        if items:
            shown = ", ".join(printable(i) for i in items[:MAX_NAMES])
            more = f" and {len(items) - MAX_NAMES} more" if len(items) > MAX_NAMES else ""
            lines.append(f"  {label:<11} {len(items)}: {shown}{more}")
    print("\n".join(lines), file=out)
    _print_problems(report)
    if report.unknown_token_warning:
        print(report.unknown_token_warning, file=sys.stderr)


def _print_problems(report) -> None:
    """The files not indexed, each with the reason and the fix, on stderr."""
    for label, items in (("not added", report.refused), ("skipped", report.skipped)):
        if items:
            print(f"Warning: {len(items)} file(s) {label}:", file=sys.stderr)
            for item in items:
                print(f"  - {printable(item['file'])}: {item['reason']}", file=sys.stderr)


def cmd_index_build(args: argparse.Namespace) -> int:
    from .indexing import build_index

    settings = _settings(args)
    report = build_index(settings.corpus_dir, settings.index_dir, _embeddings(settings), full=args.full,
                         progress=sys.stderr.isatty(), on_stage=lambda m: print(f"… {m}", file=sys.stderr),
                         user_words=settings.user_words, backend=settings.index_backend)
    _print_report(report)
    return EXIT_SKIPPED if report.skipped else 0


def cmd_index_add(args: argparse.Namespace) -> int:
    from .articles import add_files

    settings = _settings(args)
    report = add_files(args.files, settings, _embeddings(settings), replace=args.replace, progress=sys.stderr.isatty())
    _print_report(report)
    # files of the corpus skipped before this add are listed, but what was asked (these files) was done
    return EXIT_SKIPPED if report.refused else 0


def cmd_index_verify(args: argparse.Namespace) -> int:
    from .indexing import load_index

    settings = _settings(args)
    index = load_index(settings.index_dir, _embeddings(settings), verify=True, check_model=False)
    print(f"Index {settings.index_dir} ({index.version}): {len(index.manifest['files'])} segment files in "
          f"{index.manifest['counts']['segments']} segments, every checksum matches, the catalog passes its "
          f"integrity check; {len(index.chunks)} chunks load.")
    return 0


def cmd_index_status(args: argparse.Namespace) -> int:
    from .indexing.loading import read_status

    settings = _settings(args)
    # status reads the manifest and the catalog whatever model built the index: no model, no vectors
    status = read_status(settings.index_dir)
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=2))
        return 0
    print(f"Index {status['index']} ({status['version']}), built {status['built_at']}")
    print(f"  documents {status['documents']}, chunks {status['chunks']}, references {status['references']}, "
          f"segments {status['segments']}")
    print(f"  model {status['model']} ({status['dimension']} dims), unknown-token share "
          f"{status['unknown_token_share']:.1%}")
    if not status["articles"]:
        print("  no articles yet: add one with `assistant index add FILE`")
    for a in status["articles"]:
        refs = f", {a['references']} references" + (f" ({a['reference_texts']} full texts)" if a["reference_texts"]
                                                    else "")
        print(f"  - {printable(a['id'])}: {printable(a['title'])} ({a['chunks']} chunks{refs}, "
              f"{_size(a['size'])}, added {a['added_at']})")
    if status["skipped"]:
        print(f"  not indexed ({len(status['skipped'])} files; fix them and run `assistant index build`):")
        for item in status["skipped"]:
            print(f"  ! {printable(item['file'])}: {item['reason']}")
    return 0


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB" if size >= 1e3 else f"{size} B"


def cmd_index_remove(args: argparse.Namespace) -> int:
    from .articles import remove_articles

    settings = _settings(args)
    report = remove_articles(args.names, settings, _embeddings(settings))
    _print_report(report)
    return 0


def _print_answer(answer, as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
        return
    if answer.rewritten_question != answer.question:
        print(f"(检索的问题: {answer.rewritten_question})")
    print(answer.answer)
    if answer.notice:
        print(f"注意: {answer.notice}")
    for s in answer.sources:
        refs = "; ".join(f"[{c['number']}] {c['title']} — {c['publisher']}" for c in s.citations)
        print(f"  [{s.rank}] {s.title} · 第{s.paragraph}段 · {s.score:.3f}\n      {s.text}" + (f"\n      引用: {refs}" if refs else ""))
    print(f"  ({answer.latency_ms:.0f} ms)")


def _preload(settings: Settings) -> threading.Thread | None:
    """Start loading, in a thread, what answering the default e5 model's way needs first: its tokenizer and, where
    they run in ONNX Runtime, the embedder's and the reader's sessions. That overlaps the main thread's imports,
    index and jieba dictionary (0.4-0.5 s of a cold ask on an AVX2 CPU, 2026-12-07); whoever needs one first waits
    for it (`Tokenizer.shared`, `onnx_runtime._graph`). A failure is left for the main thread's own load to
    report."""
    from .config import DEFAULT_EMBED_MODEL

    if settings.embed_model != DEFAULT_EMBED_MODEL:
        return None

    def load() -> None:
        try:
            from . import onnx_runtime
            from .bert import Tokenizer
            from .encoder import model_folder
            from .reader import READER_FILE, torch_model

            Tokenizer.shared(model_folder())
            if onnx_runtime.enabled():
                onnx_runtime.embedder_graph()
                runtime = onnx_runtime.reader_runtime(READER_FILE) if READER_FILE.is_file() else "torch"
                if runtime != "torch":
                    onnx_runtime.reader_graph(READER_FILE, torch_model, onnx_runtime.reader_precision(runtime))
        except Exception:  # noqa: BLE001 - reported by the caller's own load
            pass

    thread = threading.Thread(target=load, name="preload", daemon=True)
    thread.start()
    return thread


def cmd_ask(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.question is not None:
        from .onnx_runtime import one_question

        one_question()
    preload = _preload(settings)
    try:
        return _ask(args, settings)
    finally:
        if preload is not None:  # never exit while ONNX Runtime is making a session
            preload.join()


def _ask(args: argparse.Namespace, settings: Settings) -> int:
    from .assistant import Assistant

    assistant = Assistant.load(settings=settings)
    if args.question is not None:
        _print_answer(assistant.ask(args.question, k=args.k, answerer=args.answerer, articles=args.article), args.json)
        return 0
    articles = assistant.article_ids(args.article)  # an unknown name: an error before the first question
    history: list[dict] = []
    print("向文章提问(空行或 Ctrl-D 退出;输入 /clear 清空对话)。")
    while True:
        try:
            question = input("问> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not question.strip():
            return 0
        if question.strip() == "/clear":
            history.clear()
            continue
        try:
            answer = assistant.ask(question, history, k=args.k, answerer=args.answerer, articles=articles)
        except AssistantError as exc:
            print(f"错误: {exc}")
            continue
        _print_answer(answer, args.json)
        history.append(answer.as_turn())


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import run_eval_command

    return run_eval_command(args, _settings(args))


def cmd_train_reader(args: argparse.Namespace) -> int:
    from .training import config_from, train

    if args.pack:
        from .training_pack import write_pack

        if args.draws < 1:
            raise ConfigError(f"--draws {args.draws}: give at least 1 draw of training windows.")
        write_pack(config_from(args), Path(args.pack), draws=args.draws)
        return 0
    train(config_from(args))
    return 0


def cmd_calibrate_reader(args: argparse.Namespace) -> int:
    from .answerers.reader import CALIBRATION_FILE
    from .reader import READER_FILE
    from .training import calibrate

    calibrate(args.data, Path(args.reader or READER_FILE), Path(args.out or CALIBRATION_FILE), limit=args.limit,
              questions=args.questions)
    return 0


def cmd_quantize_reader(args: argparse.Namespace) -> int:
    from .reader import READER_FILE
    from .training import measure_int8_ranges

    summary = measure_int8_ranges(args.data, Path(args.reader or READER_FILE), args.out and Path(args.out),
                                  args.windows)
    print(f"wrote {summary['file']}: activation ranges over the windows of {summary['windows']} questions; kept float32: "
          f"{', '.join(summary['kept float32']) or 'none'} (median effect {summary['median effect']})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.allow_remote:
        raise ConfigError(
            f"Refusing to listen on {args.host} without --allow-remote: the chat would be reachable from the network. "
            "Add --allow-remote (and --auth user:password) to share it."
        )
    from ui.app import launch

    from .assistant import Assistant
    from .memory import limit_arenas

    limit_arenas()  # before the server's threads allocate
    assistant = Assistant.load(settings=_settings(args))
    launch(assistant, host=args.host, port=args.port, auth=args.auth or os.environ.get("ASSISTANT_AUTH"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description="问答助手: questions over a Chinese article and its sources.")
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="build, update and inspect the index")
    isub = index.add_subparsers(dest="index_command", required=True)
    build = isub.add_parser("build", help="build or update the index from the corpus")
    build.add_argument("--corpus", help="corpus directory (env ASSISTANT_CORPUS_DIR, default corpus)")
    build.add_argument("--index", help="index directory (env ASSISTANT_INDEX_DIR, default index)")
    build.add_argument("--full", action="store_true", help="re-embed everything")
    build.set_defaults(func=cmd_index_build)
    add = isub.add_parser("add", help="copy articles into the corpus and update the index")
    add.add_argument("files", nargs="+")
    add.add_argument("--corpus")
    add.add_argument("--index")
    add.add_argument("--replace", action="store_true", help="update an article of the same file name")
    add.set_defaults(func=cmd_index_add)
    remove = isub.add_parser("remove", help="take articles (and their references) out of the corpus and the index")
    remove.add_argument("names", nargs="+", metavar="NAME", help="article id (file name), the name without its "
                                                                 "extension, or the title; `index status` lists them")
    remove.add_argument("--corpus")
    remove.add_argument("--index")
    remove.set_defaults(func=cmd_index_remove)
    verify = isub.add_parser("verify", help="re-hash every segment file against its recorded checksum and check the catalog")
    verify.add_argument("--index")
    verify.set_defaults(func=cmd_index_verify)
    status = isub.add_parser("status", help="what the index holds")
    status.add_argument("--index")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_index_status)

    ask = sub.add_parser("ask", help="ask a question (no question: an interactive conversation)")
    ask.add_argument("question", nargs="?")
    ask.add_argument("--index")
    ask.add_argument("--k", type=int, help="number of source passages (default 5)")
    ask.add_argument("--answerer", choices=["combined", "reader", "extractive", "llm"])
    ask.add_argument("--json", action="store_true")
    ask.add_argument("--article", action="append", metavar="ID",
                     help="ask only this article (repeat for several; default: all); `index status` lists them")
    ask.set_defaults(func=cmd_ask)

    ev = sub.add_parser("eval", help="run the eval question set")
    ev.add_argument("--questions", type=Path)
    ev.add_argument("--index")
    ev.add_argument("--k", type=int)
    ev.add_argument("--answerer", choices=["combined", "reader", "extractive", "llm"])
    ev.add_argument("--retriever", choices=["dense", "bm25", "hybrid"], default="hybrid")
    ev.add_argument("--json", type=Path, dest="json_out", metavar="OUT",
                    help="write the report here (also when interrupted); rows go to OUT.partial.jsonl as they are scored")
    ev.add_argument("--min-accuracy", type=float)
    ev.add_argument("--article", action="append", metavar="ID", help="ask only this article (repeatable)")
    ev.add_argument("--compare", type=Path, metavar="BASELINE.json")
    ev.add_argument("--baseline", action="store_true", help="also run the stock LangChain recipe")
    ev.add_argument("--report", action="store_true", help="write a Markdown report with a chart next to --json")
    ev.add_argument("--no-progress", action="store_true",
                    help="no progress on stderr (else a bar on a terminal, a line every 30 s otherwise)")
    ev.add_argument("--squad", type=Path, metavar="FILE", help="a SQuAD-format file (CMRC 2018, DRCD) instead of JSONL")
    ev.add_argument("--passage-given", action="store_true", help="with --squad: hand the answerer the gold passage")
    ev.add_argument("--limit", type=int, default=0, help="with --squad: the first N questions")
    ev.add_argument("--min-f1", type=float, help="with --squad: exit 1 when F1 is below this")
    ev.set_defaults(func=cmd_eval)

    tr = sub.add_parser("train-reader", help="fine-tune the span reader on SQuAD-format data (CMRC 2018, DRCD, DuReader)")
    from .training import add_arguments

    add_arguments(tr)
    tr.set_defaults(func=cmd_train_reader)

    cal = sub.add_parser("calibrate-reader", help="fit the reader's refusal on held-out questions of its training files")
    cal.add_argument("--data", nargs="+", required=True)
    cal.add_argument("--reader", help="reader weights (default: the committed ones)")
    cal.add_argument("--out", help="calibration JSON (default: next to the reader)")
    cal.add_argument("--limit", type=int, default=0, help="at most N held-out questions")
    cal.add_argument("--questions", nargs="*", default=[], metavar="JSONL",
                     help="project question files whose answerable and unanswerable questions join the fit "
                          "(asked over the configured corpus)")
    cal.set_defaults(func=cmd_calibrate_reader)

    qz = sub.add_parser("quantize-reader", help="measure the reader's activation ranges for its int8 form")
    qz.add_argument("--data", nargs="+", required=True, help="SQuAD-format files whose questions make the windows")
    qz.add_argument("--reader", help="reader weights (default: the committed ones)")
    qz.add_argument("--out", help="ranges file (default: beside the reader, READER-int8.safetensors: where it is used)")
    qz.add_argument("--windows", type=int, default=256, help="questions sampled (one passage each)")
    qz.set_defaults(func=cmd_quantize_reader)

    serve = sub.add_parser("serve", help="start the web chat")
    serve.add_argument("--index")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--allow-remote", action="store_true", help="allow a host other than loopback")
    serve.add_argument("--auth", help="user:password for basic auth (env ASSISTANT_AUTH)")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AssistantError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; the index is unchanged unless the build had finished.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
