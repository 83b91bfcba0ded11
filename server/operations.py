"""The persisted operations the clients ship (API.md, "Persisted operations").

``PLEDGEQL_OPERATIONS_DIR`` holds ``.graphql`` files with any number of
operations and fragments (a fragment may be defined in any file of the
folder), Apollo's persisted query manifests, and JSON objects mapping a hash
to a document (GraphQL Code Generator's and Relay's persisted documents).

Each *operation* is registered with the fragments it uses:

- by its canonical form: printed (so whitespace and comments do not matter),
  its fragments sorted by name, and every unaliased ``__typename`` removed
  (clients such as Apollo Client add them everywhere);
- by the sha256 of its text as each kind of file gives it: a manifest's id
  and body, a JSON map's key and document, a ``.graphql`` file's whole text
  (when it stands alone) and the operation printed with its fragments, each
  with and without a trailing newline.

Every operation must validate against the schema and fit the abuse limits.
The folder is read again when it changes: a reload that finds a problem is
refused (the registry in use stays) and logged with the file and operation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
    print_ast,
    specified_rules,
    validate,
    visit,
)
from graphql.error import GraphQLSyntaxError
from graphql.language import REMOVE, Visitor

from server.limits import Limits, introspection_off_rule, limits_rule, measure_operation, parse_limited

log = logging.getLogger("pledgeql.operations")

TYPENAME = "__typename"
APOLLO_MANIFEST = "apollo-persisted-query-manifest"
# How often a request looks at the folder for changes (a miss looks at once).
CHECK_INTERVAL = 1.0
# Hashes learned from registered texts sent with their hash (production).
LEARNED_SIZE = 10_000


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class OperationsError(Exception):
    """The folder holds operations the server cannot serve; each problem names its file and operation."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ------------------------------------------------------------- canonical form


class _StripTypename(Visitor):
    def enter_field(self, node: FieldNode, *_args: Any) -> Any:
        if node.name.value == TYPENAME and node.alias is None and not node.directives:
            return REMOVE
        return None


def _fragment_names(node: OperationDefinitionNode | FragmentDefinitionNode) -> Iterator[str]:
    stack: list[SelectionSetNode] = [node.selection_set]
    while stack:
        selection_set = stack.pop()
        for selection in selection_set.selections:
            if isinstance(selection, FragmentSpreadNode):
                yield selection.name.value
            inner = getattr(selection, "selection_set", None)
            if inner is not None:
                stack.append(inner)


def used_fragments(
    operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
) -> list[FragmentDefinitionNode]:
    """The fragments ``operation`` spreads, directly or through other fragments, in first-use order."""
    found: dict[str, FragmentDefinitionNode] = {}
    pending = list(_fragment_names(operation))
    while pending:
        name = pending.pop(0)
        if name in found or name not in fragments:
            continue
        found[name] = fragments[name]
        pending.extend(_fragment_names(fragments[name]))
    return list(found.values())


def _fragments_of(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def operations_of(document: DocumentNode) -> list[OperationDefinitionNode]:
    return [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]


def standalone(operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]) -> DocumentNode:
    """The operation and the fragments it uses, as a document of their own."""
    return DocumentNode(definitions=(operation, *used_fragments(operation, fragments)))


def canonical_form(operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]) -> str:
    """The operation's identity: printed with its fragments sorted by name and no ``__typename`` added."""
    ordered = sorted(used_fragments(operation, fragments), key=lambda f: f.name.value)
    stripped = visit(DocumentNode(definitions=(operation, *ordered)), _StripTypename())
    return sha256_hex(print_ast(stripped))


def canonical_forms(document: DocumentNode) -> list[str]:
    """The canonical form of each operation of ``document``."""
    fragments = _fragments_of(document)
    return [canonical_form(o, fragments) for o in operations_of(document)]


def text_variants(text: str) -> set[str]:
    """The text, and the text with its trailing newline added or removed: editors disagree."""
    bare = text.rstrip("\r\n")
    return {text, bare, bare + "\n"}


# ------------------------------------------------------------------ the files


