"""Section 1: the suite's CUDA-only tests (`@pytest.mark.cuda`), run by pytest in a subprocess.

Counts come from pytest's JUnit XML (`--junitxml`), not its console output. Only the test files
that mention the marker are passed to pytest, so the run does not pay for collecting (and
importing the optional packages of) the whole suite; `-m cuda` then selects inside them.
On a CPU the marked tests skip themselves (their skipif), which the dry run reports as such.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gpu_check_common import ROOT, installed

MARKER_TEXT = "mark.cuda"


@dataclass
class CaseResult:
    name: str
    outcome: str             # passed | failed | error | skipped
    seconds: float
    message: str | None = None


@dataclass
class SuiteRun:
    files: list[str]
    exit_code: int | None
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    cases: list[CaseResult] = field(default_factory=list)
    output_tail: str = ""


def marked_files(tests: Path = ROOT / "tests") -> list[Path]:
    """Test files that use the cuda marker (by text: a decorator, pytestmark or marks=)."""
    return sorted(p for p in tests.rglob("test_*.py") if MARKER_TEXT in p.read_text(errors="replace"))


def parse_junit(path: Path) -> list[CaseResult]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (found.get("message") or found.text or "").strip()[:500]
                break
        cases.append(CaseResult(name, outcome, float(case.get("time") or 0.0), message))
    return cases


def run_cuda_tests(timeout_s: float) -> SuiteRun:
    if not installed("pytest"):
        raise ModuleNotFoundError("pytest is not installed in this Python: the CUDA-only tests cannot run "
                                  "(pip install pytest, then run the check again)")
    files = marked_files()
    run = SuiteRun([str(f.relative_to(ROOT)) for f in files], None)
    if not files:
        return run
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q",
                   f"--junitxml={junit}", *run.files]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        run.exit_code = done.returncode
        run.output_tail = (done.stdout + done.stderr)[-3000:]
        run.cases = parse_junit(junit) if junit.exists() else []
    counts = Counter(case.outcome for case in run.cases)
    run.passed, run.failed, run.errors, run.skipped = (counts[k] for k in ("passed", "failed", "error", "skipped"))
    return run
