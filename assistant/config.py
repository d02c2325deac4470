"""Settings: CLI flags win over ASSISTANT_* environment variables, which win over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .errors import ConfigError

DEFAULT_EMBED_MODEL = "intfloat/multilingual-e5-small"
K_RANGE = (1, 20)  # source passages per answer, the same at every entry point
BACKENDS = ("embedded", "milvus")


@dataclass(frozen=True)
class Backend:
    """Where the index's vectors and BM25 live: FAISS + BM25 segments on disk, or a Milvus collection."""

    name: str = "embedded"
    milvus_uri: str = ""  # a file path runs Milvus Lite; http://host:19530 a server
    milvus_analyzer: str = "ours"

_ENV = {
    "corpus_dir": "ASSISTANT_CORPUS_DIR",
    "index_dir": "ASSISTANT_INDEX_DIR",
    "data_dir": "ASSISTANT_DATA_DIR",
    "embed_model": "ASSISTANT_EMBED_MODEL",
    "allow_download": "ASSISTANT_ALLOW_DOWNLOAD",
    "user_words": "ASSISTANT_USER_WORDS",
    "backend": "ASSISTANT_BACKEND",
    "milvus_uri": "ASSISTANT_MILVUS_URI",
    "milvus_analyzer": "ASSISTANT_MILVUS_ANALYZER",
    "k": "ASSISTANT_K",
    "dense_weight": "ASSISTANT_DENSE_WEIGHT",
    "answerer": "ASSISTANT_ANSWERER",
    "llm_base_url": "ASSISTANT_LLM_BASE_URL",
    "llm_model": "ASSISTANT_LLM_MODEL",
    "llm_api_key": "ASSISTANT_LLM_API_KEY",
    "llm_timeout": "ASSISTANT_LLM_TIMEOUT",
}


@dataclass(frozen=True)
class Settings:
    corpus_dir: Path = Path("corpus")
    index_dir: Path = Path("index")
    data_dir: Path = Path("data")
    embed_model: str = DEFAULT_EMBED_MODEL
    allow_download: bool = False
    user_words: bool = True  # learn a jieba user dictionary from the corpus at build time
    backend: str = "embedded"
    milvus_uri: str | None = None  # default: <index_dir>/milvus.db (Milvus Lite)
    milvus_analyzer: str = "ours"
    k: int = 5
    dense_weight: float | None = None  # None: derived from the model's unknown-token share
    answerer: str = "combined"
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_timeout: float = 30.0

    @property
    def index_backend(self) -> Backend:
        uri = self.milvus_uri or str(Path(self.index_dir) / "milvus.db")
        return Backend(self.backend, uri if self.backend == "milvus" else "", self.milvus_analyzer)

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_base_url and self.llm_model)

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Defaults, then environment, then the non-None overrides (CLI flags)."""
        values: dict[str, object] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, var in _ENV.items():
            raw = os.environ.get(var)
            if raw not in (None, ""):
                values[name] = _convert(name, types[name], raw, var)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("corpus_dir", "index_dir", "data_dir"):
            if name in values:
                values[name] = Path(values[name]).expanduser()  # type: ignore[arg-type]
        settings = replace(cls(), **values)
        low, high = K_RANGE
        if not low <= settings.k <= high:
            raise ConfigError(f"k must be from {low} to {high}, got {settings.k}.")
        if settings.backend not in BACKENDS:
            raise ConfigError(f"ASSISTANT_BACKEND must be one of {', '.join(BACKENDS)}, got {settings.backend!r}.")
        if settings.milvus_analyzer not in ("ours", "jieba"):
            raise ConfigError(f"ASSISTANT_MILVUS_ANALYZER must be ours or jieba, got {settings.milvus_analyzer!r}.")
        if settings.dense_weight is not None and not 0 <= settings.dense_weight <= 1:
            raise ConfigError(f"dense_weight must be between 0 and 1, got {settings.dense_weight}.")
        return settings


def _convert(name: str, type_name: str, raw: str, var: str) -> object:
    try:
        if "bool" in type_name:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if "int" in type_name:
            return int(raw)
        if "float" in type_name:
            return float(raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a valid {type_name.split()[0]}; fix or unset it.") from None
    return raw