@dataclass(frozen=True)
class RegisteredOperation:
    name: str
    source: str
    text: str
    canonical: str
    hashes: tuple[str, ...]
    cost: int
    depth: int
    aliases: int

    @property
    def hash(self) -> str:
        return self.hashes[0]


@dataclass
class _Candidate:
    """An operation found in a file, before validation."""

    source: str
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]
    # The texts whose sha256 names it; the first is the one served under them.
    texts: list[str]
    # Hashes a file gives for it (a manifest id, a JSON key), with the text they name.
    given: dict[str, str] = field(default_factory=dict)
    # A manifest's id or a JSON map's key is what clients send: it comes first.
    given_first: bool = False

    @property
    def name(self) -> str:
        return self.operation.name.value if self.operation.name else "(anonymous)"


def _label(source: str, name: str | None = None) -> str:
    return f"{source}: operation {name}" if name else source


def _graphql_files(
    folder: Path, paths: list[Path], problems: list[str]
) -> tuple[list[tuple[str, str, DocumentNode]], dict[str, FragmentDefinitionNode]]:
    parsed: list[tuple[str, str, DocumentNode]] = []
    fragments: dict[str, FragmentDefinitionNode] = {}
    fragment_sources: dict[str, str] = {}
    for path in paths:
        source = str(path.relative_to(folder))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{source}: cannot be read as UTF-8 text: {type(error).__name__}")
            continue
        try:
            document = parse(text)
        except GraphQLSyntaxError as error:
            problems.append(f"{source}: does not parse: {error.message} (line {_line(error)})")
            continue
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                name = definition.name.value
                known = fragments.get(name)
                if known is not None and print_ast(known) != print_ast(definition):
                    problems.append(
                        f"{source}: fragment {name} is also defined, differently, in {fragment_sources[name]}"
                    )
                    continue
                fragments[name] = definition
                fragment_sources.setdefault(name, source)
            elif not isinstance(definition, OperationDefinitionNode):
                problems.append(f"{source}: holds a {definition.kind}; only operations and fragments belong here")
        parsed.append((source, text, document))
    return parsed, fragments


def _line(error: GraphQLSyntaxError) -> str:
    return str(error.locations[0].line) if error.locations else "?"


def _from_graphql(folder: Path, paths: list[Path], problems: list[str]) -> list[_Candidate]:
    parsed, fragments = _graphql_files(folder, paths, problems)
    candidates = []
    for source, text, document in parsed:
        operations = operations_of(document)
        own = _fragments_of(document)
        # The whole file names its operations too when it stands alone (every
        # fragment it uses defined in it, none unused): the way a file with one
        # operation was registered before.
        used = {f.name.value for o in operations for f in used_fragments(o, fragments)}
        whole = used == own.keys()
        for operation in operations:
            printed = print_ast(standalone(operation, fragments))
            texts = [printed]
            ordered = sorted(used_fragments(operation, fragments), key=lambda f: f.name.value)
            texts.append(print_ast(DocumentNode(definitions=(operation, *ordered))))
            given = {}
            if whole and len(operations) == 1:
                texts.append(text)
            elif whole:
                for variant in text_variants(text):
                    given[sha256_hex(variant)] = text
            candidates.append(_Candidate(source, operation, fragments, texts, given))
    return candidates


def _documents_of_json(source: str, data: Any, problems: list[str]) -> list[tuple[str | None, str]]:
    """(hash the file gives or None, document text) pairs of a manifest or a hash -> document map."""
    if isinstance(data, dict) and data.get("format") == APOLLO_MANIFEST:
        if data.get("version") != 1:
            problems.append(f"{source}: Apollo manifest version {data.get('version')!r}; version 1 is supported")
            return []
        found: list[tuple[str | None, str]] = []
        for index, entry in enumerate(data.get("operations") or []):
            if not isinstance(entry, dict) or not isinstance(entry.get("body"), str):
                problems.append(f"{source}: operations[{index}] has no 'body' text")
                continue
            ident = entry.get("id")
            found.append((ident if isinstance(ident, str) and ident else None, entry["body"]))
        return found
    if isinstance(data, dict) and data and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return list(data.items())
    problems.append(
        f"{source}: is neither an Apollo persisted query manifest nor a JSON object mapping hashes to documents"
    )
    return []


