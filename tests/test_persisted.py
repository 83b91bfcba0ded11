"""Persisted operations (API.md, "Persisted operations"; issue 16, items 1 and 2).

The registry holds operations, not files: a `.graphql` file with several
operations and fragments (fragments from other files too), Apollo's manifest
and hash -> document maps; each operation is found by its canonical form and
by the sha256 of its text as each kind of file gives it. The folder is read
again when it changes. Automatic Persisted Queries answer an unknown hash with
PERSISTED_QUERY_NOT_FOUND, on which the clients retry with the text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from graphql import (
    DocumentNode,
    FieldNode,
    NameNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Visitor,
    parse,
    print_ast,
    visit,
)

from permissions.policy import load_policy_set
from schema.build import build_schema, graphql_schema
from server.app import create_app
from server.commands.cli import main as cli_main
from server.db import DatabaseUrls
from server.limits import Limits, measure_operation
from server.operations import Checker, OperationRegistry, OperationsError, canonical_forms, load_folder, used_fragments
from server.settings import Settings
from tests.conftest import error_codes
from tests.test_tokens import Keys, claims_for, make_keys, production, sign

GRAPHQL_RESPONSE = "application/graphql-response+json"
TEACHER = "teacher1@northwind.example"
OPERATIONS = Path(__file__).with_name("operations")

NAMES = """
fragment Names on Student {
  id
  firstName
  lastName
}
"""
SCREEN = """
# The teacher's screen: two operations, a fragment from names.graphql.
query MyClasses {
  me { classes { id name students { ...Names } } }
}

