"""The `visioncraft` command with VISIONCRAFT_* variables, in this process and as a subprocess."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from app.accounts.passwords import verify_password
from app.cli import main


def run_cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `visioncraft ARGS` in this process with only VISIONCRAFT_DATA_DIR set.

    In-process runs cost milliseconds where a subprocess costs seconds of imports; the tests that
    need a real process (stdin, the environment at import) call `run_cli_process`.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(("VISIONCRAFT_", "GOOGLE_", "GEMINI_")):
                patch.delenv(key)
        patch.setenv("VISIONCRAFT_DATA_DIR", str(data_dir))
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                returncode = main(list(args))
            except SystemExit as exit_:  # argparse exits on usage errors
                returncode = exit_.code if isinstance(exit_.code, int) else 1
    root.handlers[:] = handlers
    root.setLevel(level)
    result = subprocess.CompletedProcess(
        ["visioncraft", *args], returncode, stdout.getvalue(), stderr.getvalue()
    )
    if check:
        result.check_returncode()
    return result


def run_cli_process(
    data_dir: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `visioncraft ARGS` as a subprocess, as a user runs it."""
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
    created = run_cli_process(tmp_path, "keys", "create", "--name", "laptop")
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
    assert "keys list" in result.stderr


def test_revoke_with_whole_key_never_echoes_it(tmp_path: Path) -> None:
    token = run_cli(tmp_path, "keys", "create", "--name", "laptop").stdout.strip()
    result = run_cli(tmp_path, "keys", "revoke", token, check=False)

    assert result.returncode == 1
    assert token not in result.stderr
    assert token.split("_")[3] not in result.stderr
    assert "Pass the key id, not the key itself" in result.stderr


def test_revoking_twice_says_already_revoked(tmp_path: Path) -> None:
    key_id = run_cli(tmp_path, "keys", "create", "--name", "laptop").stdout.split("_")[2]
    run_cli(tmp_path, "keys", "revoke", key_id)
    again = run_cli(tmp_path, "keys", "revoke", key_id)

    assert "was already revoked on" in again.stdout


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
        (("serve", "--port", "99999"), "99999 is outside 1..65535"),
    ],
)
def test_generate_rejects_bad_arguments(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = run_cli(tmp_path, *args, check=False)

    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("generate", "   "), "the prompt is empty"),
        (("generate", "x" * 4001), "the limit is 4000"),
        (("generate", "x", "--negative-prompt", "y" * 2001), "negative_prompt"),
        (("generate", "x", "--model", "dall-e-3"), "unknown model 'dall-e-3'; use one of demo"),
        (("generate", "x", "-o", "picture.jpg"), "does not end in .png"),
        (("generate", "x", "-o", "/nonexistent/folder/out.png"), "does not exist"),
    ],
)
def test_generate_checks_like_the_api(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run_cli(tmp_path, *args, check=False)

    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_generate_into_a_folder_fails_clearly(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "generate", "x", "-o", str(tmp_path), check=False)

    assert result.returncode == 1
    assert "is a folder" in result.stderr


def test_invalid_setting_names_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "VISIONCRAFT_DATA_DIR": str(tmp_path), "VISIONCRAFT_PORT": "http"}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "keys", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "VISIONCRAFT_PORT" in result.stderr
    assert "(got 'http')" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


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


def test_accounts_create_list_and_set_plan(tmp_path: Path) -> None:
    created = run_cli(tmp_path, "accounts", "create", "--email", "Ann@Example.com")
    admin = run_cli(tmp_path, "accounts", "create", "--email", "boss@example.com", "--admin")
    moved = run_cli(tmp_path, "accounts", "set-plan", "ann@example.com", "pro")
    listed = run_cli(tmp_path, "accounts", "list").stdout

    assert "(ann@example.com, user) on the free plan with 50 allowance credits" in created.stdout
    assert "(boss@example.com, admin)" in admin.stdout
    assert "ann@example.com is on the pro plan, with 1000 allowance credits" in moved.stdout
    rows = {line.split()[-1]: line.split() for line in listed.splitlines()[1:]}
    assert rows["ann@example.com"][1:5] == ["user", "pro", "1000", "0"]
    assert rows["admin@localhost"][1:3] == ["admin", "unlimited"]


def test_credits_grant_and_admin_key(tmp_path: Path) -> None:
    run_cli(tmp_path, "accounts", "create", "--email", "boss@example.com", "--admin")
    granted = run_cli(tmp_path, "credits", "grant", "boss@example.com", "25", "--reason", "gift")
    admin_key = run_cli(
        tmp_path,
        "keys",
        "create",
        "--name",
        "ops",
        "--account",
        "boss@example.com",
        "--scopes",
        "admin,images:read",
    )

    assert "Granted 25 credits to boss@example.com: balance 75 (50 allowance, 25 purchased)" in (
        granted.stdout
    )
    assert admin_key.stdout.startswith("vc_live_")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("accounts", "set-plan", "nobody@example.com", "pro"), "No account with the email"),
        (("accounts", "create", "--email", "x@example.com", "--plan", "gold"), "No plan named"),
        (("accounts", "create", "--email", "not-an-email"), "is not an email address"),
        (("credits", "grant", "admin@localhost", "0", "--reason", "x"), "0 is outside"),
    ],
)
def test_accounts_commands_reject_bad_input(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    run_cli(tmp_path, "keys", "list")  # makes the database and the local account
    result = run_cli(tmp_path, *args, check=False)

    assert result.returncode in (1, 2)
    assert message in result.stderr


def test_set_password_stores_only_a_hash(tmp_path: Path) -> None:
    run_cli(tmp_path, "accounts", "create", "--email", "ann@example.com")
    env = {key: value for key, value in os.environ.items() if not key.startswith("VISIONCRAFT_")}
    env["VISIONCRAFT_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "accounts", "set-password", "ann@example.com"],
        input="correct horse battery\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    with sqlite3.connect(tmp_path / "visioncraft.db") as connection:
        (stored,) = connection.execute(
            "SELECT password_hash FROM accounts WHERE email = 'ann@example.com'"
        ).fetchone()

    assert "Set the password of ann@example.com." in result.stdout
    assert "correct horse" not in stored
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse battery!", stored)


def test_serve_on_busy_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(tmp_path, "serve", "--port", str(port), check=False)

    assert result.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "--port or VISIONCRAFT_PORT" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
