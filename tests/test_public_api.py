"""Every name of the public API resolves, and importing taskrank stays cheap."""

from __future__ import annotations

import subprocess
import sys

import taskrank


def test_every_exported_name_resolves():
    for name in taskrank.__all__:
        assert getattr(taskrank, name) is not None, name


def test_import_does_not_load_torch():
    code = "import sys, taskrank; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
