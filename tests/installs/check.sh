#!/usr/bin/env bash
# The installs the README tells users to make, each running janus as a user would. CI runs both
# (.ci/run); so can you, from the repository root:
#
#   bash tests/installs/check.sh readme   # in the active venv, made by README step 1 (no torch):
#                                         #   janus' own data files, then a 2-step VL mini job
#   bash tests/installs/check.sh wheel    # pip wheel --no-deps ., installed with requirements/lock.txt
#                                         #   in a fresh venv; from a folder outside the checkout,
#                                         #   janus' own data files, then 2-step CE and VL mini jobs
#
# The mini jobs train on a small JANuS-mini (janus.data.mini.generate.SMALL, the tests' sizes: 200
# curated samples), built first by the install under test with the real generator and builder: the
# code paths of the full one, without its 35 s build. Each job must end with DONE and an eval JSON
# holding every shift set.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
mode="${1:?usage: check.sh readme|wheel}"

small_mini() {  # small_mini PYTHON ROOT: JANuS-mini at the tests' sizes in ROOT (raw in ROOT_raw)
  "$1" -c 'import sys; from janus.data.mini import generate, prepare
prepare.prepare(sys.argv[1], sizes=generate.SMALL, workers=1, log=lambda *_: None)' "$2"
}

mini_job() {  # mini_job PYTHON WORKDIR LOSS ROOT: 2 steps of configs/mini.py on ROOT, then its checks
  local py="$1" workdir="$2" loss="$3" root="$4"
  rm -rf "$workdir"
  # Compiled with most XLA optimizations off, as in the tests: these jobs check what an install
  # finds, not its speed, and compiling dominates 2 steps (28 s of CPU against 40 s).
  JAX_DISABLE_MOST_OPTIMIZATIONS=1 "$py" -m janus.main --config "$repo/configs/mini.py:loss=$loss,root=$root" \
    --workdir "$workdir" --config.total_steps=2 --config.data.budget=200 \
    > "$workdir.log" 2>&1 || { tail -30 "$workdir.log"; return 1; }
  "$py" - "$workdir" "$loss" <<'PY'
import json, pathlib, sys
workdir, loss = pathlib.Path(sys.argv[1]), sys.argv[2]
assert (workdir / "DONE").is_file(), f"{workdir}: no DONE"
result = json.loads((workdir / "eval" / "2.json").read_text())
assert result["loss"] == loss, result["loss"]
sets = {"val", "v2", "sketch", "r", "a", "objectnet"}
assert set(result["sets"]) == sets, sorted(result["sets"])
print(f"installs: {loss} mini job -> {workdir}: DONE, eval/2.json with {sorted(sets)}")
PY
}

case "$mode" in
  readme)
    py="$(command -v python)"
    python "$repo/tests/installs/check_paths.py" --repo "$repo" --expect editable --no-torch
    cd "$repo"
    tmp="$(mktemp -d)"
    small_mini "$py" "$tmp/mini"
    mini_job "$py" "$tmp/mini_vl" infonce "$tmp/mini"
    rm -rf "$tmp"
    ;;
  wheel)
    tmp="$(mktemp -d)"
    # Built from a copy of the checkout's files (tracked and not ignored): setuptools builds in
    # the source tree, and CI runs this beside README step 2's editable install of the same tree.
    mkdir "$tmp/src"
    git -C "$repo" ls-files -co --exclude-standard -z \
      | tar -C "$repo" --null -T - -cf - | tar -C "$tmp/src" -xf -
    python3.11 -m venv "$tmp/venv"  # its pip builds the wheel: CI starts this before any venv
    "$tmp/venv/bin/pip" wheel -q --no-deps "$tmp/src" -w "$tmp/dist"
    "$tmp/venv/bin/pip" install -q -r "$repo/requirements/lock.txt"
    "$tmp/venv/bin/pip" install -q --no-deps "$tmp"/dist/janus-*.whl
    mkdir -p "$tmp/elsewhere"
    cd "$tmp/elsewhere"
    "$tmp/venv/bin/python" "$repo/tests/installs/check_paths.py" --repo "$repo" --expect wheel
    small_mini "$tmp/venv/bin/python" "$tmp/elsewhere/mini"
    mini_job "$tmp/venv/bin/python" "$tmp/elsewhere/mini_ce" ce "$tmp/elsewhere/mini"
    mini_job "$tmp/venv/bin/python" "$tmp/elsewhere/mini_vl" infonce "$tmp/elsewhere/mini"
    rm -rf "$tmp"
    ;;
  *)
    echo "usage: check.sh readme|wheel" >&2
    exit 2
    ;;
esac
