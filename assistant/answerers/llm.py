"""An optional answerer through any OpenAI-compatible chat endpoint (llama.cpp, vLLM, Ollama, hosted APIs).

It cites the numbered passages as [n]; citations to passages it was not given are removed, and
an answer with no valid citation, or an endpoint error or timeout, falls back to the extractive
answer with a visible notice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ..retrieval import Source
from .base import Answerer, Citation, Draft, clip_answer, refusal

SYSTEM_PROMPT = (
    "你是一个严谨的问答助手。只根据给出的编号段落回答问题,用简短的中文(不超过100字)作答,"
    "并用[编号]标注依据的段落,例如[1]。如果段落中没有答案,只回答:文章中没有提到。"
)
_MARKER = re.compile(r"\[(\d{1,2})\]")


def build_messages(question: str, sources: list[Source]) -> list[tuple[str, str]]:
    passages = "\n".join(f"[{s.rank}] {s.text}" for s in sources)
    return [("system", SYSTEM_PROMPT), ("human", f"段落:\n{passages}\n\n问题:{question}")]


class LLMAnswerer(Answerer):
    name = "llm"

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: float, fallback: Answerer):
        from langchain_openai import ChatOpenAI

        self.fallback = fallback
        self.chat = ChatOpenAI(base_url=base_url, model=model, api_key=api_key or "not-needed",
                               timeout=timeout, max_retries=0, temperature=0)

    def answer(self, question: str, sources: list[Source]) -> Draft:
        *_, draft = self.stream(question, sources)
        return draft

    def stream(self, question: str, sources: list[Source]) -> Iterator[str | Draft]:
        text = ""
        try:
            for chunk in self.chat.stream(build_messages(question, sources)):
                piece = chunk.content if isinstance(chunk.content, str) else ""
                if piece:
                    text += piece
                    yield piece
        except Exception as exc:  # any endpoint failure: connection, HTTP status, timeout
            yield self._fallback(question, sources, f"大模型接口出错({type(exc).__name__}),已改用本地阅读模型的回答。")
            return
        yield self.validate(text, question, sources)

    def validate(self, text: str, question: str, sources: list[Source]) -> Draft:
        """Keep only citations to given passages; no valid citation means no grounded answer."""
        by_rank = {s.rank: s for s in sources}
        cleaned = _MARKER.sub(lambda m: m.group(0) if int(m.group(1)) in by_rank else "", text).strip()
        cited = sorted({int(n) for n in _MARKER.findall(cleaned)})
        if "没有提到" in cleaned and not cited:
            return refusal(question)
        if not cited:
            return self._fallback(question, sources, "大模型的回答没有引用任何给出的段落,已改用本地阅读模型的回答。")
        cleaned = clip_answer(cleaned)
        citations = [Citation(n, by_rank[n].doc_id, by_rank[n].text, by_rank[n].start, by_rank[n].end) for n in cited]
        return Draft(cleaned, False, citations)

    def _fallback(self, question: str, sources: list[Source], notice: str) -> Draft:
        draft = self.fallback.answer(question, sources)
        draft.notice = notice
        return draft
