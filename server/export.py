"""The `pledgeql export` command (not available yet)."""

from __future__ import annotations

import argparse
import sys

from server.settings import Settings


def command(settings: Settings, args: argparse.Namespace) -> int:
    print("pledgeql: this command is not available in this release", file=sys.stderr)
    return 2
