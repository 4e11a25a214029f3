"""The core must stay usable without any web framework installed."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = ("flask", "falcon", "bottle")


def test_core_imports_no_framework() -> None:
    """Importing dna_core and its WSGI app loads none of Flask, Falcon or Bottle."""
    script = (
        "import json, sys\n"
        "import dna_core, dna_core.wsgi, dna_core.cli\n"
        f"print(json.dumps(sorted(name for name in {FRAMEWORKS!r} if name in sys.modules)))\n"
    )

    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)

    assert json.loads(completed.stdout) == []
