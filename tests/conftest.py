"""Shared fixtures: the real offline embedding model and one built index of the real corpus."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from assistant.config import Settings
from assistant.embeddings import E5Embeddings

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "corpus" / "articles" / "shanghai-ai.txt"
DATA = Path(__file__).resolve().parent / "data"
# The public reading-comprehension sets live beside the project (see ../shared/datasets/README.md).
DATASETS = Path(os.environ.get("ASSISTANT_DATASETS") or ROOT.parent / "shared" / "datasets")


class CountingEmbeddings(E5Embeddings):
    """The real model, counting the texts it is asked to embed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.embedded: list[str] = []

    def encode_documents(self, texts, show_progress=False):
        self.embedded.extend(texts)
        return super().encode_documents(texts, show_progress)


@pytest.fixture(scope="session")
def embeddings() -> CountingEmbeddings:
    return CountingEmbeddings()


@pytest.fixture(scope="session")
def seed_text() -> str:
    return SEED.read_text(encoding="utf-8")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A writable copy of the project's corpus (the seed article)."""
    target = tmp_path / "corpus"
    (target / "articles").mkdir(parents=True)
    shutil.copy(SEED, target / "articles" / SEED.name)
    return target


@pytest.fixture(scope="session")
def built(tmp_path_factory, embeddings) -> Settings:
    """Settings pointing at an index built once from the real corpus."""
    from assistant.indexing import build_index

    root = tmp_path_factory.mktemp("built")
    corpus_dir = root / "corpus"
    (corpus_dir / "articles").mkdir(parents=True)
    shutil.copy(SEED, corpus_dir / "articles" / SEED.name)
    build_index(corpus_dir, root / "index", embeddings)
    return Settings.load(corpus_dir=corpus_dir, index_dir=root / "index", data_dir=root / "data")


@pytest.fixture(scope="session")
def assistant(built):
    from assistant import Assistant

    return Assistant.load(settings=built)
