"""``lstm-conformance inspect MODEL [--json]``: the LSTMs a file holds and their canonical layout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from lstm_conformance import api
from lstm_conformance.adapters.formats import FoundLSTM
from lstm_conformance.cli.common import describe_config, warn


def inspect_command(args: argparse.Namespace) -> int:
    path = Path(args.model)
    format_name = api.format_of(path, args.from_format)
    api.check_forget_bias_applies(args.forget_bias, [format_name])
    contents = api.read_contents(path, format_name, api.format_options(format_name, args.forget_bias))
    for found in contents.lstms:
        for message in api.nonfinite_warnings(found.weights, path):
            warn(message)
    listing = {
        "path": str(path),
        "format": format_name,
        "lstms": [_describe(found) for found in contents.lstms],
        "other_tensors": list(contents.other_tensors),
    }
    if args.json:
        print(json.dumps(listing, indent=2, default=str))
    else:
        _print(listing, contents.lstms)
    return 0


def _describe(found: FoundLSTM) -> dict[str, Any]:
    config = found.weights.config
    return {
        "name": found.name,
        "implementation": found.implementation,
        "implementation_options": dict(found.implementation_options),
        "config": json.loads(config.to_json()),
        "features": config.features(),
        "batch_first": found.batch_first,
        "dtype": api.weights_dtype(found.weights),
        "parameters": {
            key: {"shape": list(array.shape), "dtype": str(np.asarray(array).dtype)}
            for key, array in found.weights.named_arrays().items()
        },
        "notes": list(found.notes),
        "assumptions": list(found.assumptions),
        "runs_itself": found.run_source is not None,
    }


def _print(listing: dict[str, Any], lstms: list[FoundLSTM]) -> None:
    count = len(lstms)
    print(f"{listing['path']} ({listing['format']}): {count} LSTM{'' if count == 1 else 's'}")
    for entry, found in zip(listing["lstms"], lstms, strict=True):
        options = ", ".join(f"{k}={v}" for k, v in entry["implementation_options"].items())
        runs = f"{entry['implementation']}{f' ({options})' if options else ''}"
        layout = {True: "batch-first", False: "time-major"}.get(entry["batch_first"])
        takes = f"the file's model takes {layout} input" if layout else "batch layout: not stored in the file"
        print(f"LSTM {entry['name']!r}: runs with {runs}; {takes}")
        print(f"  config: {describe_config(found.weights.config)}; weights {entry['dtype']}")
        print(f"  features: {', '.join(entry['features']) or 'none beyond a plain LSTM'}")
        print("  parameters (canonical layout, gate order i, f, g, o):")
        for layer, per_direction in enumerate(found.weights.layers):
            for direction, weights in enumerate(per_direction):
                shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in weights.items())
                print(f"    layer {layer} {('forward', 'reverse')[direction]}: {shapes}")
        for note in entry["notes"]:
            print(f"  note: {note}")
        for text in entry["assumptions"]:
            print(f"  assumption: {text}")
    others = listing["other_tensors"]
    if others:
        shown = ", ".join(others[:20]) + (f", ... ({len(others)} in all)" if len(others) > 20 else "")
        print(f"other tensors: {shown}")
