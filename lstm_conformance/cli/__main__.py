"""``python -m lstm_conformance.cli``: the same as the ``lstm-conformance`` command."""

import sys

from lstm_conformance.cli import main

sys.exit(main())
