"""The package as a fresh user meets it: README commands, CI, lazy imports, Keras registration."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_opens_with_two_setup_commands_and_ci_runs_the_test_one():
    main_command, test_command = readme_commands()[:2]
    assert "keras-ucaps" in main_command and "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_importing_the_package_does_not_import_tensorflow():
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, keras_ucaps, keras_ucaps.io, keras_ucaps.cli, keras_ucaps.data.simulate;"
         "print([m for m in ('tensorflow', 'keras') if m in sys.modules])"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "[]"


def test_the_command_line_imports_nothing_heavy_for_help():
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, keras_ucaps.cli;"
         "print([m for m in ('numpy', 'scipy', 'pandas', 'tensorflow', 'keras') if m in sys.modules])"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "[]"  # `keras-ucaps --help` answers at once


def test_tensorflow_startup_notes_are_dropped_from_standard_error_and_other_lines_kept():
    """On AVX-512/AMX CPUs TensorFlow 2.21 writes its oneDNN note through absl before absl is initialised,
    which TF_CPP_MIN_LOG_LEVEL does not reach: the command line filters file descriptor 2."""
    notes = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n"
             "I0000 00:00:1796211118.990610   10052 port.cc:153] oneDNN custom operations are on. You may see "
             "slightly different numerical results.\\n")
    probe = subprocess.run(
        [sys.executable, "-c", "import os; from keras_ucaps.cli.quiet import drop_tensorflow_startup_notes;"
         f"drop_tensorflow_startup_notes(); os.write(2, b'{notes}'); os.write(2, b'Error: x.mrc: no such file\\n');"
         "import sys; print('note: kept', file=sys.stderr)"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stderr == "Error: x.mrc: no such file\nnote: kept\n"


# The package's layers, lowest first: a module imports from its own layer or lower ones (importing the package
# itself, which registers the Keras objects, is allowed anywhere).
LAYERS = [
    {"errors"},
    {"io", "classes"},  # file formats and the class registry they name
    {"pretrained"},
    {"data", "layers"},
    {"picking"},
    {"models"},
    {"serving", "evaluation", "training"},
    {"inference"},  # prediction, locally or through serving's client
    {"picker"},  # the Python API
    {"cli", "__main__"},
]


def test_no_module_imports_from_a_layer_above_its_own():
    import ast

    level = {name: i for i, names in enumerate(LAYERS) for name in names}
    package = ROOT / "keras_ucaps"
    upward = []
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        if parts == ("__init__",):
            continue
        source = parts[0]
        assert source in level, f"{source}: a top-level module no layer names"
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                if name.startswith("keras_ucaps.") and level[name.split(".")[1]] > level[source]:
                    upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not upward, upward