query Me {
  me { id role }
}
"""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _AddTypename(Visitor):
    """What Apollo Client does to a document before sending it: __typename in every selection set."""

    def leave_selection_set(self, node: SelectionSetNode, *_args: Any) -> Any:
        if any(isinstance(s, FieldNode) and s.name.value == "__typename" and s.alias is None for s in node.selections):
            return None
        typename = FieldNode(name=NameNode(value="__typename"), arguments=(), directives=())
        return SelectionSetNode(selections=(*node.selections, typename))


def with_typename(text: str) -> str:
    return print_ast(visit(parse(text), _AddTypename()))


def as_a_client_sends(folder_texts: list[str], name: str) -> str:
    """One operation of a folder with the fragments it uses, __typename added: what Apollo sends."""
    documents = [parse(t) for t in folder_texts]
    fragments = {d.name.value: d for doc in documents for d in doc.definitions if d.kind == "fragment_definition"}
    operation = next(
        d
        for doc in documents
        for d in doc.definitions
        if isinstance(d, OperationDefinitionNode) and d.name is not None and d.name.value == name
    )
    standalone = DocumentNode(definitions=(operation, *used_fragments(operation, fragments)))
    return with_typename(print_ast(standalone))


def schema_checker(production_rules: bool = True) -> Checker:
    return Checker(graphql_schema(build_schema(load_policy_set())), Limits(), production_rules)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    # A distinct modification time even within the filesystem's timestamp granularity.
    stamp = time.time() + 10 + len(text) / 1000
    os.utime(path, (stamp, stamp))


# ---------------------------------------------------------------- the registry


def test_each_operation_of_a_multi_operation_file_is_registered_with_fragments_from_another_file(
    tmp_path: Path,
) -> None:
    write(tmp_path / "names.graphql", NAMES)
    write(tmp_path / "teacher" / "screen.graphql", SCREEN)
    snapshot = load_folder(tmp_path, schema_checker())
    assert sorted(o.name for o in snapshot.operations) == ["Me", "MyClasses"]
    sent = as_a_client_sends([NAMES, SCREEN], "MyClasses")
    assert "__typename" in sent and "fragment Names" in sent and "query Me " not in sent
    assert canonical_forms(parse(sent))[0] in snapshot.canonical
    # Whitespace, comments and the order of fragments do not matter either.
    reordered = "# sent by a client\n" + NAMES.replace("\n", " ") + "\nquery MyClasses { me { classes { id name "
    reordered += "students { ...Names } } } }"
    assert canonical_forms(parse(reordered))[0] in snapshot.canonical
    # Another selection is another operation.
    changed = sent.replace("lastName", "email")
    assert canonical_forms(parse(changed))[0] not in snapshot.canonical


def test_a_files_text_with_or_without_its_trailing_newline_names_its_operation(tmp_path: Path) -> None:
    text = "query Me {\n  me { id role }\n}"
    write(tmp_path / "me.graphql", text + "\n")
    snapshot = load_folder(tmp_path, schema_checker())
    assert snapshot.by_hash[sha256(text)] and snapshot.by_hash[sha256(text + "\n")]
    # The operation printed as a client prints it names it too.
    assert sha256(print_ast(parse(text))) in snapshot.by_hash


def test_an_apollo_manifest_and_a_persisted_documents_map_are_registered_by_their_hashes(tmp_path: Path) -> None:
    body = with_typename("query Me { me { id role } }")
    manifest = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{"id": sha256(body), "name": "Me", "type": "query", "body": body}],
    }
    write(tmp_path / "persisted-query-manifest.json", json.dumps(manifest))
    document = "query Versions { policyVersions }"
    write(tmp_path / "persisted-documents.json", json.dumps({"sha256:" + sha256(document): document}))
    snapshot = load_folder(tmp_path, schema_checker())
    assert snapshot.by_hash[sha256(body)] == body
    assert snapshot.by_hash[sha256(document)] == document
    assert snapshot.by_hash["sha256:" + sha256(document)] == document
    assert {o.name for o in snapshot.operations} == {"Me", "Versions"}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"broken.graphql": "query Broken { me { rol } }"}, r"broken\.graphql: operation Broken: Cannot query field"),
        ({"syntax.graphql": "query Syntax { me { "}, r"syntax\.graphql: does not parse"),
        ({"lonely.graphql": "query Lonely { student(id: 1) { ...Missing } }"}, r"operation Lonely: Unknown fragment"),
        (
            {"deep.graphql": "query Deep { me " + "{ classes { students " * 6 + "{ id" + " }" * 14},
            r"deep\.graphql: operation Deep: The query is nested \d+ levels deep; the limit \(depth\) is 12",
        ),
        ({"intro.graphql": "query Intro { __schema { queryType { name } } }"}, r"operation Intro: Introspection"),
        ({"bad.json": json.dumps({"format": "apollo-persisted-query-manifest", "version": 2})}, r"bad\.json"),
        ({"other.json": json.dumps([1, 2])}, r"other\.json: is neither"),
        (
            {"a.graphql": "fragment F on Viewer { id }", "b.graphql": "fragment F on Viewer { role }"},
            r"fragment F is also defined, differently",
        ),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else "",
)
def test_a_folder_with_a_bad_operation_is_refused_naming_its_file_and_operation(
    tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    write(tmp_path / "fine.graphql", "query Fine { me { id } }")
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(OperationsError, match=expected):
        load_folder(tmp_path, schema_checker())


def test_a_file_that_is_not_utf8_is_a_problem_naming_it(tmp_path: Path) -> None:
    write(tmp_path / "fine.graphql", "query Fine { me { id } }")
    (tmp_path / "latin.graphql").write_bytes("query Caf\xe9 { me { id } }".encode("latin-1"))
    with pytest.raises(OperationsError, match=r"latin\.graphql: cannot be read as UTF-8 text"):
        load_folder(tmp_path, schema_checker())


def test_a_file_that_stands_alone_is_named_by_its_whole_text_and_one_that_does_not_is_not(tmp_path: Path) -> None:
    alone = "fragment Who on Viewer { id role }\nquery A { me { ...Who } }\nquery B { me { id } }\n"
    write(tmp_path / "alone.graphql", alone)
    write(tmp_path / "names.graphql", NAMES)
    write(tmp_path / "screen.graphql", SCREEN)
    snapshot = load_folder(tmp_path, schema_checker())
    assert snapshot.by_hash[sha256(alone)] == alone and snapshot.by_hash[sha256(alone.rstrip())] == alone
    assert sha256(SCREEN) not in snapshot.by_hash and sha256(NAMES) not in snapshot.by_hash


def test_a_changed_folder_is_read_again_and_a_bad_change_keeps_the_operations_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "me.graphql", "query Me { me { id } }")
    registry = OperationRegistry(tmp_path, schema_checker())
    added = "query Role { me { role } }"
    assert registry.text_for_hash(sha256(added)) is None
    write(tmp_path / "role.graphql", added)
    # A miss looks at the folder at once: no restart, no wait.
    assert registry.text_for_hash(sha256(added)) == added
    generation = registry.generation
    with caplog.at_level(logging.ERROR, logger="pledgeql.operations"):
        write(tmp_path / "broken.graphql", "query Broken { me { rol } }")
        assert registry.refresh(force=True) is False
    assert registry.generation == generation and registry.text_for_hash(sha256(added)) == added
    assert any("broken.graphql: operation Broken" in r.getMessage() for r in caplog.records)
    assert "not reloaded" in caplog.text
    (tmp_path / "broken.graphql").unlink()
    (tmp_path / "role.graphql").unlink()
    assert registry.refresh(force=True) is True
    assert registry.text_for_hash(sha256(added)) is None


def test_every_client_operation_fits_the_default_limits_with_typename_added_everywhere() -> None:
    schema = graphql_schema(build_schema(load_policy_set()))
    limits = Limits()
    texts = [with_typename(p.read_text()) for p in sorted(OPERATIONS.rglob("*.graphql"))]
    documents = [parse(t) for t in texts]
    fragments = {d.name.value: d for doc in documents for d in doc.definitions if d.kind == "fragment_definition"}
    measured = {}
    for document in documents:
        for operation in document.definitions:
            if not isinstance(operation, OperationDefinitionNode) or operation.name is None:
                continue
            standalone = DocumentNode(definitions=(operation, *used_fragments(operation, fragments)))
            measure = measure_operation(schema, standalone, operation, limits)
            measured[operation.name.value] = measure.cost
            assert measure.cost <= limits.max_cost and measure.depth <= limits.max_depth, operation.name.value
            assert measure.aliases <= limits.max_aliases
    assert len(measured) >= 20 and "StudentHome" in measured


def test_typename_costs_nothing() -> None:
    schema = graphql_schema(build_schema(load_policy_set()))
    text = "query Roster($id: ID!) { class(id: $id) { id students { id firstName } } }"
    plain, typed = parse(text), parse(with_typename(text))
    cost = [measure_operation(schema, d, d.definitions[0], Limits()).cost for d in (plain, typed)]  # type: ignore[arg-type]
    assert cost[0] == cost[1] > 0


# ------------------------------------------------------------ the command line


def test_operations_check_passes_on_the_clients_operations_and_prints_name_hash_and_cost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli_main(["operations", "check", str(OPERATIONS)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "\tStudentHome\t" in line)
    source, _name, digest, cost = line.split("\t")
    assert source == "student-client/home.graphql" and len(digest) == 64 and cost.startswith("cost ")
    assert "24 operations valid" in out


def test_operations_check_fails_clearly_for_a_broken_operation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in OPERATIONS.rglob("*.graphql"):
        write(tmp_path / path.relative_to(OPERATIONS), path.read_text())
    roster = tmp_path / "teacher-app" / "class.graphql"
    write(roster, roster.read_text().replace("lastActiveAt", "lastSeenAt"))
    assert cli_main(["operations", "check", str(tmp_path)]) != 0
    captured = capsys.readouterr()
    assert "teacher-app/class.graphql: operation ClassRoster: Cannot query field 'lastSeenAt'" in captured.err
    assert "1 problem(s)" in captured.err and captured.out == ""


def test_operations_check_of_a_path_that_is_not_a_folder_says_so_and_names_no_operation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for missing in (tmp_path / "nowhere", OPERATIONS / "teacher-app" / "class.graphql"):
        assert cli_main(["operations", "check", str(missing)]) == 2
        captured = capsys.readouterr()
        assert f"{missing} is not a folder" in captured.err and captured.out == ""
        assert "named above" not in captured.err


# ------------------------------------------------------------------ over HTTP


async def post(client: httpx.AsyncClient, headers: dict[str, str], payload: dict[str, Any]) -> tuple[int, Any]:
    response = await client.post(
        "/graphql", content=orjson.dumps(payload), headers={**headers, "Content-Type": "application/json"}
    )
    return response.status_code, response.json()


def persisted(digest: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


@pytest.fixture(scope="module")
def dev_headers(settings: Settings, users: dict[str, uuid.UUID]) -> dict[str, str]:
    from server.auth import mint_token

    token = mint_token(settings, users[TEACHER], ["INSTRUCTION", "REPORTING"], 600)
    return {"Authorization": f"Bearer {token}", "X-Purpose": "INSTRUCTION", "Accept": GRAPHQL_RESPONSE}


async def test_development_answers_an_unknown_hash_then_caches_the_text_sent_with_it(
    client: httpx.AsyncClient, dev_headers: dict[str, str]
) -> None:
    text = f"query Mine {{ me {{ id role }} }} # {uuid.uuid4()}"
    status, body = await post(client, dev_headers, {"extensions": persisted(sha256(text))})
    assert status == 404 and error_codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert body["errors"][0]["message"] == "PersistedQueryNotFound"
    status, body = await post(client, dev_headers, {"query": text, "extensions": persisted(sha256(text))})
    assert status == 200 and body["data"]["me"]["role"] == "TEACHER"
    status, body = await post(client, dev_headers, {"extensions": persisted(sha256(text).upper())})
    assert status == 200 and body["data"]["me"]["role"] == "TEACHER"
    # urql's and Apollo's hashed GET.
    response = await client.get(
        "/graphql",
        params={"operationName": "Mine", "extensions": json.dumps(persisted(sha256(text)))},
        headers=dev_headers,
    )
    assert response.status_code == 200 and response.json()["data"]["me"]["role"] == "TEACHER"


async def test_a_legacy_client_gets_persisted_query_not_found_with_200(
    client: httpx.AsyncClient, dev_headers: dict[str, str]
) -> None:
    status, body = await post(
        client, {**dev_headers, "Accept": "application/json"}, {"extensions": persisted(sha256(str(uuid.uuid4())))}
    )
    assert status == 200 and error_codes(body) == ["PERSISTED_QUERY_NOT_FOUND"] and "data" not in body


async def test_a_text_whose_sha256_is_not_the_hash_is_bad_user_input_and_is_not_cached(
    client: httpx.AsyncClient, dev_headers: dict[str, str]
) -> None:
    text = "query Mine { me { id } }"
    other = sha256(str(uuid.uuid4()))
    status, body = await post(client, dev_headers, {"query": text, "extensions": persisted(other)})
    assert status == 400 and error_codes(body) == ["BAD_USER_INPUT"]
    status, body = await post(client, dev_headers, {"extensions": persisted(other)})
    assert status == 404 and error_codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_an_invalid_text_is_not_cached_under_its_hash(
    client: httpx.AsyncClient, dev_headers: dict[str, str]
) -> None:
    text = f"query Wrong {{ me {{ rol }} }} # {uuid.uuid4()}"
    status, body = await post(client, dev_headers, {"query": text, "extensions": persisted(sha256(text))})
    assert status == 400 and error_codes(body) == ["BAD_USER_INPUT"]
    status, body = await post(client, dev_headers, {"extensions": persisted(sha256(text))})
    assert status == 404 and error_codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]


@pytest.mark.parametrize(
    "extension",
    [
        {"persistedQuery": {"version": 2, "sha256Hash": "0" * 64}},
        {"persistedQuery": {"version": 1, "sha256Hash": "not a hash"}},
        {"persistedQuery": {"version": 1}},
        {"persistedQuery": "abc"},
    ],
    ids=["version 2", "not hexadecimal", "no hash", "not an object"],
)
async def test_a_malformed_persisted_query_extension_is_bad_user_input(
    client: httpx.AsyncClient, dev_headers: dict[str, str], extension: dict[str, Any]
) -> None:
    status, body = await post(client, dev_headers, {"extensions": extension})
    assert status == 400 and error_codes(body) == ["BAD_USER_INPUT"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    keys = make_keys(tmp_path_factory.mktemp("persisted"))
    write(keys.operations_dir / "names.graphql", NAMES)
    write(keys.operations_dir / "teacher" / "screen.graphql", SCREEN)
    return keys


@pytest_asyncio.fixture(scope="module")
async def prod_client(settings: Settings, keys: Keys, db: DatabaseUrls) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(production(settings, keys), db)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://pledgeql.test") as http:
            yield http


@pytest.fixture(scope="module")
def prod_headers(keys: Keys, users: dict[str, uuid.UUID]) -> dict[str, str]:
    claims = claims_for(users[TEACHER], purposes=["INSTRUCTION"], exp=int(time.time()) + 3600)
    return {
        "Authorization": f"Bearer {sign(keys.rsa_private, claims)}",
        "X-Purpose": "INSTRUCTION",
        "Accept": GRAPHQL_RESPONSE,
    }


async def test_production_serves_one_operation_of_a_multi_operation_file_as_apollo_sends_it(
    prod_client: httpx.AsyncClient, prod_headers: dict[str, str]
) -> None:
    text = as_a_client_sends([NAMES, SCREEN], "MyClasses")
    status, body = await post(prod_client, prod_headers, {"extensions": persisted(sha256(text))})
    assert status == 404 and error_codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]
    status, body = await post(prod_client, prod_headers, {"query": text, "extensions": persisted(sha256(text))})
    assert status == 200, body
    assert body["data"]["me"]["classes"] and body["data"]["me"]["classes"][0]["__typename"] == "Class"
    # Registered, so now served under the hash the client sent it with.
    status, body = await post(prod_client, prod_headers, {"extensions": persisted(sha256(text))})
    assert status == 200 and body["data"]["me"]["classes"]


async def test_production_refuses_a_text_sent_with_its_hash_that_is_not_registered(
    prod_client: httpx.AsyncClient, prod_headers: dict[str, str]
) -> None:
    text = "query Me { me { id role allowedPurposes } }"
    status, body = await post(prod_client, prod_headers, {"query": text, "extensions": persisted(sha256(text))})
    assert status == 400 and error_codes(body) == ["OPERATION_NOT_ALLOWED"]
    status, body = await post(prod_client, prod_headers, {"extensions": persisted(sha256(text))})
    assert status == 404 and error_codes(body) == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_production_serves_an_operation_added_to_the_folder_without_a_restart(
    prod_client: httpx.AsyncClient, prod_headers: dict[str, str], keys: Keys
) -> None:
    text = "query Purposes { me { allowedPurposes } }"
    status, body = await post(prod_client, prod_headers, {"query": text})
    assert status == 400 and error_codes(body) == ["OPERATION_NOT_ALLOWED"]
    write(keys.operations_dir / "teacher" / "purposes.graphql", text + "\n")
    status, body = await post(prod_client, prod_headers, {"extensions": persisted(sha256(text + "\n"))})
    assert status == 200 and "INSTRUCTION" in body["data"]["me"]["allowedPurposes"]
    status, body = await post(prod_client, prod_headers, {"query": text})
    assert status == 200, body
    # And stops serving it once it is removed.
    (keys.operations_dir / "teacher" / "purposes.graphql").unlink()
    os.utime(keys.operations_dir / "names.graphql")
    time.sleep(1.1)  # a hit looks at the folder at most once a second
    status, body = await post(prod_client, prod_headers, {"query": text})
    assert status == 400 and error_codes(body) == ["OPERATION_NOT_ALLOWED"]


def test_production_does_not_start_with_an_operation_over_the_limits_naming_it(
    settings: Settings, keys: Keys, db: DatabaseUrls, tmp_path: Path
) -> None:
    write(tmp_path / "big.graphql", "query Big { students(first: 500) { nodes { responses(first: 500) { id } } } }")
    with pytest.raises(SystemExit, match=r"big\.graphql: operation Big: The query costs .* the limit \(cost\)"):
        create_app(production(settings, keys, operations_dir=tmp_path), db)
