"""Immutable index segments: a segment's dense vectors (FAISS) and BM25 postings (term counts), on disk.

    segments/<name>/dense.faiss    inner product over unit vectors, row i = the segment's chunk i: exhaustive
                                   (IndexFlatIP) below GRAPH_MIN_ROWS rows, an HNSW graph over the same
                                   vectors (IndexHNSWFlat) from there on
    segments/<name>/postings.npz   term counts as a CSC matrix (rows = chunks, columns = the segment's terms)
    segments/<name>/terms.json     the column order of the terms

Nothing here is a pickle. Files are written and fsynced before the catalog commits the segment, and their
sha256 and size are recorded there; a load checks sizes, `assistant index verify` the checksums.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from scipy import sparse

from .errors import IndexCorruptError

SEGMENTS = "segments"
DENSE = "dense.faiss"
POSTINGS = "postings.npz"
TERMS = "terms.json"

# A segment this large is searched through an HNSW graph: an exhaustive scan reads all its vectors for every
# query (~24 ms over 177k rows on one core), the graph a few thousand of them. Smaller segments stay exact.
# The parameters were chosen on the 8,000-article benchmark corpus (see docs/benchmarks.md).
GRAPH_MIN_ROWS = 20_000
HNSW_M = 32  # neighbours per node
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 256  # candidates kept while searching (at least k)


@dataclass
class Segment:
    name: str
    dense: faiss.Index
    postings: sparse.csc_array  # chunks x terms, term counts
    terms: list[str]

    def __post_init__(self) -> None:
        self.column = {t: i for i, t in enumerate(self.terms)}
        self.lengths = np.asarray(self.postings.sum(axis=1)).ravel().astype(np.float32)

    @property
    def rows(self) -> int:
        return int(self.dense.ntotal)

    def search(self, query: np.ndarray, k: int, live: faiss.IDSelector | None = None,
               exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(scores, local rows) of the k best rows for one query, rows outside `live` skipped; -1 pads.

        `exact`: scan the graph's own vector storage instead of walking the graph; a walk filtered to a small
        share of the rows (a question scoped to one article) would end before it met k of them."""
        k = min(k, self.rows)
        if exact and isinstance(self.dense, faiss.IndexHNSW):
            storage = faiss.downcast_index(self.dense.storage)
            return storage.search(query, k, params=faiss.SearchParameters(sel=live) if live is not None else None)
        if isinstance(self.dense, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, k), sel=live)
        else:
            params = faiss.SearchParameters(sel=live) if live is not None else None
        return self.dense.search(query, k, params=params)

    def vectors(self, rows) -> np.ndarray:  # noqa: ANN001 - any integer sequence
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return np.zeros((0, self.dense.d), dtype="float32")
        return np.vstack([self.dense.reconstruct(int(r)) for r in rows]).astype("float32")

    def row_tokens(self, rows) -> sparse.csr_array:  # noqa: ANN001
        return self.postings.tocsr()[np.asarray(rows, dtype=np.int64)]


class PostingsBuilder:
    """Term counts of chunks added one at a time, in compact arrays (no token list is kept)."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.rows, self.cols = array("i"), array("i")
        self.n = 0

    def add(self, tokens: Iterable[str]) -> None:
        vocab = self.vocab
        self.cols.extend(vocab.setdefault(t, len(vocab)) for t in tokens)
        self.rows.extend(itertools.repeat(self.n, len(self.cols) - len(self.rows)))
        self.n += 1

    def build(self) -> tuple[sparse.csc_array, list[str]]:
        data = np.ones(len(self.rows), dtype=np.int32)
        matrix = sparse.coo_array((data, (np.frombuffer(self.rows, np.int32), np.frombuffer(self.cols, np.int32))),
                                  shape=(self.n, len(self.vocab))).tocsc()
        matrix.sum_duplicates()
        return matrix, list(self.vocab)


def postings_from_tokens(tokens: Iterable[list[str]]) -> tuple[sparse.csc_array, list[str]]:
    """Term counts of tokenised chunks and the term of each column."""
    builder = PostingsBuilder()
    for toks in tokens:
        builder.add(toks)
    return builder.build()


def stack_postings(parts: list[tuple[sparse.csr_array, list[str]]]) -> tuple[sparse.csc_array, list[str]]:
    """Rows of several segments' postings (each with its own terms) as one matrix over the union of terms."""
    vocab: dict[str, int] = {}
    blocks = []
    for matrix, terms in parts:
        remap = np.asarray([vocab.setdefault(t, len(vocab)) for t in terms] or [0], dtype=np.int64)
        coo = sparse.coo_array(matrix)
        blocks.append((coo.row, remap[coo.col] if coo.nnz else coo.col, coo.data, matrix.shape[0]))
    offset, rows, cols, data = 0, [], [], []
    for r, c, d, n in blocks:
        rows.append(r + offset)
        cols.append(c)
        data.append(d)
        offset += n
    def cat(parts: list, dtype) -> np.ndarray:  # noqa: ANN001
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    matrix = sparse.coo_array((cat(data, np.int32), (cat(rows, np.int64), cat(cols, np.int64))),
                              shape=(offset, len(vocab))).tocsc()
    return matrix, list(vocab)


