"""The command line: schema, token, seed and migrate against a real database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest

from schema.compat import incompatibilities
from server.db import DatabaseUrls
from server.settings import Settings

SECRET = "cli-test-secret-of-enough-length-0123456789"


def run(args: list[str], db: DatabaseUrls, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PLEDGEQL_DATABASE_URL": db.owner,
        "PLEDGEQL_DATA_DIR": str(tmp_path),
        "PLEDGEQL_JWT_SECRET": SECRET,
        **env,
    }
    return subprocess.run(  # noqa: S603 (our own console entry point)
        [sys.executable, "-m", "server.commands.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def test_pledgeql_schema_prints_sdl_compatible_with_the_contract(db: DatabaseUrls, tmp_path: Path) -> None:
    result = run(["schema"], db, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "directive @classified(category: DataCategory!) on FIELD_DEFINITION" in result.stdout
    assert incompatibilities(result.stdout) == []


def test_pledgeql_token_prints_a_verifiable_token_and_nothing_else(
    db: DatabaseUrls, tmp_path: Path, users: dict[str, uuid.UUID]
) -> None:
    result = run(
        ["token", "--username", "teacher1@northwind.example", "--purposes", "INSTRUCTION,REPORTING"], db, tmp_path
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert "\n" not in token
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(users["teacher1@northwind.example"])
    assert claims["purposes"] == ["INSTRUCTION", "REPORTING"]
    assert claims["exp"] > claims["iat"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "--username", "nobody@nowhere.example", "--purposes", "INSTRUCTION"], "no user named"),
        (["token", "--username", "teacher1@northwind.example", "--purposes", "ADVERTISING"], "unknown purposes"),
        (["token", "--username", "teacher1@northwind.example", "--purposes", " , "], "at least one purpose"),
        (["token", "--user-id", "not-a-uuid", "--purposes", "INSTRUCTION"], "--user-id must be a UUID"),
        (["token", "--username", "teacher1@northwind.example", "--purposes", "INSTRUCTION", "--ttl", "-5"], "--ttl"),
        (["token", "--username", "teacher1@northwind.example", "--purposes", "INSTRUCTION", "--ttl", "0"], "--ttl"),
        (
            [
                "token",
                "--username",
                "teacher1@northwind.example",
                "--purposes",
                "INSTRUCTION",
                "--ttl",
                "10" + "0" * 20,
            ],
            "--ttl",
        ),
    ],
)
def test_pledgeql_token_refuses_bad_input_with_a_message_on_stderr(
    db: DatabaseUrls, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run(args, db, tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stdout == ""


def test_pledgeql_token_is_refused_in_production(db: DatabaseUrls, tmp_path: Path) -> None:
    result = run(
        ["token", "--username", "teacher1@northwind.example", "--purposes", "INSTRUCTION"],
        db,
        tmp_path,
        PLEDGEQL_ENV="production",
    )
    assert result.returncode != 0
    assert "production" in result.stderr
    assert result.stdout == ""


async def test_pledgeql_migrate_and_seed_are_idempotent(db: DatabaseUrls, tmp_path: Path, owner: Any) -> None:
    before = await owner.fetchval("SELECT count(*) FROM users")
    result = run(["migrate"], db, tmp_path)
    assert result.returncode == 0, result.stderr
    result = run(["seed", "--demo"], db, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "already there" in result.stdout
    assert await owner.fetchval("SELECT count(*) FROM users") == before


def test_the_development_secret_is_generated_once_into_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = settings.development_jwt_secret()
    assert first == Settings(data_dir=tmp_path).development_jwt_secret()
    assert len(first) >= 32
    assert oct((tmp_path / "jwt_secret").stat().st_mode & 0o777) == "0o600"
