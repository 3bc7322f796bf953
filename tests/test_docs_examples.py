"""The API quickstart's examples run unchanged against a real server, in both languages."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LiveServer, create_key, running_in_ci

from app.web.docs import DocsLibrary

FENCED_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
PLACEHOLDER_KEY = "vc_live_..."


def _blocks(source: str, language: str) -> list[str]:
    return [body for tag, body in FENCED_BLOCK.findall(source) if tag == language]


def _require_jq() -> None:
    if shutil.which("jq"):
        return
    if running_in_ci():
        pytest.fail("jq is missing in CI: .ci/run must install it")
    pytest.skip("jq is not installed; the quickstart's download example uses it")


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=env["WORK_DIR"], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def quickstart_env(live_server: LiveServer, tmp_path: Path) -> dict[str, str]:
    work = tmp_path / "work"
    work.mkdir()
    return {
        **os.environ,
        "VISIONCRAFT_API_KEY": create_key(live_server.settings),
        "WORK_DIR": str(work),
    }


@pytest.mark.parametrize("locale", ["en", "ja"])
def test_quickstart_shell_examples_run(
    live_server: LiveServer, quickstart_env: dict[str, str], locale: str
) -> None:
    _require_jq()
    source = DocsLibrary(base_url=live_server.base_url).get("quickstart", locale).source
    blocks = [block for block in _blocks(source, "sh") if PLACEHOLDER_KEY not in block]

    assert len(blocks) == 5
    for block in blocks:
        result = _run(["bash", "-euo", "pipefail", "-c", block], quickstart_env)
        assert result.returncode == 0, (block, result.stderr)
        if result.stdout.strip():
            assert "error" not in json.loads(result.stdout), (block, result.stdout)
    downloaded = Path(quickstart_env["WORK_DIR"], "boat.png").read_bytes()
    assert downloaded.startswith(b"\x89PNG")


@pytest.mark.parametrize("locale", ["en", "ja"])
def test_quickstart_python_examples_run(
    live_server: LiveServer, quickstart_env: dict[str, str], locale: str
) -> None:
    source = DocsLibrary(base_url=live_server.base_url).get("quickstart", locale).source
    blocks = _blocks(source, "python")

    assert len(blocks) == 2
    for block in blocks:
        result = _run([sys.executable, "-c", block], quickstart_env)
        assert result.returncode == 0, (block, result.stderr)
    work = Path(quickstart_env["WORK_DIR"])
    assert sorted(path.name for path in work.glob("fox-*.png")) == ["fox-1.png", "fox-2.png"]
    assert result.stdout.startswith(f"{live_server.base_url}/api/v1/images/img_")
