"""``lstm-conformance compare A B``: ``api.compare`` (run both on the same random input, and where they part,
``lstm_conformance.diagnosis``), printed or as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lstm_conformance import api
from lstm_conformance.cli.common import Progress, assumption, warn

EXIT_AGREE, EXIT_DIFFER = 0, 1


def compare_command(args: argparse.Namespace) -> int:
    formats = [api.format_of(Path(args.a), args.from_a), api.format_of(Path(args.b), args.from_b)]
    api.check_forget_bias_applies(args.forget_bias, formats)
    a, b = (
        api.read(path, format=name, select=select, forget_bias=api.forget_bias_for(args.forget_bias, name), _flag=flag)
        for path, name, select, flag in (
            (args.a, formats[0], args.select_a, "--select-a"),
            (args.b, formats[1], args.select_b, "--select-b"),
        )
    )
    for message in [*a.warnings, *b.warnings]:
        warn(message)
    progress = Progress()
    try:
        result = api.compare(a, b, seed=args.seed, steps=args.steps, batch=args.batch, progress=progress.step)
    finally:
        progress.done()
    for text in result.assumptions:
        assumption(text)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, allow_nan=False))
    else:
        _print(result)
    return EXIT_AGREE if result.agree else EXIT_DIFFER


def _print(result: api.Comparison) -> None:
    agreement = result.agreement
    for side, model in (("A", result.a), ("B", result.b)):
        name = f" LSTM {model.name!r}" if model.name else ""
        ran = None if agreement is None else agreement.first if side == "A" else agreement.second
        how = f"; runs with {ran.describe() if ran else model.implementation}"
        print(f"{side}: {model.path} ({model.format}{name}{how})")
        for note in model.notes:
            print(f"   note: {note}")
    if agreement is not None:
        print(f"inputs: {agreement.inputs_text()}")
        print(f"forward: {api.worst_text(agreement.forward, every=True)}")
        print(f"gradients: {agreement.forward_only or api.worst_text(agreement.gradients)}")
        print(f"tolerance: {agreement.tolerance.describe()}")
    for item in result.differences:
        step = "" if item.time_step is None else f", first at time step {item.time_step}"
        print(f"differs: layer {item.layer} {item.direction}: y {item.y_fraction:.3g} of tolerance{step}")
    if result.gates is not None:
        _print_gates(result.gates)
    if result.agree:
        caveat = "" if result.both_ran_themselves else " (as read: not both files ran themselves)"
        print(f"AGREE: {result.summary}{caveat}")
    else:
        print(f"DIFFER: {result.summary}")


def _print_gates(gates: api.GateExplanation) -> None:
    where = f"layer {gates.layer} {gates.direction}"
    for block in gates.differing_blocks:
        offset = f", B = A {block.constant_offset:+.4g}" if block.constant_offset is not None else ""
        gate = "" if block.gate == "-" else f" gate {block.gate}"
        print(f"  weights differ: {block.parameter}{gate} of {where} ({block.fraction:.3g} of tolerance{offset})")
    for swap in gates.swapped:
        print(f"  A's gate {swap.a_gate} block is B's gate {swap.b_gate} block")
    substitution = gates.substitution
    if substitution is not None:
        verdict = "reproduces B" if substitution.explains else "does not fully reproduce B"
        print(
            f"  A run with B's blocks of gates {', '.join(substitution.gates)}: "
            f"{substitution.fraction_after:.3g} of tolerance, {verdict}"
        )
        for gate, fraction in substitution.fraction_with_one_gate_replaced.items():
            print(f"    with B's gate {gate} alone: {fraction:.3g} of tolerance")
    hypotheses = gates.hypotheses
    if hypotheses is not None:
        if not hypotheses.tested:
            print(f"  hypotheses not tested: {hypotheses.reason}")
        elif hypotheses.matches:
            for match in hypotheses.matches:
                print(f"  B computes what the reference computes with A's weights and {match.hypothesis}")
        else:
            print(f"  none of {hypotheses.candidates} common mistakes (gate order, forget bias) explains B")
