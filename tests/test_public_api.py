"""Every name of the public API resolves, and importing taskrank stays cheap."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import taskrank


def test_every_exported_name_resolves():
    for name in taskrank.__all__:
        assert getattr(taskrank, name) is not None, name


def test_no_exported_name_is_also_a_subpackage():
    # Python sets a package's attribute to each subpackage it imports: an export of the same
    # name (taskrank.adapt was once the function and the subpackage) would change meaning
    # depending on what had been imported before.
    submodules = {info.name for info in pkgutil.iter_modules(taskrank.__path__)}
    assert "adapt" in submodules
    assert not submodules & set(taskrank.__all__)


def test_adapt_is_the_subpackage_whatever_was_imported_first():
    code = (
        "import taskrank, types; first = taskrank.adapt; import taskrank.adapt.training; "
        "print(isinstance(first, types.ModuleType), taskrank.adapt is first, callable(taskrank.adapt.adapt))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True"]


def test_import_does_not_load_torch():
    code = "import sys, taskrank; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_command_line_starts_without_numpy():
    # `taskrank --help` and every command's choice lists come up without the numerical stack:
    # no command module may import numpy when the app loads (the vocabulary is torch- and numpy-free)
    code = "import sys, taskrank.cli; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_merge_command_finds_and_hashes_inputs_before_torch_loads():
    # taskrank merge starts reading and hashing its inputs, then imports torch: the modules it
    # needs for the first part must not pull torch in.
    code = (
        "import sys; import taskrank.cli.merge, taskrank.checkpoints.hashing, taskrank.checkpoints.layout, "
        "taskrank.checkpoints.resolve; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_checkpoint_names_resolve_lazily():
    import taskrank.checkpoints as checkpoints

    for name in checkpoints.__all__:
        assert getattr(checkpoints, name) is not None, name
