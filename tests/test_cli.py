"""The `visioncraft` command, run as a user runs it: a subprocess with VISIONCRAFT_* variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image


def run_cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VISIONCRAFT_", "GOOGLE_", "GEMINI_"))
    }
    env["VISIONCRAFT_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=check,
    )


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    created = run_cli(tmp_path, "keys", "create", "--name", "laptop")
    token = created.stdout.strip()
    key_id = token.split("_")[2]
    listed = run_cli(tmp_path, "keys", "list").stdout
    revoked = run_cli(tmp_path, "keys", "revoke", key_id)
    relisted = run_cli(tmp_path, "keys", "list").stdout

    assert token.startswith("vc_live_")
    assert "not shown again" in created.stderr
    assert key_id in listed
    assert token not in listed
    assert token[-4:] in listed
    assert "active" in listed
    assert f"Revoked key {key_id}" in revoked.stdout
    assert "revoked" in relisted


def test_keys_create_test_key_with_scopes(tmp_path: Path) -> None:
    created = run_cli(
        tmp_path, "keys", "create", "--name", "ci", "--test", "--scopes", "images:read"
    )
    listed = run_cli(tmp_path, "keys", "list").stdout

    assert created.stdout.startswith("vc_test_")
    assert "images:read" in listed
    assert "images:generate" not in listed


def test_keys_create_rejects_unknown_scope(tmp_path: Path) -> None:
    result = run_cli(
        tmp_path, "keys", "create", "--name", "x", "--scopes", "images:paint", check=False
    )

    assert result.returncode == 1
    assert "Unknown scope 'images:paint'" in result.stderr


def test_revoke_unknown_key_fails_clearly(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "keys", "revoke", "NoSuchKeyId00000", check=False)

    assert result.returncode == 1
    assert "No API key with id 'NoSuchKeyId00000'" in result.stderr


def test_generate_writes_pngs(tmp_path: Path) -> None:
    output = tmp_path / "harbour.png"
    result = run_cli(
        tmp_path,
        "generate",
        "a harbour at dawn",
        "-o",
        str(output),
        "-n",
        "2",
        "--aspect-ratio",
        "16:9",
        "--seed",
        "5",
    )

    for name in ("harbour-1.png", "harbour-2.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size == (1344, 768)
    assert "seed 5" in result.stdout
    assert "seed 6" in result.stdout
    assert "Generating 2 image(s) with demo" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("generate", "x", "-n", "9"), "9 is outside 1..4"),
        (("generate", "x", "--aspect-ratio", "5:4"), "invalid choice: '5:4'"),
        (("generate", "x", "--seed", "abc"), "'abc' is not a whole number"),
    ],
)
def test_generate_rejects_bad_arguments(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = run_cli(tmp_path, *args, check=False)

    assert result.returncode == 2
    assert message in result.stderr


def test_serve_rejects_several_workers(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "serve", "--workers", "4", check=False)

    assert result.returncode == 1
    assert "one worker per container" in result.stderr


def test_production_without_settings_names_them(tmp_path: Path) -> None:
    env_result = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "VISIONCRAFT_DATA_DIR": str(tmp_path),
            "VISIONCRAFT_ENVIRONMENT": "production",
        },
        timeout=60,
        check=False,
    )

    assert env_result.returncode == 2
    assert "VISIONCRAFT_SECRET_KEY" in env_result.stderr
