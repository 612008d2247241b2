"""Collection stays light: loading the plugin imports none of the heavy libraries (they cost seconds)."""

import subprocess
import sys


def test_plugin_import_pulls_in_no_heavy_library() -> None:
    code = (
        "import sys, pytest_llem.plugin, pytest_llem.items, pytest_llem.study.grid; "
        "print(sorted(m for m in ('torch', 'transformers', 'scipy', 'numpy', 'vllm', 'zeus') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
