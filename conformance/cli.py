"""The ``lstm-conformance`` command line. Stub until issue 5 fills it in."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("lstm-conformance: not built yet", file=sys.stderr)
    return 2
