"""Sizes and thresholds of building and merging, read at use (tests set them smaller)."""

UNK_WARN_SHARE = 0.2

SEGMENT_ROWS = 50_000  # a full build writes segments of at most this many chunks

PART_ROWS = 2_000  # ... reading, embedding and tokenising this many at a time (its memory follows a part)

MERGE_FACTOR = 8  # this many segments of one size tier (powers of 4 chunks) merge into one

# A full build over more source bytes than this learns its words in a child process. Learning from a
# 3M-character sample peaks ~0.3 GB over the process and leaves ~0.1-0.3 GB in its heap after it (millions of
# short n-gram strings; measured with benchmarks/bench_build_memory.py --fake-vectors at 8,000 articles), which
# then sits under the whole build; a child's memory goes back to the OS whole. Smaller corpora learn in-process
# (a child costs ~2 s to start).
LEARN_IN_CHILD_BYTES = 4_000_000

PENDING_VECTORS = ".vectors.f32"  # a full build's vectors between its two passes (removed before commit)

MAX_DEAD_SHARE = 0.3  # a segment with more tombstones than this is rewritten without them
