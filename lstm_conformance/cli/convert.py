"""``lstm-conformance convert SRC DST``: ``api.convert`` (read, write atomically, prove), and its report."""

from __future__ import annotations

import argparse

from lstm_conformance import api
from lstm_conformance.cli.common import Progress, assumption, describe_config, shortened, warn

EXIT_OK, EXIT_NOT_VERIFIED = 0, 1


def convert_command(args: argparse.Namespace) -> int:
    progress = Progress()
    try:
        result = api.convert(
            args.src,
            args.dst,
            from_format=args.from_format,
            to_format=args.to_format,
            select=args.select,
            forget_bias=args.forget_bias,
            dtype=args.dtype,
            quantize=args.quantize,
            force=args.force,
            verify=not args.no_verify,
            seed=args.seed,
            progress=progress.step,
        )
    finally:
        progress.done()  # before any message: the status line must not outlive the command
    _report(result)
    if result.checked and not result.written:
        why = "the function changed" if result.lost else "error beyond tolerance"
        print(f"NOT VERIFIED: {result.destination} not written ({why})")
        return EXIT_NOT_VERIFIED
    return EXIT_OK


def _report(result: api.ConversionResult) -> None:
    source = result.source
    for message in source.warnings:
        warn(message)
    for text in result.assumptions:
        assumption(text)
    name = f" LSTM {source.name!r}" if source.name else ""
    print(f"converted {source.path} ({source.format}{name}) -> {result.destination} ({result.destination_format})")
    print(f"  LSTM: {describe_config(source.config)}; weights {source.dtype}")
    features = source.config.features()
    print(f"  features: {', '.join(features) if features else 'none beyond a plain LSTM'}")
    for note in result.notes:
        print(f"  note: {note}")
    if result.not_carried:
        print(f"  not carried: {shortened(result.not_carried)}")
    agreement = result.agreement
    if agreement is None:
        print("  not verified (--no-verify)")
        return
    lost = f"; the written file does not hold {', '.join(result.lost)}" if result.lost else ""
    if result.verified:
        print(f"  verified: {agreement.describe()}")
    elif result.under_assumptions:
        print(f"  weights converted under assumptions ({_why_assumed(result)}): {agreement.describe('agree')}")
    else:
        print(f"  FAILED: {agreement.describe()}{lost}")


def _why_assumed(result: api.ConversionResult) -> str:
    """Why the proof is conditional: the source did not run as its own framework loads it."""
    count = len(result.assumptions)
    listed = f"{count} said on stderr; " if count else ""
    return f"{listed}the source ran as read, with {result.source.implementation}, not as its own file"
