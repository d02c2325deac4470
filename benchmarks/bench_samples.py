"""Answers of each kind as a user sees them, right or wrong: prints a Markdown table, asserts nothing.

    python benchmarks/bench_samples.py [--index DIR] [--answerer NAME]

Asks the seed article a fixed list of demonstration questions (five per kind: factoid, list, explanation
(why/how), compare, yes/no, summary, described entity, follow-up, English, not in the article) through
Assistant.ask (the configured settings unless --index / --answerer), and prints each answer with its [n]
source markers, as the page and the CLI show it. The questions were written for this table by the project;
they are not an eval set and nothing is tuned on them (docs/evaluation.md holds the table of the day, marked
right or wrong by hand).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (kind, question, history): a follow-up's history is the questions asked before it
SAMPLES = [
    ("factoid", "英伟达是谁创立的?", []),
    ("factoid", "英伟达现在市值多少?", []),
    ("factoid", "商汤大装置具备多少算力?", []),
    ("factoid", "苹果在哪一年IPO?", []),
    ("factoid", "OpenAI诞生于哪里?", []),
    ("list", "上海GPU四小龙是哪几家?", []),
    ("list", "推动科技变革最重要的因素有哪些?", []),
    ("list", "上海给AI创业公司提供了哪些支持?", []),
    ("list", "文章提到了哪些上海的AI企业?", []),
    ("list", "硅谷的成功有哪些经验?", []),
    ("explanation", "为什么说上海发展AI需要长期主义?", []),
    ("explanation", "AI公司能否存活的关键是什么?", []),
    ("explanation", "上海如何培育AI产业生态?", []),
    ("explanation", "为什么资本对硬科技很重要?", []),
    ("explanation", "模速空间是怎么帮助创业者的?", []),
    ("compare", "上海和硅谷的AI发展有什么不同?", []),
    ("compare", "大模型的竞争从什么转向了什么?", []),
    ("compare", "英伟达三年前和现在的市值相比如何?", []),
    ("compare", "上海的优势和其他城市相比在哪里?", []),
    ("compare", "重资产AI创业和轻资产创业有什么区别?", []),
    ("yes/no", "英伟达是黄仁勋创立的吗?", []),
    ("yes/no", "上海有没有专门的AI孵化器?", []),
    ("yes/no", "沐曦是不是已经上市了?", []),
    ("yes/no", "文章是否提到了华为?", []),
    ("yes/no", "OpenAI是在上海成立的吗?", []),
    ("summary", "这篇文章讲了什么?", []),
    ("summary", "总结一下这篇文章", []),
    ("summary", "本文的主要观点是什么?", []),
    ("summary", "What is this article about?", []),
    ("summary", "概括一下全文", []),
    ("described entity", "创始人叫陈维良的公司是哪家?", []),
    ("described entity", "创立英伟达的那个人是谁?", []),
    ("described entity", "拥有1.2万PetaFLOPS算力的大装置是哪家公司的?", []),
    ("described entity", "1980年IPO的那家公司募资多少?", []),
    ("described entity", "诞生于硅谷的那家AI公司是哪一年成立的?", []),
    ("follow-up", "他是哪一年创立英伟达的?", ["英伟达是谁创立的?"]),
    ("follow-up", "它的市值是多少?", ["英伟达是谁创立的?"]),
    ("follow-up", "它募资了多少?", ["苹果在哪一年IPO?"]),
    ("follow-up", "那它的算力呢?", ["商汤大装置是什么?"]),
    ("follow-up", "它在哪一年成立?", ["OpenAI诞生于哪里?"]),
    ("English", "Who founded Nvidia?", []),
    ("English", "When did Apple go public?", []),
    ("English", "How much computing power does SenseTime's large-scale device have?", []),
    ("English", "Which Shanghai AI companies went public?", []),
    ("English", "Why does Shanghai need long-termism for AI?", []),
    ("not in the article", "壁仞科技的创始人是谁?", []),
    ("not in the article", "沐曦股份的股票代码是多少?", []),
    ("not in the article", "What is the stock code of MetaX?", []),
    ("not in the article", "上海今年的GDP是多少?", []),
    ("not in the article", "英伟达的总部在哪个城市?", []),
]
SHOWN_CHARS = 160


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="index folder (default: the configured one)")
    parser.add_argument("--answerer", help="answerer (default: the configured one)")
    args = parser.parse_args()

    from assistant import Assistant
    from assistant.answerers.base import clip_answer
    from assistant.config import Settings

    settings = Settings.load(**({"index_dir": args.index} if args.index else {}))
    assistant = Assistant.load(settings=settings)
    print("| kind | question | answer |\n| --- | --- | --- |")
    for kind, question, history in SAMPLES:
        turns: list[dict] = []
        for earlier in history:  # the history as the page keeps it
            turns.append(assistant.ask(earlier, turns, answerer=args.answerer).as_turn())
        answer = assistant.ask(question, turns, answerer=args.answerer)
        text = clip_answer(" ".join(answer.answer.split()), limit=SHOWN_CHARS)
        shown = f"{' / '.join(history)} → {question}" if history else question
        print(f"| {kind} | {shown} | {text.replace('|', '¦')} |")


if __name__ == "__main__":
    main()
