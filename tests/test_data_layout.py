"""The two data flows meet only at the records: loading batches never imports the builder, and
building records never imports the input pipeline (README, Layout)."""

import subprocess
import sys

import pytest


def _janus_data_modules_after(imports: str) -> list[str]:
    code = (
        f"import sys; {imports}; "
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('janus.data'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return out.stdout.split()


@pytest.mark.parametrize(
    ("imports", "flow", "other"),
    [
        (
            "import janus.data.input.pipeline, janus.data.input.prefetch, janus.evaluate.runner",
            "janus.data.input",
            "janus.data.ingest",
        ),
        (
            "import janus.data.ingest.cli, janus.data.mini.prepare",
            "janus.data.ingest",
            "janus.data.input",
        ),
    ],
)
def test_a_data_flow_never_imports_the_other(imports, flow, other):
    loaded = _janus_data_modules_after(imports)
    assert any(m.startswith(flow + ".") for m in loaded), loaded
    assert not [m for m in loaded if m == other or m.startswith(other + ".")]


def test_the_builder_cli_keeps_its_name():
    out = subprocess.run(
        [sys.executable, "-m", "janus.data.build", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "--out" in out.stdout and "--label-set" in out.stdout
