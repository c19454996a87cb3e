"""The foundation: the package imports without TensorFlow and the test process sees 8 devices."""

import subprocess
import sys


def test_eight_host_devices(num_devices):
    assert num_devices == 8


def test_import_janus_without_tensorflow():
    # A fresh interpreter, so modules other tests imported cannot mask a TF import.
    code = (
        "import sys, importlib, pkgutil, janus\n"
        "for m in pkgutil.walk_packages(janus.__path__, 'janus.'):\n"
        "    if m.name.endswith('__main__'):\n"
        "        continue\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
