"""The builder's first stage at scale: scan, clean, match and label candidates in the workers.

- Every source is read in chunks in the main process (`read_chunks`: for a manifest only the raw
  table rows). A worker turns a chunk into candidates, labels them (`janus.data.ingest.labeling`),
  writes the usable ones to a chunk file and returns what the budget needs: per usable candidate its
  priority and first label, plus the chunk's skip counts, coverage report and key digests; the
  main process gathers them as columns (`Scan`).
- Results are merged in chunk order: skip counts, their first examples, the coverage report and the
  candidates' order are those of one process scanning everything, whatever the worker count.
- Duplicate keys: the main process keeps a 16-byte digest per key (`KeyIndex`; the odds of a
  collision among 10^10 keys are below 10^-18). A worker counts the repeats within its chunk; a
  chunk holding keys of earlier chunks is labelled again in the main process with those counted
  as duplicates (rare: it costs one chunk).
- Memory in the main process does not grow with the source: the digests (16 bytes a key) and the
  columns (20 bytes a usable candidate) go to files in the scan folder, read memory-mapped; what
  stays is the chunks in flight, the key index's runs below a million keys, and the chosen
  candidates, which `load` reads back from the chunk files.
- Resume: chunk files live in `<out>/.build/<split>.scan-<fingerprint>/`; a killed build reuses
  those it finished (the builder removes the folder once its plan is saved).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pathlib
import pickle
import shutil
from collections import Counter, deque

import numpy as np
from numpy.lib.format import open_memmap

from janus.data.budget import priorities
from janus.data.ingest.labeling import Labeler, label_candidates
from janus.data.ingest.matching import CoverageReport
from janus.data.ingest.parallel import ProcessMap, Progress
from janus.data.ingest.skips import SkipCounter
from janus.data.ingest.sources import Candidate, make_source
from janus.fileio import atomic_open

CHUNK = 10_000  # rows or candidates per task: a few MB in flight, a second or two of matching
KEYS_IN_MEMORY = 1 << 20  # runs of the key index this long or longer go to files (16 MB)


class KeyIndex:
    """A set of 16-byte key digests: runs of their two halves as numbers, each sorted by the first
    half, merged like a log-structured tree. Membership by binary search on the first half.

    Runs of `in_memory` keys or more live in files under `spill_dir` (memory-mapped: the kernel
    pages them in and out), so the process's own memory does not grow with the keys."""

    def __init__(self, spill_dir: pathlib.Path | None = None, in_memory: int = KEYS_IN_MEMORY):
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (first halves, second halves)
        self._spill_dir, self._in_memory, self._files = spill_dir, in_memory, 0
        if spill_dir is not None:
            shutil.rmtree(spill_dir, ignore_errors=True)  # runs of an interrupted scan
            spill_dir.mkdir(parents=True)

    def __len__(self) -> int:
        return sum(len(hi) for hi, _ in self._runs)

    def add(self, digests: np.ndarray) -> list[int]:
        """Adds a chunk's digests (dtype S16) in order; returns the positions whose digest was
        added before (by an earlier chunk or earlier in this one)."""
        hi, lo = digests.view(np.uint64).reshape(-1, 2).T
        seen = np.zeros(len(hi), dtype=bool)
        for run_hi, run_lo in self._runs:  # never empty
            left = np.searchsorted(run_hi, hi, "left")
            right = np.searchsorted(run_hi, hi, "right")
            seen |= (right - left == 1) & (run_lo[np.minimum(left, len(run_hi) - 1)] == lo)
            for j in np.flatnonzero(right - left > 1):  # first halves of keys agree: rare
                seen[j] |= bool((run_lo[left[j] : right[j]] == lo[j]).any())
        order = np.lexsort((lo, hi))  # stable: the first of equal digests comes first
        same = (hi[order][1:] == hi[order][:-1]) & (lo[order][1:] == lo[order][:-1])
        repeated = np.zeros(len(hi), dtype=bool)
        repeated[order[1:][same]] = True
        fresh = ~seen & ~repeated
        if fresh.any():
            order = np.argsort(hi[fresh], kind="stable")
            self._runs.append((hi[fresh][order], lo[fresh][order]))
        while len(self._runs) > 1 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0]):
            b, a = self._runs.pop(), self._runs.pop()
            merged = self._new_run(len(a[0]) + len(b[0]))
            _merge_runs(a, b, merged)
            for run in (a, b):
                self._drop(run)
            self._runs.append(merged)
        return np.flatnonzero(seen | repeated).tolist()

    def _new_run(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self._spill_dir is None or n < self._in_memory:
            return np.empty(n, np.uint64), np.empty(n, np.uint64)
        self._files += 1
        paths = [self._spill_dir / f"{self._files:06d}.{half}.npy" for half in ("hi", "lo")]
        return tuple(open_memmap(p, "w+", np.uint64, (n,)) for p in paths)

    @staticmethod
    def _drop(run) -> None:
        for half in run:
            if isinstance(half, np.memmap):
                pathlib.Path(half.filename).unlink()


def _merge_runs(a, b, out, block: int = 1 << 18) -> None:
    """Writes runs a and b (each sorted by its first halves) into `out` as one such run, a block
    at a time: working memory is a few blocks, whatever the runs' sizes (they may be files)."""
    (a_hi, a_lo), (b_hi, b_lo), (out_hi, out_lo) = a, b, out
    i = j = k = 0
    while i < len(a_hi) or j < len(b_hi):
        ah, bh = np.asarray(a_hi[i : i + block]), np.asarray(b_hi[j : j + block])
        if len(ah) and len(bh):  # take both up to the lower of the blocks' last values
            limit = min(ah[-1], bh[-1])  # one block is taken whole: the loop advances
            ah = ah[: np.searchsorted(ah, limit, "right")]
            bh = bh[: np.searchsorted(bh, limit, "right")]
        from_b = np.zeros(len(ah) + len(bh), dtype=bool)
        from_b[np.searchsorted(ah, bh) + np.arange(len(bh))] = True
        halves = ((out_hi, ah, bh), (out_lo, a_lo[i : i + len(ah)], b_lo[j : j + len(bh)]))
        for out_half, a_part, b_part in halves:
            merged = np.empty(len(from_b), dtype=np.uint64)
            merged[from_b], merged[~from_b] = b_part, a_part
            out_half[k : k + len(merged)] = merged
        i, j, k = i + len(ah), j + len(bh), k + len(from_b)


def key_digests(keys) -> np.ndarray:
    return np.array(
        [hashlib.blake2b(k.encode("utf-8"), digest_size=16).digest() for k in keys], dtype="S16"
    )


@dataclasses.dataclass
class ChunkResult:
    """What a worker hands back for one chunk (the usable candidates stay in its chunk file)."""

    fingerprint: str
    chunk_size: int
    n_items: int
    duplicates: list[int]  # positions counted as duplicate keys
    scanned: int  # candidates made from the chunk (before labelling)
    digests: np.ndarray  # S16, one per scanned candidate
    prio: np.ndarray  # uint64, one per usable candidate
    classes: np.ndarray  # int16 first label (-1: none), one per usable candidate
    skips: SkipCounter
    coverage: CoverageReport
    reused: bool = False  # read back from the file of an interrupted build


def _chunk_path(scan_dir: pathlib.Path, k: int) -> pathlib.Path:
    return scan_dir / f"{k:07d}.pkl.gz"


def _read_chunk(path: pathlib.Path):
    with gzip.open(path, "rb") as f:
        return pickle.load(f)  # our own file, written by `_label_chunk` below


def _read_candidates(task) -> list[Candidate]:
    path, rows = task
    _, usable = _read_chunk(path)
    return [Candidate(*usable[r]) for r in rows]


def _label_chunk(task) -> ChunkResult:
    """Worker: candidates of one chunk, labelled; reuses the chunk file a killed build finished."""
    cfg, fingerprint, chunk_size, scan_dir, k, source_index, items, duplicates = task
    path = _chunk_path(scan_dir, k)
    if path.is_file() and duplicates is None:
        try:
            result, _ = _read_chunk(path)
        except (OSError, EOFError, pickle.UnpicklingError, ImportError, AttributeError):
            result = None  # torn, or written by a janus whose classes lived elsewhere: made again
        this = (fingerprint, chunk_size, len(items[1]))
        if result is not None and (result.fingerprint, result.chunk_size, result.n_items) == this:
            return dataclasses.replace(result, reused=True)
    source = make_source(cfg.sources[source_index])
    skips = SkipCounter()
    cands = list(source.candidates(items, skips))
    digests = key_digests(c.key for c in cands)
    if duplicates is None:  # those within the chunk; the main process knows the earlier chunks
        repeated = np.ones(len(cands), dtype=bool)
        repeated[np.unique(digests, return_index=True)[1]] = False
        duplicates = np.flatnonzero(repeated).tolist()
    labeler = Labeler(cfg)
    usable = label_candidates(cands, cfg, skips, labeler, frozenset(duplicates))
    result = ChunkResult(
        fingerprint,
        chunk_size,
        len(items[1]),
        duplicates,
        len(cands),
        digests,
        priorities([c.key for c in usable], cfg.seed),
        np.array([c.labels[0] if c.labels else -1 for c in usable], dtype=np.int16),
        skips,
        labeler.coverage,
    )
    fields = [(c.key, c.source, c.labels, c.captions, c.label_source, c.locator) for c in usable]
    with atomic_open(path) as raw, gzip.GzipFile("", "wb", 1, raw, mtime=0) as gz:
        pickle.dump((result, fields), gz, protocol=pickle.HIGHEST_PROTOCOL)
    return result


@dataclasses.dataclass
class Scan:
    """Every usable candidate of a build as columns, in scan order, with where to read it back."""

    scan_dir: pathlib.Path
    source_names: list[str]
    # columns, memory-mapped from files in scan_dir
    prio: np.ndarray  # uint64
    source: np.ndarray  # int16 index into source_names
    classes: np.ndarray  # int16 first label, -1 for none
    chunk: np.ndarray  # int32 chunk file of each candidate
    row: np.ndarray  # int32 position in its chunk file
    scanned: dict[str, int]  # candidates per source before labelling
    usable: dict[str, int]  # candidates per source after labelling
    coverage: CoverageReport

    def __len__(self) -> int:
        return len(self.prio)

    def load(self, indices, pool: ProcessMap) -> dict:
        """{index: Candidate} for these candidates, read back from their chunk files by the pool."""
        indices = np.unique(np.asarray(indices, dtype=np.int64))
        chunks = np.unique(self.chunk[indices]).tolist()
        in_chunk = [indices[self.chunk[indices] == k] for k in chunks]
        tasks = [
            (_chunk_path(self.scan_dir, k), self.row[i].tolist()) for k, i in zip(chunks, in_chunk)
        ]
        out = {}
        for i, cands in zip(in_chunk, pool.map(_read_candidates, tasks)):
            out.update(zip(i.tolist(), cands))
        return out


def scan_dir_for(out: pathlib.Path, split: str, fingerprint: str) -> pathlib.Path:
    return out / ".build" / f"{split}.scan-{fingerprint}"


def scan_sources(
    cfg,
    fingerprint: str,
    scan_dir: pathlib.Path,
    pool: ProcessMap,
    skips: SkipCounter,
    *,
    chunk_size: int = CHUNK,
    progress: bool = True,
    log=print,
) -> Scan:
    """Scans, labels and indexes every candidate of `cfg.sources`; `skips` gets every skip."""
    sources = [make_source(s) for s in cfg.sources]
    names = [s.name for s in sources]
    scan_dir.mkdir(parents=True, exist_ok=True)
    chunks: deque = deque()  # the items in flight, for a chunk labelled again over duplicates

    def tasks():
        k = 0
        for si, src in enumerate(sources):
            for items in src.read_chunks(skips, chunk_size):
                chunks.append((si, items))
                yield cfg, fingerprint, chunk_size, scan_dir, k, si, items, None
                k += 1

    index = KeyIndex(scan_dir / "keys", KEYS_IN_MEMORY)
    coverage, scanned, usable, reused = CoverageReport(), Counter(), Counter(), 0
    bar = Progress("scanning and labelling", None, progress)
    with _ColumnFiles(scan_dir / "columns") as columns:
        for k, result in enumerate(pool.imap(_label_chunk, tasks())):
            si, items = chunks.popleft()
            duplicates = index.add(result.digests)
            if duplicates != result.duplicates:  # labelled again here, with the duplicates known
                task = (cfg, fingerprint, chunk_size, scan_dir, k, si, items, duplicates)
                result = _label_chunk(task)
            reused += result.reused
            skips.merge(result.skips)
            coverage.merge(result.coverage)
            if result.scanned:
                scanned[names[si]] += result.scanned
            n = len(result.prio)
            columns.append(
                prio=result.prio,
                source=np.full(n, si),
                classes=result.classes,
                chunk=np.full(n, k),
                row=np.arange(n),
            )
            if n:
                usable[names[si]] += n
            bar.update(result.scanned, f" ({usable.total()} usable)")
    if reused:
        log(f"reused {reused} chunk(s) the interrupted scan had finished")
    return Scan(
        scan_dir,
        names,
        scanned=dict(scanned),
        usable=dict(usable),
        coverage=coverage,
        **columns.read(),
    )


class _ColumnFiles:
    """The scan's columns (`Scan`), appended a chunk at a time to files and read back
    memory-mapped: the main process does not hold a column per candidate."""

    DTYPES = {
        "prio": np.uint64,
        "source": np.int16,
        "classes": np.int16,
        "chunk": np.int32,
        "row": np.int32,
    }

    def __init__(self, folder: pathlib.Path):
        shutil.rmtree(folder, ignore_errors=True)  # columns of an interrupted scan
        folder.mkdir(parents=True)
        self._paths = {name: folder / f"{name}.bin" for name in self.DTYPES}
        self._files = {}

    def __enter__(self):
        self._files = {name: open(path, "wb") for name, path in self._paths.items()}
        return self

    def __exit__(self, *exc) -> None:
        for f in self._files.values():
            f.close()

    def append(self, **columns) -> None:
        for name, values in columns.items():
            np.asarray(values, dtype=self.DTYPES[name]).tofile(self._files[name])

    def read(self) -> dict[str, np.ndarray]:
        return {
            name: np.memmap(path, dtype, "r") if path.stat().st_size else np.zeros(0, dtype)
            for (name, dtype), path in zip(self.DTYPES.items(), self._paths.values())
        }