def _from_json(folder: Path, paths: list[Path], problems: list[str]) -> list[_Candidate]:
    candidates = []
    for path in paths:
        source = str(path.relative_to(folder))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            problems.append(f"{source}: is not valid JSON text: {type(error).__name__}")
            continue
        for given_hash, text in _documents_of_json(source, data, problems):
            try:
                document = parse(text)
            except GraphQLSyntaxError as error:
                label = f"{source}: document {given_hash}" if given_hash else source
                problems.append(f"{label}: does not parse: {error.message} (line {_line(error)})")
                continue
            fragments = _fragments_of(document)
            operations = operations_of(document)
            for operation in operations:
                given = {given_hash: text} if given_hash else {}
                if len(operations) > 1:
                    # The document names all its operations: its hash serves the whole text.
                    given.update({sha256_hex(v): text for v in text_variants(text)})
                    texts = [print_ast(standalone(operation, fragments))]
                else:
                    texts = [text]
                candidates.append(_Candidate(source, operation, fragments, texts, given, given_first=True))
    return candidates


def operation_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in (".graphql", ".gql", ".json") and not p.name.startswith(".")
    )


# ----------------------------------------------------------------- validation


class Checker:
    """Validates one operation as the server would: the abuse limits, then the schema's rules."""

    def __init__(self, schema: GraphQLSchema, limits: Limits, production: bool) -> None:
        self.schema = schema
        self.limits = limits
        self.production = production
        self.limit_rules: tuple[type[ASTValidationRule], ...] = (limits_rule(limits),)
        extra = (introspection_off_rule(),) if production else ()
        self.rules: tuple[type[ASTValidationRule], ...] = (*specified_rules, *extra)

    def problems(self, text: str) -> tuple[list[str], DocumentNode | None]:
        try:
            document = parse_limited(text, self.limits)
        except GraphQLError as error:
            return [error.message], None
        errors = validate(self.schema, document, self.limit_rules, hide_suggestions=self.production)
        if not errors:
            errors = validate(self.schema, document, self.rules, hide_suggestions=self.production)
        return [e.message for e in errors], document


@dataclass(frozen=True)
class Snapshot:
    """One reading of the folder: every operation, by hash and by canonical form."""

    operations: tuple[RegisteredOperation, ...] = ()
    by_hash: dict[str, str] = field(default_factory=dict)
    canonical: frozenset[str] = frozenset()


def load_folder(folder: Path, checker: Checker) -> Snapshot:
    """Read and check every file of ``folder``; raise OperationsError listing every problem."""
    if not folder.is_dir():
        raise OperationsError([f"{folder} is not a folder of client operations"])
    problems: list[str] = []
    paths = operation_files(folder)
    graphql_paths = [p for p in paths if p.suffix != ".json"]
    candidates = _from_graphql(folder, graphql_paths, problems)
    candidates += _from_json(folder, [p for p in paths if p.suffix == ".json"], problems)
    operations: list[RegisteredOperation] = []
    by_hash: dict[str, str] = {}
    for candidate in candidates:
        registered = _register(candidate, checker, problems)
        if registered is None:
            continue
        operations.append(registered)
        for text in candidate.texts:
            for variant in text_variants(text):
                by_hash.setdefault(sha256_hex(variant), text)
        for digest, text in candidate.given.items():
            by_hash.setdefault(digest.lower(), text)
    if problems:
        raise OperationsError(problems)
    return Snapshot(tuple(operations), by_hash, frozenset(o.canonical for o in operations))


def _register(candidate: _Candidate, checker: Checker, problems: list[str]) -> RegisteredOperation | None:
    label = _label(candidate.source, candidate.name)
    text = candidate.texts[0]
    errors, document = checker.problems(text)
    if errors or document is None:
        problems.extend(f"{label}: {message}" for message in errors)
        return None
    operation = operations_of(document)[0] if len(operations_of(document)) == 1 else candidate.operation
    measure = measure_operation(checker.schema, document, operation, checker.limits)
    own = [sha256_hex(t) for t in candidate.texts]
    hashes = [*candidate.given, *own] if candidate.given_first else [*own, *candidate.given]
    return RegisteredOperation(
        name=candidate.name,
        source=candidate.source,
        text=text,
        canonical=canonical_form(candidate.operation, candidate.fragments),
        hashes=tuple(dict.fromkeys(h.lower() for h in hashes)),
        cost=measure.cost,
        depth=measure.depth,
        aliases=measure.aliases,
    )


