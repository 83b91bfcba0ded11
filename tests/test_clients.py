"""The clients' real libraries against a live server (issue 16, items 1 and 5).

Apollo Client 4 with its persisted-queries link, against a development and a
production server: a hash miss, the retry with the text, then a hash hit; one
client built from a folder of multi-operation `.graphql` files and another
from an Apollo manifest, with no restart between a change to the folder and
its use. urql over GET with hashed queries. And the README's cache-per-purpose
setup keeping what was read under one purpose away from requests made under
another.

node and npm drive `tests/clients/run.mjs`; its packages are installed from
`tests/clients/package-lock.json` (`npm ci`) when `node_modules` is missing.
Without node, or when the packages cannot be installed, the tests are skipped
saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.auth import mint_token
from server.db import DatabaseUrls
from server.settings import Settings
from tests.conftest import live_server_of
from tests.test_persisted import NAMES, SCREEN, sha256, with_typename, write
from tests.test_tokens import Keys, claims_for, make_keys, production, sign

CLIENTS = Path(__file__).with_name("clients")
TEACHER = "teacher1@northwind.example"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None, reason="node and npm are not installed: the real client libraries cannot run"
)

MY_CLASSES = "query MyClasses { me { classes { id name students { ...Names } } } }\n" + NAMES
ANSWERS = "query Answers { me { classes { id students { id responses(first: 2) { id answer } } } } }"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    folder = CLIENTS / "node_modules"
    if not (folder / "@apollo" / "client").is_dir():
        command = [str(NPM), "ci", "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            done = subprocess.run(command, cwd=CLIENTS, capture_output=True, text=True, timeout=300, check=False)  # noqa: S603
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci in tests/clients took over 5 minutes (no registry access?)")
        if done.returncode != 0:
            pytest.skip(f"npm ci in tests/clients failed (no registry access?): {done.stderr.strip()[-300:]}")
    return folder


def run_clients(node_modules: Path, scenario: dict[str, Any]) -> list[dict[str, Any]]:
    done = subprocess.run(  # noqa: S603
        [str(NODE), str(CLIENTS / "run.mjs"), json.dumps(scenario)],
        cwd=CLIENTS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NODE_ENV": "production"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results: list[dict[str, Any]] = json.loads(done.stdout)["results"]
    return results


def shapes(result: dict[str, Any]) -> list[tuple[bool, bool, int]]:
    """(sent a hash, sent the text, status) of each request of a step."""
    return [(r["hash"] is not None, r["withQuery"], r["status"]) for r in result["requests"]]


# ------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def dev_server(settings: Settings, db: DatabaseUrls) -> Iterator[str]:
    with live_server_of(create_app(settings, db)) as url:
        yield url + "/graphql"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    keys = make_keys(tmp_path_factory.mktemp("clients"))
    write(keys.operations_dir / "shared" / "names.graphql", NAMES)
    write(keys.operations_dir / "teacher-app" / "screen.graphql", SCREEN)
    return keys


@pytest.fixture(scope="module")
def prod_server(settings: Settings, keys: Keys, db: DatabaseUrls) -> Iterator[str]:
    with live_server_of(create_app(production(settings, keys), db)) as url:
        yield url + "/graphql"


@pytest.fixture(scope="module")
def dev_token(settings: Settings, users: dict[str, uuid.UUID]) -> str:
    return mint_token(settings, users[TEACHER], ["INSTRUCTION", "REPORTING"], 600)


@pytest.fixture(scope="module")
def prod_token(keys: Keys, users: dict[str, uuid.UUID]) -> str:
    claims = claims_for(users[TEACHER], purposes=["INSTRUCTION", "REPORTING"], exp=int(time.time()) + 3600)
    return sign(keys.rsa_private, claims)


# --------------------------------------------------------------------- tests


def test_apollo_persisted_queries_against_development_miss_then_retry_with_text_then_hit(
    node_modules: Path, dev_server: str, dev_token: str
) -> None:
    query = f"query Mine {{ me {{ id role }} }} # {uuid.uuid4()}"
    step = {"client": "apollo", "persisted": "hash", "purpose": "INSTRUCTION", "query": query}
    first, second = run_clients(node_modules, {"url": dev_server, "token": dev_token, "steps": [step, step]})
    assert first["error"] is None and first["data"]["me"]["role"] == "TEACHER"
    assert shapes(first) == [(True, False, 404), (True, True, 200)]
    assert first["requests"][0]["codes"] == ["PERSISTED_QUERY_NOT_FOUND"]
    assert second["data"]["me"]["role"] == "TEACHER" and shapes(second) == [(True, False, 200)]


def test_apollo_persisted_queries_against_production_from_a_folder_and_from_a_manifest_with_no_restart(
    node_modules: Path, prod_server: str, prod_token: str, keys: Keys
) -> None:
    # Client A, built from the folder's multi-operation files: its own printing of an
    # operation (with __typename) is unknown by hash, registered by its canonical form.
    step = {"client": "apollo", "persisted": "hash", "purpose": "INSTRUCTION", "query": MY_CLASSES}
    first, second = run_clients(node_modules, {"url": prod_server, "token": prod_token, "steps": [step, step]})
    assert first["error"] is None and first["data"]["me"]["classes"], first
    assert shapes(first) == [(True, False, 404), (True, True, 200)]
    assert shapes(second) == [(True, False, 200)] and second["data"] == first["data"]

    # The folder changes while the server runs: a new operation in a new file, and
    # client B's Apollo manifest.
    purposes = "query Purposes {\n  me {\n    allowedPurposes\n  }\n}\n"
    unregistered = {"client": "apollo", "persisted": "hash", "purpose": "INSTRUCTION", "query": purposes}
    (refused,) = run_clients(node_modules, {"url": prod_server, "token": prod_token, "steps": [unregistered]})
    assert refused["data"] is None and refused["requests"][-1]["codes"] == ["OPERATION_NOT_ALLOWED"]
    write(keys.operations_dir / "teacher-app" / "purposes.graphql", purposes)
    body = with_typename("query Roles { me { id role } }")
    manifest = keys.operations_dir / "teacher-app" / "persisted-query-manifest.json"
    operations = [{"id": sha256(body), "name": "Roles", "type": "query", "body": body}]
    write(manifest, json.dumps({"format": "apollo-persisted-query-manifest", "version": 1, "operations": operations}))

    by_manifest = {
        "client": "apollo",
        "persisted": "manifest",
        "purpose": "INSTRUCTION",
        "query": "query Roles { me { id role } }",
    }
    scenario = {
        "url": prod_server,
        "token": prod_token,
        "manifest": str(manifest),
        "steps": [by_manifest, unregistered, unregistered],
    }
    manifest_run, added, added_again = run_clients(node_modules, scenario)
    # Client B: a hit at once, by the manifest's id.
    assert manifest_run["data"]["me"]["role"] == "TEACHER" and shapes(manifest_run) == [(True, False, 200)]
    # Client A: the operation added to the folder runs without a restart.
    assert added["error"] is None and "INSTRUCTION" in added["data"]["me"]["allowedPurposes"]
    assert shapes(added) == [(True, False, 404), (True, True, 200)]
    assert shapes(added_again) == [(True, False, 200)]


def test_urql_over_get_with_hashed_queries(node_modules: Path, dev_server: str, dev_token: str) -> None:
    query = f"query Hashed {{ me {{ id role }} }} # {uuid.uuid4()}"
    step = {"client": "urql", "purpose": "INSTRUCTION", "query": query}
    first, second = run_clients(node_modules, {"url": dev_server, "token": dev_token, "steps": [step, step]})
    assert first["error"] is None and first["data"]["me"]["role"] == "TEACHER", first
    assert first["requests"][0]["method"] == "GET" and first["requests"][0]["codes"] == ["PERSISTED_QUERY_NOT_FOUND"]
    assert [r["withQuery"] for r in first["requests"]] == [False, True]
    assert second["data"] == first["data"]
    assert [(r["method"], r["withQuery"], r["status"]) for r in second["requests"]] == [("GET", False, 200)]


@pytest.mark.parametrize("library", ["apollo", "urql"])
def test_the_readmes_cache_per_purpose_keeps_what_was_read_under_instruction_from_reporting(
    node_modules: Path, dev_server: str, dev_token: str, library: str
) -> None:
    instruction = {"client": library, "purpose": "INSTRUCTION", "query": ANSWERS, "fetchPolicy": "cache-first"}
    reporting = {**instruction, "purpose": "REPORTING"}
    read, cached, other = run_clients(
        node_modules, {"url": dev_server, "token": dev_token, "steps": [instruction, instruction, reporting]}
    )
    answers = [r["answer"] for c in read["data"]["me"]["classes"] for s in c["students"] for r in s["responses"]]
    assert any(a is not None for a in answers), read
    # Served from INSTRUCTION's cache: no request.
    assert cached["requests"] == [] and cached["data"] == read["data"]
    # REPORTING asks the server, which denies the answers: no cached answer leaks across.
    assert other["requests"] and all(r["purpose"] == "REPORTING" for r in other["requests"])
    assert "FORBIDDEN" in other["requests"][-1]["codes"]
    leaked = [
        r.get("answer")
        for c in (other["data"] or {}).get("me", {}).get("classes", [])
        for s in c["students"]
        for r in s["responses"] or []
    ]
    assert all(a is None for a in leaked)