def write_segment(index_dir: Path, name: str, dense: faiss.Index, postings: sparse.csc_array,
                  terms: list[str]) -> dict[str, list]:
    """Write and fsync a segment's files (`dense` from `dense_index` or a `DenseBuilder`); file name ->
    [sha256, size]. A failure removes the folder."""
    folder = Path(index_dir) / SEGMENTS / name
    try:
        folder.mkdir(parents=True)
        faiss.write_index(dense, str(folder / DENSE))
        postings = sparse.csc_array(postings)
        np.savez(folder / POSTINGS, data=postings.data.astype(np.int32), indices=postings.indices.astype(np.int32),
                 indptr=postings.indptr.astype(np.int64), shape=np.asarray(postings.shape, dtype=np.int64))
        (folder / TERMS).write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        files = {}
        for path in sorted(folder.iterdir()):
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            files[path.name] = [sha256(path), path.stat().st_size]
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return files
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def dense_index(vectors: np.ndarray) -> faiss.Index:
    """The segment's vector index: exhaustive while small, an HNSW graph from GRAPH_MIN_ROWS rows."""
    builder = DenseBuilder(vectors.shape[1], graph=len(vectors) >= GRAPH_MIN_ROWS)
    builder.add(vectors)
    return builder.finish()


class DenseBuilder:
    """A segment's vector index filled part by part, holding one copy of the vectors: the index's own storage.

    A segment whose size is not known in advance (a full build's, a merge's) starts as a graph, built as parts
    arrive (FAISS adds to an HNSW graph incrementally); if it ends below GRAPH_MIN_ROWS it becomes an exact index
    of the same vectors (a copy of at most GRAPH_MIN_ROWS rows). Buffering the vectors and building the index at
    the end held them twice: 77 MB more at the peak of a full build's 50,000-row segment."""

    def __init__(self, dimension: int, graph: bool = True):
        if graph:
            self.index = faiss.IndexHNSWFlat(dimension, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        else:
            self.index = faiss.IndexFlatIP(dimension)

    @property
    def rows(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        if len(vectors):
            self.index.add(np.ascontiguousarray(vectors, dtype="float32"))

    def finish(self) -> faiss.Index:
        index, self.index = self.index, None
        if isinstance(index, faiss.IndexHNSW) and index.ntotal < GRAPH_MIN_ROWS:
            storage = faiss.downcast_index(index.storage)
            flat = faiss.IndexFlatIP(index.d)
            flat.add(faiss.rev_swig_ptr(storage.get_xb(), index.ntotal * index.d).reshape(-1, index.d))
            return flat
        return index


def check_segment_files(index_dir: Path, name: str, files: dict[str, list], verify: bool = False) -> None:
    """IndexCorruptError when a segment file is missing or of another size than the catalog says (or, with
    `verify`, of another checksum)."""
    folder = Path(index_dir) / SEGMENTS / name
    for file, (digest, size) in files.items():
        path = folder / file
        if not path.is_file() or path.stat().st_size != size or (verify and sha256(path) != digest):
            raise IndexCorruptError(
                f"Index file {path} is missing or damaged ({'checksum' if verify else 'size'} mismatch). "
                "Rebuild with `assistant index build --full`.")


def load_segment(index_dir: Path, name: str, files: dict[str, list], verify: bool = False) -> Segment:
    """A segment's dense index (read into memory) and postings; sizes checked, checksums when `verify`."""
    folder = Path(index_dir) / SEGMENTS / name
    check_segment_files(index_dir, name, files, verify)
    try:
        # read into memory, not mapped: mapped (IO_FLAG_MMAP_IFC) the 177k-chunk benchmark's search p95 went from
        # ~25 to 305 ms, as pages the OS dropped from its (here small) page cache were read back mid-query
        dense = faiss.read_index(str(folder / DENSE))
        with np.load(folder / POSTINGS, allow_pickle=False) as data:
            shape = tuple(int(x) for x in data["shape"])
            postings = sparse.csc_array((data["data"], data["indices"], data["indptr"]), shape=shape)
        terms = json.loads((folder / TERMS).read_text(encoding="utf-8"))
        if not isinstance(terms, list) or len(terms) != shape[1] or shape[0] != dense.ntotal:
            raise ValueError("the segment's files disagree on its size")
    except Exception as exc:  # noqa: BLE001 - faiss, zip, npy and JSON errors alike mean a damaged segment
        raise IndexCorruptError(f"Index segment {folder} is damaged ({type(exc).__name__}: {str(exc)[:120]}). "
                                "Rebuild with `assistant index build --full`.") from None
    return Segment(name, dense, postings, terms)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
