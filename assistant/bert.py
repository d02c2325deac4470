"""multilingual-e5-small for inference in plain torch: the encoder and its tokenizer, without transformers.

The e5 encoder is a 12-layer BERT. `transformers` (with `sentence-transformers` on top) builds it through
several seconds of imports and a random initialisation that the weights then overwrite; the forward pass
itself is twenty lines. This module is those lines, under Hugging Face's parameter names (so the same
state dicts load into either), built on torch's meta device and given the weights in place, and the
tokenizer (sentencepiece over the same vocabulary, `Tokenizer`) read once per process. Used for answering (the
e5 embedder, the reader); training keeps transformers' BertModel (assistant/training.py), and any other
embedding model a user configures still goes through sentence-transformers. tests/test_bert.py holds both to
each other's outputs.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
_lock = threading.Lock()
_tokenizers: dict[str, Tokenizer] = {}
_loading: dict[str, threading.Thread] = {}  # model folder -> the thread reading its tokenizer
_SPACES = re.compile(" {2,}")


# --- tokenizer --------------------------------------------------------------------------------------

@dataclass
class Windows:
    """Question-passage pairs cut into windows, as a Hugging Face fast tokenizer returns them with
    `return_overflowing_tokens=True, return_offsets_mapping=True, padding=True, return_tensors="np"`."""

    input_ids: np.ndarray  # (windows, length), padded with the pad id
    attention_mask: np.ndarray
    offset_mapping: np.ndarray  # (windows, length, 2) character offsets into the pair's own text
    overflow_to_sample_mapping: np.ndarray  # window -> pair
    _sequence_ids: list[list[int | None]]

    def __getitem__(self, key: str) -> np.ndarray:
        return getattr(self, key)

    def sequence_ids(self, window: int) -> list[int | None]:
        return self._sequence_ids[window]


class Tokenizer:
    """The e5 tokenizer as answering runs it: the packed tokenizer's character map, then sentencepiece's Unigram
    segmentation over the 250k pieces (assistant/encoder.py writes both into the model folder). Ids and character
    offsets are those of the Hugging Face tokenizer of `tokenizer.json`, which training uses (tests/test_bert.py
    compares them over the corpus, its questions and edge cases; 4,210 CMRC, DuReader and seed texts agreed when
    measured), in 45 MB instead of 290 MB. Loaded once per process and shared by the embedder and the reader;
    sentencepiece's encoding is safe across threads."""

    def __init__(self, folder: Path):
        import sentencepiece

        from .encoder import CHARMAP_FILE, SPM_FILE

        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(Path(folder) / SPM_FILE))
        charmap = json.loads((Path(folder) / CHARMAP_FILE).read_text(encoding="utf-8"))
        self._charmap = {int(cp): out for cp, out in charmap.items()}
        self._same_length = {cp: out for cp, out in self._charmap.items() if len(out) == 1}
        resizing = "".join(re.escape(chr(cp)) for cp, out in self._charmap.items() if len(out) != 1)
        self._resizing = re.compile(f"[{resizing}]") if resizing else None
        self.pad_token_id, self.unk_token_id = self._sp.piece_to_id("<pad>"), self._sp.unk_id()
        self._bos, self._eos, self._space = (self._sp.piece_to_id(p) for p in ("<s>", "</s>", "\u2581"))

    @classmethod
    def shared(cls, folder: Path) -> Tokenizer:
        key = str(folder)
        with _lock:
            if key in _tokenizers:
                return _tokenizers[key]
            loader = _loading.get(key)
            if loader is None:  # this thread loads it; others wait on it rather than parse it twice
                _loading[key] = threading.current_thread()
        if loader is not None:
            if loader is not threading.current_thread():
                loader.join()
            return cls.shared(folder)
        try:
            tokenizer = cls(Path(folder))
        finally:
            with _lock:
                _loading.pop(key, None)
        with _lock:
            return _tokenizers.setdefault(key, tokenizer)

    def _normalized(self, text: str) -> tuple[str, list[int] | None]:
        """The text as the model reads it (the character map, runs of spaces as one) and, where that moved any
        character, the original position of each character of it (None: position i is i)."""
        plain = text.translate(self._same_length)
        if "  " not in plain and not (self._resizing and self._resizing.search(text)):
            return plain, None
        out: list[str] = []
        origin: list[int] = []
        for i, ch in enumerate(text):
            for c in self._charmap.get(ord(ch), ch):
                if c == " " and out and out[-1] == " ":
                    origin[-1] = i  # a run of spaces is read as its last one (as tokenizers' Replace)
                    continue
                out.append(c)
                origin.append(i)
        return "".join(out), origin

    def _prepared(self, text: str) -> tuple[str, list[int] | None, int | None]:
        """(normalized text less a leading space, origins, where that space was). Sentencepiece puts its word-start
        mark before every text; `tokenizer.json` puts one only where the text does not start with a space."""
        norm, origin = self._normalized(text)
        if not norm.startswith(" "):
            return norm, origin, None
        if origin is None:
            origin = list(range(len(norm)))
        return norm[1:], origin[1:], origin[0]

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """The text's token ids (no special tokens) and each token's character offsets in `text`."""
        norm, origin, lead = self._prepared(text)
        if not norm:
            return ([self._space], [(lead, lead + 1)]) if lead is not None else ([], [])
        raw = norm.encode("utf-8")
        if len(raw) == len(norm):
            char_of = None  # ASCII: a byte offset is a character offset
        else:
            starts = (np.frombuffer(raw, np.uint8) & 0xC0) != 0x80
            char_of = np.append(np.cumsum(starts) - 1, len(norm))
        ids, offsets = [], []
        for k, piece in enumerate(self._sp.encode(norm, return_type="proto").pieces):
            s, e = (piece.begin, piece.end) if char_of is None else (int(char_of[piece.begin]), int(char_of[piece.end]))
            if origin is not None:
                s, e = (origin[s] if s < len(origin) else len(text)), (origin[e - 1] + 1 if e else 0)
            if k == 0 and lead is not None:
                s = lead  # the word-start mark stands for the leading space
            if piece.begin == piece.end:
                e = s + 1  # the mark sentencepiece added: tokenizers gives it the first character
            ids.append(piece.id)
            offsets.append((s, e))
        return ids, offsets

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens), without offsets: the fast path of embedding, which needs no
        character positions (`str.translate` applies the whole map at once)."""
        norms = [_SPACES.sub(" ", t.translate(self._charmap)) for t in texts]
        encoded = self._sp.encode([n[1:] if n.startswith(" ") else n for n in norms]) if norms else []
        # a text of one space is the word-start mark alone
        return [ids if ids or not n.startswith(" ") else [self._space] for ids, n in zip(encoded, norms, strict=True)]

    def __call__(self, texts, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> dict:
        """`{"input_ids": ...}` (and offsets) of one text or a list, untruncated: the calls the project makes of
        a Hugging Face tokenizer outside batching."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if return_offsets_mapping:
            encoded = [self.encode(t) for t in texts]
        else:
            encoded = [(ids, None) for ids in self.ids(texts)]
        ids = [[self._bos, *i, self._eos] if add_special_tokens else i for i, _ in encoded]
        out = {"input_ids": ids}
        if return_offsets_mapping:
            out["offset_mapping"] = [[(0, 0), *o, (0, 0)] if add_special_tokens else o for _, o in encoded]
        return {k: v[0] for k, v in out.items()} if single else out

    def batch(self, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask) of texts, each cut at max_length tokens, padded to the longest."""
        return self._padded([[self._bos, *ids[: max_length - 2], self._eos] for ids in self.ids(texts)])

    def windows(self, questions: list[str], passages: list[str], max_length: int, stride: int) -> Windows:
        """Each (question, passage) pair in windows of max_length tokens, the passage cut with `stride` tokens
        of overlap, as Hugging Face's `truncation="only_second"` with overflowing tokens cuts it."""
        rows, offsets, sequence_ids, owner = [], [], [], []
        cache: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}
        for i, (question, passage) in enumerate(zip(questions, passages, strict=True)):
            if question not in cache:
                cache[question] = self.encode(question)
            q_ids, q_offsets = cache[question]
            p_ids, p_offsets = self.encode(passage)
            room = max_length - len(q_ids) - 4  # <s> question </s> </s> passage </s>
            if room <= stride and len(p_ids) > room:
                raise ValueError(f"The question takes {len(q_ids)} of {max_length} tokens: too few are left for a "
                                 f"passage window with a stride of {stride}. Shorten the question.")
            for a, b in _parts(len(p_ids), room, stride):
                rows.append([self._bos, *q_ids, self._eos, self._eos, *p_ids[a:b], self._eos])
                offsets.append([(0, 0), *q_offsets, (0, 0), (0, 0), *p_offsets[a:b], (0, 0)])
                sequence_ids.append([None, *[0] * len(q_ids), None, None, *[1] * (b - a), None])
                owner.append(i)
        ids, mask = self._padded(rows)
        spans = np.zeros((*ids.shape, 2), dtype=np.int64)
        for w, row in enumerate(offsets):
            spans[w, : len(row)] = row
        width = ids.shape[1]
        sequence_ids = [s + [None] * (width - len(s)) for s in sequence_ids]  # padding: None
        return Windows(ids, mask, spans, np.asarray(owner, dtype=np.int64), sequence_ids)

    def _padded(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max((len(r) for r in rows), default=0)
        ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask


def _parts(n: int, room: int, stride: int) -> list[tuple[int, int]]:
    """Token ranges of a passage of n tokens in windows of `room`, each starting `room - stride` after the last
    (tokenizers' `Encoding.truncate`): the last one ends at the passage's end."""
    if n <= room:
        return [(0, n)]
    parts = []
    for start in range(0, n, room - stride):
        parts.append((start, min(start + room, n)))
        if start + room >= n:
            break
    return parts


# --- encoder ----------------------------------------------------------------------------------------

def build_encoder(config: dict):
    """A BERT encoder (no pooler) with Hugging Face BertModel's parameter names, on the meta device: its
    weights are given by `load_state_dict(..., assign=True)`, never initialised at random."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    h, heads, eps = config["hidden_size"], config["num_attention_heads"], config.get("layer_norm_eps", 1e-12)
    ff = config["intermediate_size"]

    class Embeddings(nn.Module):
        def __init__(self):
            super().__init__()
            # given `_weight`, nn.Embedding skips its random init, whose normal_ on the meta device imports
            # torch._dynamo (1.3 s of a cold start)
            def table(rows):
                return nn.Embedding(rows, h, _weight=torch.empty(rows, h, device="meta"))

            self.word_embeddings = table(config["vocab_size"])
            self.position_embeddings = table(config["max_position_embeddings"])
            self.token_type_embeddings = table(config["type_vocab_size"])
            self.LayerNorm = nn.LayerNorm(h, eps=eps)

        def forward(self, input_ids):
            return self.from_words(self.word_embeddings(input_ids))

        def from_words(self, words):
            x = words + self.token_type_embeddings.weight[0]  # BertEmbeddings' order
            return self.LayerNorm(x + self.position_embeddings.weight[: words.shape[1]])

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)

    class Output(nn.Module):
        def __init__(self, n_in):
            super().__init__()
            self.dense = nn.Linear(n_in, h)
            self.LayerNorm = nn.LayerNorm(h, eps=eps)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.self = SelfAttention()
            self.output = Output(h)

    class Intermediate(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(h, ff)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = Attention()
            self.intermediate = Intermediate()
            self.output = Output(ff)

        def forward(self, x, mask):
            b, n, _ = x.shape
            a = self.attention.self

            def split(t):
                return t.view(b, n, heads, h // heads).transpose(1, 2)

            ctx = F.scaled_dot_product_attention(split(a.query(x)), split(a.key(x)), split(a.value(x)), attn_mask=mask)
            ctx = ctx.transpose(1, 2).reshape(b, n, h)
            out = self.attention.output
            x = out.LayerNorm(out.dense(ctx) + x)
            out = self.output
            return out.LayerNorm(out.dense(F.gelu(self.intermediate.dense(x))) + x)

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.ModuleList(Layer() for _ in range(config["num_hidden_layers"]))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = Embeddings()
            self.encoder = Stack()

        def forward(self, input_ids, attention_mask):
            # no mask when nothing is padded (as transformers)
            return self.from_words(self.embeddings.word_embeddings(input_ids), attention_mask,
                                   masked=not bool(attention_mask.all()))

        def from_words(self, words, attention_mask, masked: bool = True):
            """The token states from the word vectors on (ONNX export starts here: assistant/onnx_runtime.py)."""
            x = self.embeddings.from_words(words)
            # (batch, 1, 1, keys): padding is never attended
            mask = attention_mask.bool()[:, None, None, :] if masked else None
            for layer in self.encoder.layer:
                x = layer(x, mask)
            return x

    with torch.device("meta"):
        return Encoder()


def read_state(path: Path, prefix: str = "", skip: tuple[str, ...] = ()) -> dict:
    """The safetensors file's tensors (as torch tensors) under `prefix`, less `skip` and BERT's pooler."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {prefix + k: f.get_tensor(k) for k in f.keys() if k not in skip and not k.startswith("pooler.")}


def load_encoder(folder: Path, word_embeddings=None):
    """The folder's encoder in evaluation mode; `word_embeddings` (a module) replaces the word table, which
    is then never read from the file."""
    import torch

    config = json.loads((Path(folder) / "config.json").read_text())
    model = build_encoder(config)
    state = read_state(Path(folder) / "model.safetensors", skip=(WORD_EMBEDDINGS,) if word_embeddings else ())
    if word_embeddings is not None:
        model.embeddings.word_embeddings = word_embeddings
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        from .errors import ModelNotAvailableError

        raise ModelNotAvailableError(f"{folder} does not hold the e5 encoder this runtime reads (missing {missing[:3]}, "
                                     f"unexpected {unexpected[:3]}). Delete the folder; it is written again.")
    torch.nn.Module.eval(model)
    return model.requires_grad_(False)


def mean_pooled(hidden, attention_mask):
    """e5's sentence vector: the mean of the token states under the mask, unit length."""
    from torch.nn import functional as F

    mask = attention_mask[..., None].to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(summed, p=2, dim=1)
