"""assistant/bert.py, the lean answering runtime, held to transformers' BertModel and tokenizer: the reader
must read exactly as the network it was trained as (tests/test_embeddings.py does the same for the embedder)."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.reader import READER_FILE, SpanReader, apply_delta, base_state, build_model, load_tokenizer

QUESTION = "英伟达是谁创立的?"
PASSAGES = [
    "1993年,黄仁勋创立了英伟达,彼时的英伟达还只是一家纯粹的显卡公司。",
    "Who founded Nvidia? ～全角波浪号  两个空格\t制表符 Ｆｕｌｌｗｉｄｔｈ ①②",
    # long enough for several overlapping windows, so overflow, offsets and padding are all exercised
    "上海的人工智能产业生态正在形成。" * 60,
]


@pytest.fixture(scope="module")
def lean():
    with pytest.MonkeyPatch.context() as patch:  # float32 matrices, to compare with transformers' network
        patch.setenv("ASSISTANT_READER_FP32", "1")
        return SpanReader.load(runtime="torch")


def test_windows_match_the_transformers_tokenizer(lean):
    hf = load_tokenizer()
    want = hf([QUESTION] * 3, PASSAGES, truncation="only_second", max_length=lean.max_len, stride=lean.stride,
              return_overflowing_tokens=True, return_offsets_mapping=True, padding=True, return_tensors="np")
    got = lean.features(QUESTION, PASSAGES)
    assert len(got.input_ids) > 4  # the long passage overflowed
    for key in ("input_ids", "attention_mask", "offset_mapping", "overflow_to_sample_mapping"):
        assert np.array_equal(got[key], want[key]), key
    assert [got.sequence_ids(w) for w in range(len(got.input_ids))] == \
        [want.sequence_ids(w) for w in range(len(want["input_ids"]))]
    assert lean.tokenizer(QUESTION, add_special_tokens=False, return_offsets_mapping=True) == \
        {k: list(map(tuple, v)) if k == "offset_mapping" else v
         for k, v in hf(QUESTION, add_special_tokens=False, return_offsets_mapping=True).items()
         if k in ("input_ids", "offset_mapping")}


# what differs from one text to the next at the edges of normalisation: leading, trailing and repeated spaces,
# tabs and ideographic spaces, characters the map widens (㍿ -> 株式会社) or removes, fullwidth forms, emoji and
# characters outside the vocabulary, the special pieces written as text, English
EDGES = ["", " ", "  ", " a", "a ", "  a  b  ", "\ta\nb", "a\u3000\u3000b", "㍿ 株式会社 ①②", "ＡＢＣ１２３ ～",
         "😀😀 x 𠀀𠀁", "<s> a </s> <mask>", "  Who  founded Nvidia? ", "您好！很高兴为您解答，    不能解除 你只能换个号码",
         " 一般认为是内生血肌酐", "e\u200bf\u00adg", "2.0%、3.71万人、6.1万平方米"]


def test_tokenizer_ids_and_offsets_are_those_of_tokenizer_json():
    """The sentencepiece tokenizer answering runs gives the ids and character offsets of the `tokenizers` one
    that training runs, over every line of the seed corpus and its questions and the edge cases above."""
    import json
    from pathlib import Path

    from tokenizers import Tokenizer as Reference

    from assistant import encoder
    from assistant.bert import Tokenizer

    folder = encoder.model_folder()
    want, got = Reference.from_file(str(folder / "tokenizer.json")), Tokenizer(folder)
    root = Path(__file__).resolve().parent.parent
    texts = [line for path in sorted((root / "corpus").rglob("*.txt")) + sorted((root / "corpus").rglob("*.md"))
             for line in path.read_text(encoding="utf-8").splitlines()]
    texts += [json.loads(line)["question"] for path in sorted((root / "corpus" / "eval").glob("*.jsonl"))
              for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts += EDGES
    assert len(texts) > 300
    for text in texts:
        reference = want.encode(text, add_special_tokens=False)
        ids, offsets = got.encode(text)
        assert (ids, offsets) == (reference.ids, list(reference.offsets)), text
    assert got.ids(texts) == [e.ids for e in want.encode_batch(texts, add_special_tokens=False)]
    want.enable_truncation(16)  # counting <s> and </s>, as `batch` cuts
    ids, mask = got.batch(texts[:50], 16)
    assert [row[m == 1].tolist() for row, m in zip(ids, mask, strict=True)] == \
        [e.ids for e in want.encode_batch(texts[:50])]


def test_reader_logits_match_the_transformers_network(lean):
    """The same delta in transformers' BertModel (as training builds it) gives the same logits, padded
    windows included, so the calibration fitted on that network holds for this one."""
    import torch

    config, base = base_state()
    state, _ = apply_delta(base, READER_FILE)
    reference = build_model(config)
    reference.load_state_dict(state, strict=False)
    reference.eval()
    enc = lean.features(QUESTION, PASSAGES)
    with torch.inference_mode():
        want = reference(torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask))
        got = lean.run.model(torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask))
    for w, g in zip(want, got, strict=True):
        mask = enc.attention_mask.astype(bool)
        assert np.abs(w.numpy()[mask] - g.numpy()[mask]).max() < 1e-4
    spans = lean.read(QUESTION, PASSAGES[:1])
    assert spans and PASSAGES[0][spans[0].start:spans[0].end] == "黄仁勋"


def test_the_bf16_reader_holds_bf16_matrices_and_reads_as_autocast_does(lean, monkeypatch):
    """Where bf16 is native the torch reader keeps its matrices in bf16: the logits of autocast over the float32
    matrices, bit for bit (autocast rounds the same weights to the same values at every call)."""
    import torch

    from assistant import onnx_runtime
    from assistant.reader import _TorchRun, torch_model

    monkeypatch.delenv("ASSISTANT_READER_FP32", raising=False)
    monkeypatch.setattr(onnx_runtime, "_native_bf16", lambda: True)
    held = _TorchRun(torch_model())
    assert held.bf16 and {p.dtype for n, p in held.model.named_parameters() if "LayerNorm" not in n and
                          "embeddings" not in n} == {torch.bfloat16}
    enc = lean.features(QUESTION, PASSAGES)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = lean.run.model(torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask))
    for w, g in zip(want, held(enc.input_ids, enc.attention_mask), strict=True):
        assert np.array_equal(w.float().numpy(), g)


def test_onnx_reader_reads_as_the_torch_network(lean, monkeypatch):
    """The exported graph (assistant/onnx_runtime.py) gives torch's float32 logits and the same answer."""
    import torch

    from assistant import onnx_runtime

    enc = lean.features(QUESTION, PASSAGES)
    mask = enc.attention_mask.astype(bool)
    with torch.inference_mode():
        want = [t.numpy() for t in lean.run.model(torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask))]
    onnx = SpanReader.load(runtime="onnx")
    assert onnx.runtime == "onnx"
    for w, g in zip(want, onnx.logits(enc), strict=True):
        assert np.abs(w[mask] - g[mask]).max() < 1e-3
    spans = onnx.read(QUESTION, PASSAGES[:1])
    assert spans and PASSAGES[0][spans[0].start:spans[0].end] == "黄仁勋"
    # the choice: torch only where bf16 is native; ASSISTANT_RUNTIME overrides; a wrong value says what to set
    monkeypatch.setenv("ASSISTANT_RUNTIME", "onnx")
    assert onnx_runtime.reader_runtime(READER_FILE) == "onnx" and SpanReader.load().runtime == "onnx"
    monkeypatch.setenv("ASSISTANT_RUNTIME", "torch")
    assert onnx_runtime.reader_runtime(READER_FILE) == "torch" and not onnx_runtime.enabled()
    monkeypatch.setenv("ASSISTANT_RUNTIME", "fast")
    from assistant.errors import ConfigError

    with pytest.raises(ConfigError, match="auto, onnx, int8, uint8, torch"):
        onnx_runtime.choice()


