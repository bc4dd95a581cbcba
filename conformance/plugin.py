"""pytest plugin (``pytest11`` entry point ``lstm_conformance``). Stub until issue 4 fills it in."""
