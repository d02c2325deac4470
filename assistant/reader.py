"""A span reader: multilingual-e5-small's encoder, fine-tuned on public Chinese reading comprehension.

Given a question and passages, it scores every span of every passage (a start and an end logit
per token, as BERT readers for SQuAD do) and a "no answer" score (the logits at the first token).
The weights are the packaged encoder (assistant/encoder.py) plus a small committed delta,
`assistant/models/reader.safetensors`, produced by `assistant train-reader` (assistant/training.py)
from DRCD. Its word-embedding table is never trained, so the reader can share it with the
embedding model in the same process.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import encoder
from .errors import ModelNotAvailableError
from .language import simplified, simplified_same_length
from .memory import model_run

READER_FILE = Path(__file__).resolve().parent / "models" / "reader.safetensors"
DELTA_FORMAT = 1
WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
_lock = threading.Lock()


def build_model(config: dict):
    """The reader network: a BERT encoder and a linear start/end head."""
    import torch
    from transformers import BertConfig, BertModel

    class SpanModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            bert_config = BertConfig(**{k: v for k, v in config.items() if k != "architectures"})
            self.bert = BertModel(bert_config, add_pooling_layer=False)
            self.qa = torch.nn.Linear(bert_config.hidden_size, 2)

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            logits = self.qa(hidden).float()
            return logits[..., 0], logits[..., 1]

    return SpanModel()


def build_inference_model(config: dict):
    """The same network for answering, on assistant/bert.py's encoder (no transformers import, no random
    initialisation: weights are assigned by `load_state_dict(..., assign=True)`)."""
    import torch

    from .bert import build_encoder

    class SpanModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = build_encoder(config)
            with torch.device("meta"):
                self.qa = torch.nn.Linear(config["hidden_size"], 2)

        def forward(self, input_ids, attention_mask):
            logits = self.qa(self.bert(input_ids, attention_mask)).float()
            return logits[..., 0], logits[..., 1]

    return SpanModel()


def base_state(folder: Path | None = None, word_embeddings: bool = True) -> tuple[dict, dict]:
    """(config, state dict under the reader's names) of the packaged encoder, as torch tensors; without the
    384 MB word table when `word_embeddings` is false (the reader then shares the embedder's)."""
    from .bert import WORD_EMBEDDINGS as BERT_WORDS
    from .bert import read_state

    folder = folder or encoder.model_folder()
    config = json.loads((folder / "config.json").read_text())
    state = read_state(folder / "model.safetensors", prefix="bert.", skip=() if word_embeddings else (BERT_WORDS,))
    return config, state


def load_tokenizer(folder: Path | None = None):
    from transformers import PreTrainedTokenizerFast

    folder = folder or encoder.model_folder()
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>",
                                   mask_token="<mask>", model_max_length=512)


# --- the committed delta ---------------------------------------------------------------------------

def write_delta(state: dict, base: dict, path: Path, metadata: dict) -> None:
    """Save only what differs from the base encoder.

    Matrices as int8 per-row deltas with a float scale per row (a fine-tuning delta is small and
    even, so 8 bits lose little), vectors (biases, layer norms) as float32 deltas, and the new
    span head in full. The word-embedding table is frozen in training and not saved.
    """
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for name, value in state.items():
        value = value.detach().float().cpu()
        if name == WORD_EMBEDDINGS:
            continue
        if name not in base:
            tensors[name] = value.contiguous()
            continue
        delta = value - base[name].float()
        if value.dim() == 2:
            scale = delta.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            tensors[name + ".delta_q"] = torch.round(delta / scale[:, None]).to(torch.int8).contiguous()
            tensors[name + ".delta_scale"] = scale.contiguous()
        else:
            tensors[name + ".delta"] = delta.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": str(DELTA_FORMAT),
                                            **{k: json.dumps(v, ensure_ascii=False) for k, v in metadata.items()}})


