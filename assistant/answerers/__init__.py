"""Answerers turn a question and its ranked sources into a short, cited answer."""

from __future__ import annotations

from .base import Answerer, Citation, Draft
from .extractive import ExtractiveAnswerer

ANSWERERS = ("extractive", "llm")

__all__ = ["ANSWERERS", "Answerer", "Citation", "Draft", "ExtractiveAnswerer"]
