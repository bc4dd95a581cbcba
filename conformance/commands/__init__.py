"""The commands of ``lstm-conformance``, one module each; imported only when the command runs."""
