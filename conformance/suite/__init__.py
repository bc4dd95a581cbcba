"""The conformance suite's test modules, collected by ``pytest --pyargs conformance.suite``."""
