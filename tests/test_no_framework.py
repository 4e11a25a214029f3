"""The core and its handler tests work where no web framework can be imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent

BLOCK_FRAMEWORKS = """
import sys
for name in ("flask", "falcon", "bottle"):
    sys.modules[name] = None  # makes `import name` raise ImportError
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_FRAMEWORKS + code],
        capture_output=True, text=True, timeout=300, cwd=TESTS.parent, check=False,
    )


def test_core_imports_no_framework() -> None:
    """Importing dna_core loads none of flask, falcon or bottle."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys, dna_core, dna_core.cli; "
         "print(sorted(m for m in ('flask', 'falcon', 'bottle') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_handler_tests_pass_without_flask() -> None:
    """The handler tests pass in a process where flask cannot be imported."""
    result = run_python(
        "import pytest\n"
        "code = pytest.main(['-q', '-p', 'no:cacheprovider', %r])\n"
        "print('EXIT=%%d' %% code, flush=True)\n"
        "import flask\n" % str(TESTS / "test_handlers.py")
    )

    assert "EXIT=0" in result.stdout, result.stdout + result.stderr
    assert "passed" in result.stdout
    # The last line proves flask really was unavailable in that process.
    assert "ImportError" in result.stderr or "ModuleNotFoundError" in result.stderr
