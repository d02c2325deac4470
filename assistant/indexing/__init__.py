"""Build, update and load the hybrid index: FAISS + BM25 segments under a SQLite catalog.

    index/CURRENT                         -> "v-20261124T101500-1a2b3c" (the live generation)
    index/v-.../manifest.json             what turns text into vectors and tokens (model, chunker, matching)
    index/v-.../catalog.sqlite            sources, documents, chunks, segments, tombstones, words (WAL)
    index/v-.../segments/<name>/          one immutable segment: dense.faiss, postings.npz, terms.json

An incremental build (an add, a change, a removal) writes one small new segment with the new and changed
files' chunks, then commits in one catalog transaction: the segment, its chunks and documents, tombstones
for the chunks of removed and replaced files, the learned words. It costs what changed, not what exists.
After the commit, segments merge when a size tier holds too many or a segment is mostly tombstones.
A full build (new model, chunker or tokeniser, `--full`, damage) writes a new generation beside the live
one and switches CURRENT to it atomically. A build killed at any point leaves the last commit loadable:
segment folders that no committed row names are removed by the next build.

The modules, in the order a build runs them: `build` (full and incremental builds), `merge` (tiered merges
after a commit), `durability` (all-or-nothing writes, fsync), `milvus_sync` (the Milvus backend's collection
kept in step), `generations` (the folder, CURRENT, the manifest, the lock, cleanup), `loading` (the live
snapshot a question reads), `limits` (sizes and thresholds).
"""

from .build import BuildReport, build_index
from .generations import CURRENT, MANIFEST, build_lock, committed_sources, current_version, read_manifest
from .loading import LoadedIndex, Scope, load_index

__all__ = ["CURRENT", "MANIFEST", "BuildReport", "LoadedIndex", "Scope", "build_index", "build_lock",
           "committed_sources", "current_version", "load_index", "read_manifest"]