def test_int8_reader_keeps_the_float_answers(lean, tmp_path, monkeypatch):
    """The int8 reader (assistant/quantize.py): smoothing leaves every product as it was, the int8 graphs made
    from the committed activation ranges (signed and unsigned weights) keep the float logits close and the
    answer, and ranges measured on another reader file are never used for this one."""
    import shutil

    import torch

    from assistant import onnx_runtime, quantize

    # smoothing: (x / s) @ (W * s).T is x @ W.T
    torch.manual_seed(20261207)
    query = lean.run.model.bert.encoder.layer[0].attention.self.query
    x = torch.randn(7, query.in_features) * torch.linspace(0.1, 30, query.in_features)
    s = quantize.scales(query.weight, x.abs().amax(0))
    with torch.inference_mode():
        assert torch.allclose(quantize._smoothed(query, s)(x), query(x), atol=1e-4)
        # the simulation of int8 is near the exact product, not equal to it
        simulated, exact = quantize.simulated(x, query.weight, query.bias, s), query(x)
        assert 0 < (simulated - exact).norm() / exact.norm() < 0.05

    assert quantize.matching(READER_FILE) == quantize.INT8_FILE, "the committed ranges are for the committed reader"
    int8 = SpanReader.load(runtime="int8")
    assert int8.runtime == "int8"
    enc = lean.features(QUESTION, PASSAGES)
    mask = enc.attention_mask.astype(bool)
    # Where it is used (int8 dot products: VNNI, AMX), 0.017 measured. Without VNNI ONNX Runtime's kernels may
    # saturate; auto never reads in int8 there, so only that it runs is checked.
    bound = 0.15 if onnx_runtime.int8_is_fast() else np.inf
    for want, got in zip(lean.logits(enc), int8.logits(enc), strict=True):
        assert 0 < np.abs(want[mask] - got[mask]).mean() < bound  # int8, so not bit for bit
    spans = int8.read(QUESTION, PASSAGES[:1])
    assert spans and (PASSAGES[0][spans[0].start:spans[0].end] == "黄仁勋" or not onnx_runtime.int8_is_fast())
    # unsigned 8-bit weights (U8U8 kernels, which do not saturate without VNNI): close on every CPU
    uint8 = SpanReader.load(runtime="uint8")
    assert uint8.runtime == "uint8"
    for want, got in zip(lean.logits(enc), uint8.logits(enc), strict=True):
        assert 0 < np.abs(want[mask] - got[mask]).mean() < 0.15
    spans = uint8.read(QUESTION, PASSAGES[:1])
    assert spans and PASSAGES[0][spans[0].start:spans[0].end] == "黄仁勋"

    from safetensors import safe_open
    from safetensors.numpy import save_file

    other = tmp_path / "reader.safetensors"  # the same weights in another file: its ranges were never measured
    with safe_open(str(READER_FILE), "np") as f:
        save_file({k: f.get_tensor(k) for k in f.keys()}, str(other), metadata={**f.metadata(), "copy": "1"})  # noqa: SIM118
    monkeypatch.setenv("ASSISTANT_RUNTIME", "auto")
    shutil.copyfile(quantize.INT8_FILE, quantize.ranges_file(other))  # the ranges of another file beside it
    assert quantize.matching(other) is None and onnx_runtime.reader_runtime(other) != "int8"
    monkeypatch.setenv("ASSISTANT_RUNTIME", "int8")
    from assistant.errors import ModelNotAvailableError

    with pytest.raises(ModelNotAvailableError, match="quantize-reader"):
        SpanReader.load(other)
