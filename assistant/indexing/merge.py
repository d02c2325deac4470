"""Tiered merging of segments after a commit (each merge its own commit)."""

from __future__ import annotations

import math
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..catalog import Catalog, SegmentRow
from ..segments import GRAPH_MIN_ROWS, SEGMENTS, DenseBuilder, load_segment, stack_postings, write_segment
from . import limits
from .durability import writing
from .generations import segment_name


def merge_segments(version: Path, catalog: Catalog, stage: Callable[[str], None]) -> int:
    """Merge what the policy asks for, each merge its own commit; the number of segments merged away.

    Tiers are powers of 4 live chunks: limits.MERGE_FACTOR segments of one tier become one of a higher tier, so each
    chunk is rewritten about log4(N) times over the life of an index; a segment more than limits.MAX_DEAD_SHARE
    tombstones is rewritten without them. A merge that fails (disk full) leaves the committed index as it was.
    """
    merged = 0
    for group in _merge_plan(catalog):
        try:
            merged += _merge(version, catalog, group, stage)
        except (OSError, RuntimeError, sqlite3.Error) as exc:
            stage(f"merging segments skipped ({getattr(exc, 'strerror', None) or exc}); the index is unchanged")
            break
    return merged


def _merge_plan(catalog: Catalog) -> list[list[SegmentRow]]:
    """Groups of segments to merge: limits.MERGE_FACTOR or more of one size tier (powers of 4 live chunks), cut so that no
    merged segment passes limits.SEGMENT_ROWS; segments of half that size or more are final (as Lucene's tiered policy
    leaves segments near its largest merged size), so an add never rewrites a large part of a big index.
    A segment with too many tombstones is rewritten alone."""
    segments, dead = catalog.segments(), catalog.dead_counts()
    live = {seg.name: seg.rows - dead.get(seg.name, 0) for seg in segments}
    tiers: dict[int, list[SegmentRow]] = {}
    for seg in segments:
        if 2 * live[seg.name] < limits.SEGMENT_ROWS:
            tiers.setdefault(int(math.log(max(1, live[seg.name]), 4)), []).append(seg)
    groups: list[list[SegmentRow]] = []
    for _, members in sorted(tiers.items()):
        if len(members) < limits.MERGE_FACTOR:
            continue
        group, rows = [], 0
        for seg in sorted(members, key=lambda s: (live[s.name], s.seq)):
            if group and rows + live[seg.name] > limits.SEGMENT_ROWS:
                groups += [group] if len(group) > 1 else []
                group, rows = [], 0
            group.append(seg)
            rows += live[seg.name]
        groups += [group] if len(group) > 1 else []
    chosen = {seg.name for group in groups for seg in group}
    groups += [[seg] for seg in segments
               if seg.name not in chosen and seg.rows and dead.get(seg.name, 0) / seg.rows > limits.MAX_DEAD_SHARE]
    return groups


def _merge(version: Path, catalog: Catalog, group: list[SegmentRow], stage: Callable[[str], None]) -> int:
    live = {seg.name: catalog.live_rows(seg.name) for seg in group}
    total = sum(len(rows) for rows in live.values())
    stage(f"merging {len(group)} segments ({total} live chunks)")
    dense, postings, moves = None, [], []
    for seg in group:
        rows = live[seg.name]
        if not rows:
            continue
        segment = load_segment(version, seg.name, seg.files)
        local = np.asarray([r for _, r in rows], dtype=np.int64)
        dense = dense or DenseBuilder(segment.dense.d, graph=total >= GRAPH_MIN_ROWS)  # its size is known
        dense.add(segment.dense.reconstruct_n(0, segment.rows)[local])
        postings.append((segment.row_tokens(local), segment.terms))
        moves.extend(rowid for rowid, _ in rows)
        del segment
    seq = catalog.next_seq()
    name = segment_name(seq)
    with writing(version.parent, version / SEGMENTS / name):
        files = None
        if moves:
            matrix, terms = stack_postings(postings)
            files = write_segment(version, name, dense.finish(), matrix, terms)
        names = [seg.name for seg in group]
        marks = ",".join("?" * len(names))
        commit = catalog.commit + 1
        with catalog.transaction() as db:
            if files is not None:
                Catalog.put_segment(db, SegmentRow(name, seq, len(moves), files))
                db.executemany("UPDATE chunks SET segment = ?, seg_row = ? WHERE rowid = ?",
                               [(name, i, rowid) for i, rowid in enumerate(moves)])
            db.execute(f"DELETE FROM chunks WHERE segment IN ({marks})", names)
            db.execute(f"DELETE FROM segments WHERE name IN ({marks})", names)
            catalog.set_meta({"commit": commit}, db)
    for seg in group:
        shutil.rmtree(version / SEGMENTS / seg.name, ignore_errors=True)
    return len(group)
