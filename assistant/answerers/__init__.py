"""Answerers turn a question and its ranked sources into a short, cited answer."""

from __future__ import annotations

from .base import Answerer, Citation, Draft
from .combined import CombinedAnswerer
from .extractive import ExtractiveAnswerer

ANSWERERS = ("combined", "reader", "extractive", "llm")

__all__ = ["ANSWERERS", "Answerer", "Citation", "CombinedAnswerer", "Draft", "ExtractiveAnswerer"]
