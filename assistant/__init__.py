"""Question answering over a Chinese long-form article and the sources it cites."""

from __future__ import annotations

from .assistant import Answer, Assistant
from .config import Settings
from .errors import AssistantError

__all__ = ["Answer", "Assistant", "AssistantError", "Settings"]