def apply_delta(base: dict, path: Path) -> tuple[dict, dict]:
    """The reader's full state (base + delta) and the delta's metadata."""
    from safetensors import safe_open

    state = dict(base)
    with safe_open(str(path), framework="pt") as f:
        meta = _metadata(f)
        if (f.metadata() or {}).get("format") != str(DELTA_FORMAT):
            raise ModelNotAvailableError(f"{path} is not a reader delta of format {DELTA_FORMAT}. Retrain it with "
                                         "`assistant train-reader`.")
        for key in f.keys():
            if key.endswith(".delta_q"):
                name = key[: -len(".delta_q")]
                scale = f.get_tensor(name + ".delta_scale").float()
                state[name] = base[name].float() + f.get_tensor(key).float() * scale[:, None]
            elif key.endswith(".delta"):
                name = key[: -len(".delta")]
                state[name] = base[name].float() + f.get_tensor(key).float()
            elif not key.endswith(".delta_scale"):
                state[key] = f.get_tensor(key).float()
    return state, meta


# --- inference ------------------------------------------------------------------------------------

@dataclass
class Span:
    passage: int  # index of the passage in the list given to `read`
    start: int  # character offsets in that passage
    end: int
    score: float  # start + end logit
    null_score: float  # the passage's "no answer" score (first-token logits)

    @property
    def margin(self) -> float:
        return self.score - self.null_score


class SpanReader:
    """Load once; `read(question, passages)` returns the best spans, best first."""

    max_question_tokens = 48  # a longer question is cut, so the passage keeps most of each window

    def __init__(self, run, tokenizer, max_len: int = 256, stride: int = 96, max_answer_tokens: int = 48,
                 meta: dict | None = None, runtime: str = "torch"):
        self.run = run  # (input_ids, attention_mask) -> (start logits, end logits), float32 numpy
        self.runtime = runtime
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.stride = stride
        self.max_answer_tokens = max_answer_tokens
        self.meta = meta or {}

    @classmethod
    def load(cls, path: Path = READER_FILE, runtime: str | None = None) -> SpanReader:
        """The committed reader, run by torch or by ONNX Runtime (`runtime` "torch", "onnx" for float32, "int8"
        or "uint8"; by default as assistant/onnx_runtime.py's `reader_runtime` chooses for this CPU). Either way
        its word table is the process's one 4-bit table, shared with the embedder."""
        from . import onnx_runtime
        from .bert import Tokenizer

        if not Path(path).is_file():
            raise ModelNotAvailableError(
                f"The reader's weights {path} are missing. Train them with `assistant train-reader` "
                "(see docs/design.md, 'The reader').")
        meta = read_metadata(Path(path))
        runtime = runtime or onnx_runtime.reader_runtime(Path(path))
        if runtime == "torch":
            run = _TorchRun(torch_model(Path(path)))
        else:
            run = onnx_runtime.reader_graph(Path(path), torch_model, onnx_runtime.reader_precision(runtime)).run
        training = meta.get("training", {})
        return cls(run, Tokenizer.shared(encoder.model_folder()), training.get("max_len", 256),
                   training.get("stride", 96), training.get("max_answer_tokens", 48), meta, runtime)

    def features(self, question: str, passages: list[str]):
        question = cut_question(self.tokenizer, question, self.max_question_tokens)
        return self.tokenizer.windows([question] * len(passages), passages, self.max_len, self.stride)

    def logits(self, enc) -> tuple[np.ndarray, np.ndarray]:
        """Start and end logits of every window, (windows, width); padding positions are not read from them."""
        ids, mask = enc["input_ids"], enc["attention_mask"]
        if self.runtime == "torch" or len(ids) < 2:
            return self.run(ids, mask)
        # ONNX Runtime reads each window at its own length: padding is about a quarter of three windows' tokens,
        # and the logits are the same (padding is never attended); 93 -> 85 ms a question over questions.jsonl
        # on AMX. Torch's per-call overhead makes that slower there (41 -> 45 ms).
        start, end = np.zeros(ids.shape, np.float32), np.zeros(ids.shape, np.float32)
        for w, n in enumerate(mask.sum(axis=1)):
            s, e = self.run(ids[w:w + 1, :n], mask[w:w + 1, :n])
            start[w, :n], end[w, :n] = s[0], e[0]
        return start, end

    def read(self, question: str, passages: list[str], top_n: int = 5) -> list[Span]:
        """The best spans over all passages (at most one per window), best first."""
        if not passages:
            return []
        # The reader learned from Simplified text; offsets stay valid because the conversion keeps lengths.
        enc = self.features(simplified(question), [simplified_same_length(p) for p in passages])
        start_logits, end_logits = self.logits(enc)
        return best_spans(enc, start_logits, end_logits, self.max_answer_tokens)[:top_n]


