"""The installed distribution claims one top-level import name, ``lstm_conformance``; the repository's top-level
folders (reference/, adapters/, conformance/) are mapped into it and are importable under no other name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import importlib, json
names = {}
for name in ("adapters", "reference", "conformance", "lstm_conformance", "lstm_conformance.reference.lstm",
             "lstm_conformance.adapters.registry", "lstm_conformance.conformance.plugin", "lstm_conformance.cli"):
    try:
        importlib.import_module(name)
        names[name] = True
    except ImportError:
        names[name] = False
print(json.dumps(names))
"""


def test_only_lstm_conformance_imports_from_outside_the_repository(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    )
    imported = json.loads(done.stdout)
    assert imported == {
        "adapters": False,
        "reference": False,
        "conformance": False,
        "lstm_conformance": True,
        "lstm_conformance.reference.lstm": True,
        "lstm_conformance.adapters.registry": True,
        "lstm_conformance.conformance.plugin": True,
        "lstm_conformance.cli": True,
    }, f"got {imported} [python -c PROBE in an empty directory]"


def test_no_source_imports_the_old_top_level_names() -> None:
    root = Path(__file__).resolve().parent.parent
    offenders = []
    for folder in ("reference", "adapters", "conformance", "lstm_conformance", "tests", "benchmarks"):
        for path in (root / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                stripped = line.strip()
                if stripped.startswith(("from reference", "from adapters", "from conformance")) or stripped.startswith(
                    ("import reference", "import adapters", "import conformance")
                ):
                    offenders.append(f"{path.relative_to(root)}:{number}: {stripped}")
    assert not offenders, "old top-level imports (use lstm_conformance.<name>):\n" + "\n".join(offenders)
