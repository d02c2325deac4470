"""Keeping a Milvus collection in step with the catalog: the live generation's collection, and deleting what
a commit tombstoned or a killed build inserted."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..catalog import Catalog
from ..errors import IndexCorruptError
from ..milvus import MilvusCollection
from .generations import static_manifest


def collection_of(version: Path) -> MilvusCollection | None:
    backend = static_manifest(version).get("backend", {})
    if backend.get("name") != "milvus":
        return None
    return MilvusCollection(backend["uri"], backend["collection"], backend["analyzer"])


def old_collection(version: Path | None) -> MilvusCollection | None:
    """The live generation's collection, dropped after a full build replaces it (None: not Milvus, unreadable)."""
    try:
        return collection_of(version) if version is not None else None
    except (IndexCorruptError, KeyError):
        return None


def milvus_purge(catalog: Catalog, collection: MilvusCollection) -> None:
    """Delete tombstoned chunks from the collection, then from the catalog (they are only tombstones there)."""
    dead = catalog.dead_rowids()
    if dead:
        collection.delete(dead)
        with catalog.transaction() as db:
            db.execute("DELETE FROM chunks WHERE dead = 1")


def milvus_recover(catalog: Catalog, collection: MilvusCollection) -> None:
    """Finish what a killed build left: rows it inserted but never committed, tombstones not yet deleted."""
    inflight = catalog.meta("milvus_inflight")
    if inflight:
        live = set(catalog.live_rowids())
        collection.delete([i for i in range(inflight[0], inflight[1] + 1) if i not in live])
        with catalog.transaction() as db:
            catalog.set_meta({"milvus_inflight": None}, db)
    milvus_purge(catalog, collection)


@contextlib.contextmanager
def dropped_on_failure(collection: MilvusCollection | None) -> Iterator[None]:
    """A full build's new collection is dropped if the build fails before its switch."""
    try:
        yield
    except BaseException:
        if collection is not None:
            collection.drop()
        raise