def read_metadata(path: Path) -> dict:
    """The delta's metadata (training settings, history) without reading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return _metadata(f)


def _metadata(f) -> dict:  # noqa: ANN001 - an open safetensors file
    return {k: json.loads(v) for k, v in (f.metadata() or {}).items() if k != "format"}


def torch_model(path: Path = READER_FILE):  # noqa: ANN201 - a torch module
    """The reader network in torch with its weights (the packaged encoder plus the delta), evaluation mode. Its
    word table is the process's one 4-bit table (`encoder.word_table`), the embedder's too."""
    with _lock:
        config, base = base_state(word_embeddings=False)
        state, _ = apply_delta(base, Path(path))
        model = build_inference_model(config)
        model.bert.embeddings.word_embeddings = encoder.word_table().module()
        state.pop(WORD_EMBEDDINGS, None)
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected:
            raise ModelNotAvailableError(f"{path} does not fit the encoder (missing {missing[:3]}, unexpected "
                                         f"{unexpected[:3]}). Retrain it with `assistant train-reader`.")
        return model.eval().requires_grad_(False)


class _TorchRun:
    """The torch reader as a function of numpy arrays; bf16 where the CPU has it natively.

    In bf16 the matrices are held in bf16 from the start: autocast would round the same float32 weights to the
    same bf16 values at every call (the same logits, bit for bit), and holding both halves the weights' memory
    (85 -> 43 MB). Layer norms and embeddings stay float32, as autocast runs them."""

    def __init__(self, model):  # noqa: ANN001
        from .onnx_runtime import bf16_is_fast

        self.bf16 = bf16_is_fast()
        if self.bf16:
            import torch

            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(torch.bfloat16)
        self.model = model

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with model_run(), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            start, end = self.model(torch.from_numpy(input_ids).long(), torch.from_numpy(attention_mask).long())
        return start.float().numpy(), end.float().numpy()


def cut_question(tokenizer, question: str, limit: int) -> str:
    """The question cut after `limit` tokens, so that a long one leaves the passage most of each window."""
    enc = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= limit:
        return question
    return question[: enc["offset_mapping"][limit - 1][1]]


def best_spans(enc, start_logits: np.ndarray, end_logits: np.ndarray, max_answer_tokens: int) -> list[Span]:
    """The best span of each window, best first; windows map back to passages and characters."""
    spans = []
    for w in range(len(start_logits)):
        seq = enc.sequence_ids(w)
        context = np.array([s == 1 for s in seq])
        if not context.any():
            continue
        s_log = np.where(context, start_logits[w][: len(seq)], -1e9)
        e_log = np.where(context, end_logits[w][: len(seq)], -1e9)
        # best (i, j) with i <= j < i + max_answer_tokens, in O(n * max_answer_tokens)
        n = len(seq)
        best, bi, bj = -1e18, 0, 0
        for length in range(max_answer_tokens):
            if length >= n:
                break
            total = s_log[: n - length] + e_log[length:]
            k = int(np.argmax(total))
            if total[k] > best:
                best, bi, bj = float(total[k]), k, k + length
        offsets = enc["offset_mapping"][w]
        passage = int(enc["overflow_to_sample_mapping"][w])
        spans.append(Span(passage, int(offsets[bi][0]), int(offsets[bj][1]), best,
                          float(start_logits[w][0] + end_logits[w][0])))
    spans.sort(key=lambda s: -s.score)
    return spans
