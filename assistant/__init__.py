"""Question answering over a Chinese long-form article and the sources it cites."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .assistant import Answer, Assistant
    from .config import Settings
    from .errors import AssistantError

__all__ = ["Answer", "Assistant", "AssistantError", "Settings"]
_HOME = {"Answer": ".assistant", "Assistant": ".assistant", "Settings": ".config", "AssistantError": ".errors"}


def __getattr__(name: str):  # noqa: ANN202 - PEP 562: a light module (corpus, lexicon) imports without torch
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
