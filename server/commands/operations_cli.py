"""``pledgeql operations check DIR``: a folder of client operations checked as the server checks it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.settings import Settings


def command(settings: Settings, args: argparse.Namespace) -> int:
    from permissions.policy import load_policy_set
    from schema.build import build_schema, graphql_schema
    from server.limits import Limits
    from server.operations import Checker, OperationsError, describe, load_folder

    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"pledgeql: {folder} is not a folder; give the folder of operations the clients ship", file=sys.stderr)
        return 2
    schema = graphql_schema(build_schema(load_policy_set(settings.policy_dirs)))
    # Production's rules: the registry is what production serves.
    checker = Checker(schema, Limits.from_settings(settings), production=True)
    try:
        snapshot = load_folder(folder, checker)
    except OperationsError as error:
        for problem in error.problems:
            print(f"pledgeql: {problem}", file=sys.stderr)
        print(
            f"pledgeql: {len(error.problems)} problem(s) in {folder}: the server would refuse to start "
            "(or to reload) with this folder; fix each problem above",
            file=sys.stderr,
        )
        return 1
    for line in describe(snapshot.operations):
        print(line)
    print(f"{len(snapshot.operations)} operations valid against the schema and within the limits.")
    return 0
