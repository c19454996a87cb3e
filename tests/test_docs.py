"""The docs cannot rot: every command in README.md and docs/ names a module, flags, config files and
paths that exist, and every link between the pages resolves.

Each fenced ```bash block of README.md and docs/**/*.md is read as the shell would split it (line
continuations, comments, `&&` / `;` / `|` chains, `VAR=value` prefixes) and checked:
- every `python -m janus.X` module exists;
- every `--flag` given to it is one that `python -m janus.X [SUBCOMMAND] --help` lists (run once
  per module, in parallel); `--config.<field>` is checked against the config schema instead, and
  the flags after `janus.sweep ... --` or `launch/slurm.sbatch` / `launch/tpu_vm.sh run|watch` as
  janus.main's;
- every config file (`configs/*.py[:args]`) exists and loads with its argument (`get_config(arg)`,
  or `get_sweep(variant)` for a study);
- every repo path exists, unless it is an output the commands create or a placeholder (`ALLOWED_*`).
Relative markdown links (`[x](docs/y.md#anchor)`) must name an existing file and, with an anchor, a
heading of that page. Write a synopsis that is not a runnable command in a ```text block.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

# Outputs the commands create (the quickstart's venv, runs, data, reports) and placeholders.
ALLOWED_RELATIVE = (".venv/", "runs/", "data/", "report/")
ALLOWED_ABSOLUTE = ("/path/to/", "/tmp/", "/mnt/janus/", "/shared/runs/")
PYTHONS = re.compile(r"^(python|python3|python3\.\d+)$")
CHAIN = {"&&", "||", ";", "|", "(", ")", "&"}
# Launchers whose arguments are janus.main's flags (plus their own).
LAUNCHERS = {"launch/slurm.sbatch": {"sweep", "root"}, "launch/tpu_vm.sh": set()}
# The sections of the one-page README that docstrings still name: each stays a heading of a page.
OLD_SECTIONS = (
    "Quickstart",
    "Layout",
    "Data",
    "Building datasets",
    "Caption → label matching",
    "Input pipelines",
    "Models",
    "Importing public weights",
    "Training",
    "Run safety",
    "Evaluation",
    "Report",
    "Study",
    "JANuS-mini v2 study: measured results",
    "Label-set size",
    "Fine-tuning and WiSE-FT",
    "Launching on TPU VMs and GPU clusters",
    "Benchmarks",
    "Development",
)


@dataclasses.dataclass(frozen=True)
class Call:
    """One `python -m janus.X ...` in a block: where, the module, its sub-command and arguments."""

    where: str
    module: str
    sub: str | None
    args: tuple[str, ...]
    extra: frozenset[str] = frozenset()  # a launcher's own flags


# ------------------------------------------------------------------------------- reading the pages
def bash_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, body) of every ```bash block."""
    blocks = []
    for m in re.finditer(r"^( *)```bash\n(.*?)^\1```", text, re.M | re.S):
        body = "\n".join(line[len(m.group(1)) :] for line in m.group(2).splitlines())
        blocks.append((text[: m.start()].count("\n") + 1, body))
    return blocks


