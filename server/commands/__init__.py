"""The command line (`pledgeql …`, `server/commands/cli.py`) and what its
commands do: migrate, seed, export, retention, roster import (OneRoster),
audit verify, operations check, and the OPERATOR audit entries they write."""
