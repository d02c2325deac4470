"""The index folder: generations and the CURRENT pointer, the manifest, the build lock, and removing what
killed builds leave behind."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from ..catalog import CATALOG, Catalog
from ..errors import IndexBusyError, IndexCorruptError, IndexNotFoundError, IndexWriteError
from ..lexicon import LEXICON_VERSION
from ..segments import SEGMENTS

FORMAT_VERSION = 3  # 3: segments under a SQLite catalog


CURRENT = "CURRENT"


MANIFEST = "manifest.json"


LOCK = ".lock"


VERSION_NAME = re.compile(r"v-\d{8}T\d{6}-[0-9a-f]{6}")


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def current_version(index_dir: Path) -> Path | None:
    """The live version directory, or None when there is no index yet."""
    pointer = Path(index_dir) / CURRENT
    if not pointer.exists() and not pointer.is_symlink():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{pointer} cannot be read ({type(exc).__name__}). "
                                "Rebuild with `assistant index build --full`.") from None
    version = Path(index_dir) / name
    if not VERSION_NAME.fullmatch(name) or not version.is_dir():
        raise IndexCorruptError(
            f"{pointer} names {name[:80]!r}, which is not an index version in {index_dir}. "
            "Rebuild with `assistant index build --full`."
        )
    return version


@contextlib.contextmanager
def build_lock(index_dir: Path) -> Iterator[None]:
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
        handle = open(index_dir / LOCK, "a")  # noqa: SIM115 - closed below, after the build
    except OSError as exc:
        raise IndexWriteError(f"Cannot write the index in {index_dir}: {exc.strerror or exc}. Make the folder "
                              "writable (or pass --index DIR), then build again.") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexBusyError(f"Another build is updating {index_dir}. Wait for it to finish and retry.") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def static_manifest(version: Path) -> dict:
    try:
        manifest = json.loads((version / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(
            f"{version / MANIFEST} is damaged ({type(exc).__name__}). Rebuild with `assistant index build --full`."
        ) from exc
    problem = _manifest_problem(manifest)
    if problem:
        raise IndexCorruptError(f"{version / MANIFEST} is damaged ({problem}). "
                                "Rebuild with `assistant index build --full`.")
    return manifest


def _manifest_problem(manifest: object) -> str | None:
    """What is wrong with a manifest's shape, or None; a valid JSON of the wrong shape is damage too."""
    if not isinstance(manifest, dict):
        return "not an object"
    shapes = {"format": int, "embedding": dict, "chunker": dict}
    for key, kind in shapes.items():
        if not isinstance(manifest.get(key), kind):
            return f"{key!r} missing or not {kind.__name__}"
    embedding = manifest["embedding"]
    if not isinstance(embedding.get("model"), str) or not isinstance(embedding.get("prompts", {}), dict) \
            or not isinstance(embedding.get("dimension", 0), int):
        return "'embedding' incomplete"
    if not isinstance(manifest.get("lexicon", {}), dict) or not isinstance(manifest.get("pipeline", {}), dict):
        return "'lexicon' or 'pipeline' not an object"
    return None


def read_manifest(index_dir: Path) -> dict:
    """The live index's manifest, with what the catalog holds now: sources, counts, words, segment files."""
    version = current_version(index_dir)
    if version is None:
        raise IndexNotFoundError(no_index(index_dir))
    manifest = static_manifest(version)
    catalog = Catalog(version / CATALOG)
    try:
        manifest = with_catalog(manifest, catalog)
        chunk_ids = catalog.chunk_ids_by_source()
        manifest["sources"] = {rel: {"hash": s.hash, "doc_ids": s.doc_ids, "chunk_ids": chunk_ids.get(rel, []),
                                     "unk_tokens": s.unk_tokens, "tokens": s.tokens, "article_id": s.article_id,
                                     "size": s.size, "mtime_ns": s.mtime_ns} for rel, s in catalog.sources().items()}
        return manifest
    finally:
        catalog.close()


def with_catalog(manifest: dict, catalog: Catalog) -> dict:
    """The static manifest plus the catalog's counts and segment files (aggregate queries: cheap at any size)."""
    counts = catalog.counts()
    files = {f"{SEGMENTS}/{seg.name}/{name}": info for seg in catalog.segments() for name, info in seg.files.items()}
    return {
        **manifest,
        "embedding": {**manifest["embedding"], "unknown_token_share": counts.pop("unknown_token_share")},
        "lexicon": {**manifest.get("lexicon", {}), "words": counts.pop("words")},
        "built_at": catalog.meta("built_at") or manifest.get("built_at"),
        "commit": catalog.commit,
        "skipped": [{"file": s["file"], "reason": s["reason"]} for s in catalog.meta("skipped") or []],
        "counts": counts,
        "files": {name: info[0] for name, info in files.items()},
        "sizes": {name: info[1] for name, info in files.items()},
    }


def committed_sources(index_dir: Path) -> dict[str, str]:
    """Corpus path -> content hash of every file the live index holds ({} without a readable index)."""
    return _from_live_catalog(index_dir, lambda catalog: {rel: s.hash for rel, s in catalog.sources().items()})


def added_times(index_dir: Path) -> dict[str, str]:
    """Corpus path -> when the live index first indexed it ({} without a readable index)."""
    return _from_live_catalog(index_dir, lambda catalog: catalog.meta("added_at") or {})


def _from_live_catalog(index_dir: Path, read: Callable[[Catalog], dict]) -> dict:
    """What `read` finds in the live generation's catalog; {} when there is no index or it cannot be read."""
    try:
        version = current_version(index_dir)
        if version is None:
            return {}
        catalog = Catalog(version / CATALOG)
    except (IndexNotFoundError, IndexCorruptError):
        return {}
    try:
        return read(catalog)
    except IndexCorruptError:
        return {}
    finally:
        catalog.close()


def no_index(index_dir: Path) -> str:
    return f"No index in {index_dir}. Build it with `assistant index build --index {index_dir}` (or `make run`)."


def segment_name(seq: int) -> str:
    return f"s{seq:06d}-{secrets.token_hex(3)}"


def remove_orphan_segments(version: Path, catalog: Catalog) -> None:
    """Delete segment folders no committed row names (a build or merge killed before its commit)."""
    folder = version / SEGMENTS
    if not folder.is_dir():
        return
    named = {seg.name for seg in catalog.segments()}
    for path in folder.iterdir():
        if path.name not in named:
            shutil.rmtree(path, ignore_errors=True)


def remove_stale_versions(index_dir: Path) -> None:
    """Delete versions that CURRENT does not name, and leftovers of killed builds."""
    try:
        live = current_version(index_dir)
    except IndexCorruptError:
        return  # keep everything for inspection; the build that follows writes a new CURRENT
    for path in index_dir.iterdir():
        if path == live or path.name in (CURRENT, LOCK):
            continue
        if path.name.startswith(("v-", ".tmp-v-")) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(f".{CURRENT}."):
            path.unlink(missing_ok=True)


def pipeline_fingerprint(user_words: bool) -> dict:
    """What turns text into tokens besides the chunker and the matching rule; a change re-reads everything."""
    import jieba

    from ..lexical import SYNONYM_GROUPS
    from ..lexicon import STOPWORDS

    words = "\n".join(sorted(STOPWORDS)) + "\n" + "\n".join(SYNONYM_GROUPS)
    return {"jieba": jieba.__version__, "lexicon": LEXICON_VERSION, "user_words": bool(user_words),
            "lexical": hashlib.sha256(words.encode("utf-8")).hexdigest()[:16]}
