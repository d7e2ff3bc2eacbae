"""The errors a user can fix (bad params, missing data, a NaN loss), and how every command reports them."""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Base of the errors whose message says what to fix: printed without a traceback, exit status 2."""


def run_command(prog: str, command: Callable[[], object]) -> int:
    """Run ``command``; a ``UserError`` prints ``prog: error: ...`` and gives 2, Ctrl-C gives 130."""
    try:
        command()
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
