"""The shared conformance suite: a pytest plugin checking implementations against the reference."""
