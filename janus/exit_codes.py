"""The exit statuses of janus' commands, in one table: each command's `--help` shows it
(`epilog()`), and docs/training.md ("Exit codes") holds the same rows (tests/test_exit_codes.py).

An expected failure is one line on stderr and status 2, without a traceback; status 1 is left for
what was not expected, and its traceback is on stderr. Where the command has a workdir of its own
(janus.main once it holds it, janus.evaluate), the traceback of either is also appended to
`<workdir>/errors.log` (`janus.workdir.append_error_log`) and the line ends with
"(traceback: <path>)".
"""

from __future__ import annotations

OK = 0
ERROR = 1
EXPECTED_FAILURE = 2
INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

# (status, commands it applies to, meaning)
TABLE: tuple[tuple[str, str, str], ...] = (
    ("0", "all", "done; janus.main also after SIGTERM, once its checkpoint is saved"),
    ("1", "all", "an unexpected error, with its traceback on stderr; janus.main: also a "
     "checkpoint that could not be written or a non-finite loss (one line); janus.sweep: a run "
     "failed (the others still ran)"),
    ("2", "all", "an expected failure, in one line: a bad argument or config field, a workdir "
     "in use or not writable, a refused config change on resume, no checkpoint that restores, "
     "records that do not fit the run (label set, budget, batch); janus.main: also damaged or "
     "missing records (a shard, its index, a record)"),
    ("130", "janus.main, janus.data.build", "Ctrl-C: janus.main saves a checkpoint at the end "
     "of the step first (a second Ctrl-C exits at once); the builder keeps finished shards, and "
     "the same command resumes"),
    ("128+N", "janus.sweep", "stopped by signal N, which it forwarded to the run in progress"),
)  # fmt: skip


def epilog() -> str:
    """The table as `--help` text."""
    lines = ["exit status:"]
    for status, commands, meaning in TABLE:
        lines.append(f"  {status:<6} ({commands}) {meaning}")
    return "\n".join(lines)


def markdown() -> str:
    """The table as docs/training.md holds it."""
    rows = ["| status | commands | meaning |", "| --- | --- | --- |"]
    rows += [f"| {s} | {c} | {m} |" for s, c, m in TABLE]
    return "\n".join(rows)