def _fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What the folder holds, as cheaply as it can be told: each file's path, modification time and size."""
    try:
        paths = operation_files(folder)
    except OSError:
        return ()
    entries = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:  # removed while we looked
            continue
        entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


# ------------------------------------------------------------------ registry


class OperationRegistry:
    """The operations in use, read again when the folder changes.

    A request looks at the folder at most once a second, and at once when it
    names a hash or sends a text the registry does not know (so that a client
    built against a folder just updated finds its operations). A reload that
    finds any problem is refused: the operations in use stay.
    """

    def __init__(self, folder: Path, checker: Checker) -> None:
        self.folder = folder
        self.checker = checker
        self.snapshot = load_folder(folder, checker)
        self.generation = 0
        self._fingerprint = _fingerprint(folder)
        self._refused: tuple[tuple[str, int, int], ...] | None = None
        self._checked = time.monotonic()
        self._learned: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        log.info("Persisted operations: %d from %s", len(self.snapshot.operations), folder)

    def __len__(self) -> int:
        return len(self.snapshot.operations)

    @property
    def operations(self) -> tuple[RegisteredOperation, ...]:
        return self.snapshot.operations

    def refresh(self, *, force: bool = False) -> bool:
        """Reload when the folder has changed; whether the registry changed."""
        now = time.monotonic()
        if not force and now - self._checked < CHECK_INTERVAL:
            return False
        with self._lock:
            self._checked = now
            current = _fingerprint(self.folder)
            if current == self._fingerprint or current == self._refused:
                return False
            try:
                snapshot = load_folder(self.folder, self.checker)
            except OperationsError as error:
                self._refused = current
                for problem in error.problems:
                    log.error("Persisted operations not reloaded, the ones in use stay: %s", problem)
                return False
            except Exception as error:  # a request must never fail because the folder could not be read
                self._refused = current
                log.error("Persisted operations not reloaded, the ones in use stay: %s", type(error).__name__)
                return False
            self.snapshot = snapshot
            self._fingerprint = current
            self._refused = None
            self._learned.clear()
            self.generation += 1
            log.info("Persisted operations reloaded: %d from %s", len(snapshot.operations), self.folder)
            return True

    def text_for_hash(self, digest: str) -> str | None:
        key = digest.lower()
        text = self.snapshot.by_hash.get(key) or self._learned.get(key)
        if text is None and self.refresh(force=True):
            text = self.snapshot.by_hash.get(key)
        return text

    def learn(self, digest: str, text: str) -> None:
        """Serve a registered text under the hash a client sent it with (its own printing of it)."""
        key = digest.lower()
        if key in self.snapshot.by_hash:
            return
        self._learned[key] = text
        self._learned.move_to_end(key)
        while len(self._learned) > LEARNED_SIZE:
            self._learned.popitem(last=False)

    def _registered(self, text: str, document: DocumentNode) -> bool:
        snapshot = self.snapshot
        if snapshot.by_hash.get(sha256_hex(text)) == text:
            return True
        forms = canonical_forms(document)
        return bool(forms) and all(form in snapshot.canonical for form in forms)

    def allows(self, text: str, document: DocumentNode) -> bool:
        """Whether every operation of the document is registered (looking at the folder again if not)."""
        if self._registered(text, document):
            return True
        return self.refresh(force=True) and self._registered(text, document)


def registry_problems(folder: Path, checker: Checker) -> tuple[Snapshot | None, list[str]]:
    try:
        return load_folder(folder, checker), []
    except OperationsError as error:
        return None, error.problems


def describe(operations: Iterable[RegisteredOperation]) -> list[str]:
    """One line per operation: its file, name, hash and cost."""
    return [f"{o.source}\t{o.name}\t{o.hash}\tcost {o.cost}" for o in operations]