def simple_commands(body: str) -> list[list[str]]:
    """The block split as the shell would: continuations joined, comments dropped, chains split."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = ""  # '#' only starts a comment at the start of a word, as in bash
        tokens = []
        for tok in lexer:
            if tok.startswith("#"):
                break
            tokens.append(tok)
        current: list[str] = []
        for tok in tokens + [";"]:
            if tok in CHAIN:
                while current and re.match(r"^[A-Za-z_]\w*=", current[0]):  # FOO=1 python ...
                    current.pop(0)
                if current:
                    out.append(current)
                current = []
            else:
                current.append(tok)
    return out


def page_commands(pages=PAGES) -> list[tuple[str, list[str]]]:
    out = []
    for page in pages:
        text = page.read_text()
        for line, body in bash_blocks(text):
            for cmd in simple_commands(body):
                out.append((f"{rel(page)}:{line}", cmd))
    return out


def janus_calls(where: str, cmd: list[str]) -> list[Call]:
    """Every `python -m janus.X` in a command (also one nested after a launcher's `--`), and the
    janus.main flags given to a launcher script."""
    calls = []
    starts = [i for i in range(len(cmd) - 2) if PYTHONS.match(cmd[i]) and cmd[i + 1] == "-m"]
    for n, i in enumerate(starts):
        module = cmd[i + 2]
        if not module.startswith("janus"):
            continue
        end = starts[n + 1] if n + 1 < len(starts) else len(cmd)
        args = tuple(cmd[i + 3 : end])
        sub = args[0] if args and re.fullmatch(r"[a-z_]+", args[0]) else None
        calls.append(Call(where, module, sub, args))
    for i, tok in enumerate(cmd):
        if tok in LAUNCHERS:
            args = cmd[i + 1 :]
            if tok == "launch/tpu_vm.sh":
                if not args or args[0] not in ("run", "watch"):
                    continue
                args = args[1:]
            args = tuple(a for a in args if a != "--")
            calls.append(Call(where, "janus.main", None, args, frozenset(LAUNCHERS[tok])))
    return calls


# ------------------------------------------------------------------------------------------ --help
def _run_help(module: str, sub: str | None) -> str:
    flag = "--helpfull" if module == "janus.main" else "--help"
    argv = [sys.executable, "-m", module, *([sub] if sub else []), flag]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    return proc.stdout + proc.stderr


def helps_for(calls: list[Call]) -> dict[tuple[str, str | None], str]:
    """`--help` of every module (and of each sub-command its help names), in parallel processes."""
    modules = sorted({c.module for c in calls if importlib.util.find_spec(c.module)})
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        helps = dict(
            zip([(m, None) for m in modules], pool.map(lambda m: _run_help(m, None), modules))
        )
        subs = sorted(
            {
                (c.module, c.sub)
                for c in calls
                if c.sub
                and (c.module, None) in helps
                and f"{c.module} {c.sub}" in helps[(c.module, None)]
            }
        )
        helps.update(zip(subs, pool.map(lambda ms: _run_help(*ms), subs)))
    # A word the main help names but that is no sub-command (argparse prints the main usage).
    return {
        k: v for k, v in helps.items() if k[1] is None or f"{k[0]} {k[1]}" in v.split("\n", 1)[0]
    }


def flag_patterns(help_text: str) -> list[re.Pattern]:
    """The flags a help text lists; `--[no]x` gives x and nox, `--data.<set>` any `--data.NAME`."""
    names = set()
    for no, name in re.findall(r"--(\[no\])?(\w[\w.<>-]*\w>?)", help_text):
        names.add(name)
        if no:
            names.add("no" + name)
    return [
        re.compile(
            re.sub(r"<[\w-]+>", r"[\\w-]+", re.escape(n).replace(r"\<", "<").replace(r"\>", ">"))
        )
        for n in names
    ]


@functools.cache
def config_schema():
    from janus.config.schema import FREE_FORM, SCHEMA

    return SCHEMA, FREE_FORM


def config_field_ok(path: str) -> bool:
    schema, free_form = config_schema()
    return path in schema or (path.split(".")[0] in free_form and "." in path)


def flag_errors(call: Call, helps) -> list[str]:
    key = (call.module, call.sub if (call.module, call.sub) in helps else None)
    if key not in helps:
        return []  # the module itself is missing: test_every_janus_module_exists says so
    patterns = flag_patterns(helps[key])
    main_patterns = flag_patterns(helps.get(("janus.main", None), ""))
    errors = []
    after_dashdash = False
    for arg in call.args:
        if arg == "--":
            after_dashdash = True  # janus.sweep: what follows goes to every run's janus.main
            continue
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0]
        module = "janus.main" if after_dashdash else call.module
        if module == "janus.main" and name.startswith("config."):
            ok = config_field_ok(name[len("config.") :])
        else:
            pats = main_patterns if after_dashdash else patterns
            ok = any(p.fullmatch(name) for p in pats)
            ok = ok or name in call.extra
        if not ok:
            errors.append(f"{call.where}: {module} does not accept --{name}")
    return errors


# --------------------------------------------------------------------------------- paths, configs
def config_mentions(cmd: list[str]) -> list[tuple[str, str | None, bool]]:
    """(config file, its argument or None, read as a study) for each `configs/*.py[:arg]` named."""
    out = []
    study = False
    for i, tok in enumerate(cmd):
        if tok == "janus.sweep" or tok == "--sweep":
            study = True
        value = tok.split("=", 1)[1] if tok.startswith("--") and "=" in tok else tok
        m = re.fullmatch(r"(configs/[\w/.-]+\.py)(?::(.*))?", value)
        if m:
            out.append((m.group(1), m.group(2), study and (i == 0 or cmd[i - 1] != "--config")))
    return out


def config_errors(where: str, path: str, arg: str | None, study: bool) -> list[str]:
    from janus.config.sweep import load_config_module

    if not (REPO / path).is_file():
        return [f"{where}: no config file {path}"]
    try:
        module = load_config_module(str(REPO / path))
        if study:
            if not hasattr(module, "get_sweep"):
                return [f"{where}: {path} declares no study (get_sweep)"]
            runs = module.get_sweep(arg) if arg else module.get_sweep()
            assert len(runs) > 0
        else:
            module.get_config(arg)
    except Exception as e:  # noqa: BLE001 - the message is the finding
        return [f"{where}: {path}:{arg or ''} does not load: {type(e).__name__}: {e}"]
    return []


def path_pieces(cmd: list[str]) -> list[str]:
    """The parts of a command's words that look like file paths (`a/b`, not `1/16` or a URL)."""
    pieces = []
    skip = False
    for tok in cmd:
        if skip:  # python -c CODE
            skip = False
            continue
        if tok == "-c":
            skip = True
            continue
        for piece in re.split(r"[,=:+]", tok):
            piece = re.sub(r"\*\d*$", "", piece)  # a mixture's weight: data/a*1
            if (
                "/" in piece
                and re.fullmatch(r"[\w.$~/][\w.$~/{}*-]*", piece)
                and not piece[0].isdigit()
            ):
                if not piece.startswith("//"):  # the rest of a URL
                    pieces.append(piece)
    return pieces


def path_error(where: str, piece: str) -> str | None:
    if piece.startswith(("$", "~")):
        return None
    if piece.startswith("/"):
        if piece.startswith(ALLOWED_ABSOLUTE):
            return None
        return (
            f"{where}: absolute path {piece} is not a placeholder ({', '.join(ALLOWED_ABSOLUTE)})"
        )
    if piece.startswith(ALLOWED_RELATIVE) or (REPO / piece.rstrip("/")).exists():
        return None
    return f"{where}: no such path in the repo: {piece}"


# ------------------------------------------------------------------------------------------- links
def rel(page: Path) -> str:
    return str(page.relative_to(REPO)) if page.is_relative_to(REPO) else page.name


def prose(text: str) -> str:
    """The page without its fenced code blocks (whose `# comments` are no headings)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = prose(page.read_text())
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        s = slug(heading)
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def link_errors(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", prose(page.read_text()))  # code spans are not links
    errors = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        where = f"{rel(page)} -> {target}"
        if not dest.exists():
            errors.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            errors.append(f"{where}: no heading with anchor #{anchor}")
    return errors


# ------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def calls() -> list[Call]:
    return [c for where, cmd in page_commands() for c in janus_calls(where, cmd)]


@pytest.fixture(scope="module")
def helps(calls):
    return helps_for(calls + [Call("", "janus.main", None, ())])


def test_the_pages_have_commands(calls):
    assert len(PAGES) >= 9, [str(p) for p in PAGES]
    modules = {c.module for c in calls}
    for module in (
        "janus.main",
        "janus.data.build",
        "janus.evaluate",
        "janus.report",
        "janus.sweep",
    ):
        assert module in modules


def cut_short(body: str) -> bool:
    """A line continued (`\\`) into a blank line or the block's end: the command lost its tail."""
    lines = body.rstrip("\n").split("\n")
    return any(
        line.endswith("\\") and (i + 1 == len(lines) or not lines[i + 1].strip())
        for i, line in enumerate(lines)
    )


def test_no_command_is_cut_short():
    cut = [
        f"{rel(page)}:{line}"
        for page in PAGES
        for line, body in bash_blocks(page.read_text())
        if cut_short(body)
    ]
    assert not cut, f"a `\\` continues into nothing in: {cut}"
    assert cut_short("python -m janus.main \\\n\n") and not cut_short("a \\\n  b\n")


def test_every_janus_module_exists(calls):
    missing = sorted(
        {
            f"{c.where}: no module {c.module}"
            for c in calls
            if not importlib.util.find_spec(c.module)
        }
    )
    assert not missing, "\n".join(missing)


def test_every_flag_is_accepted(calls, helps):
    errors = [e for c in calls for e in flag_errors(c, helps)]
    assert not errors, "\n".join(errors)


def test_every_config_file_loads():
    errors = [
        e
        for where, cmd in page_commands()
        for path, arg, study in config_mentions(cmd)
        for e in config_errors(where, path, arg, study)
    ]
    assert not errors, "\n".join(errors)


def test_every_repo_path_exists():
    errors = [path_error(where, p) for where, cmd in page_commands() for p in path_pieces(cmd)]
    errors = [e for e in errors if e]
    assert not errors, "\n".join(errors)


def test_every_link_between_pages_resolves():
    errors = [e for page in PAGES for e in link_errors(page)]
    assert not errors, "\n".join(errors)


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 300, f"README.md has {lines} lines; reference material belongs in docs/"


def test_the_old_readme_sections_are_headings_of_the_docs():
    headings = {
        h.strip()
        for page in PAGES
        for h in re.findall(r"^#{1,6} +(.+?) *$", prose(page.read_text()), re.M)
    }
    missing = [s for s in OLD_SECTIONS if s not in headings]
    assert not missing, f"sections no page has as a heading: {missing}"


def test_the_checker_finds_each_kind_of_rot(tmp_path, helps):
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](#page) [gone](missing.md) [bad anchor](#nowhere)\n\n```bash\n"
        "FOO=1 python -m janus.main --config configs/mini.py:lrr=1 --workdir runs/x \\\n"
        "    --config.optimizer.lrr=1 --no_such_flag && python -m janus.nope --x   # a comment\n"
        "python -m janus.data.build synthetic --out data/m --size 32 --budget 5 | cat\n"
        "python -m janus.evaluate --workdir runs/x --data.sketch=folder:/path/to/s --data.r=x/y\n"
        "python -m janus.sweep configs/mini.py --root runs/s -- --config.log.every_steps=1 --nope\n"
        "```\n"
    )
    cmds = [
        (f"page.md:{n}", cmd)
        for n, body in bash_blocks(page.read_text())
        for cmd in simple_commands(body)
    ]
    found = [c for where, cmd in cmds for c in janus_calls(where, cmd)]
    assert [c.module for c in found] == [
        "janus.main",
        "janus.nope",
        "janus.data.build",
        "janus.evaluate",
        "janus.sweep",
    ]
    assert not importlib.util.find_spec("janus.nope")
    flags = [e.rsplit(" ", 1)[-1] for c in found for e in flag_errors(c, helps)]
    assert flags == ["--config.optimizer.lrr", "--no_such_flag", "--budget", "--nope"]
    configs = [
        e for where, cmd in cmds for m in config_mentions(cmd) for e in config_errors(where, *m)
    ]
    assert len(configs) == 2 and "lrr" in configs[0] and "get_sweep" in configs[1], configs
    paths = [path_error(where, p) for where, cmd in cmds for p in path_pieces(cmd)]
    assert [p for p in paths if p] == ["page.md:5: no such path in the repo: x/y"]
    links = [e.split(": ", 1)[1] for e in link_errors(page)]
    assert links == ["no such file", "no heading with anchor #nowhere"]
