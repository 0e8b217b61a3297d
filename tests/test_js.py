"""The frontend's pure logic (web/js/hyvideo_logic.js), tested with node's built-in runner."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_frontend_logic_with_node_test_runner():
    done = subprocess.run(["node", "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# fail 0" in done.stdout


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_extension_module_parses():
    done = subprocess.run(["node", "--check", "web/js/hyvideo.js"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
