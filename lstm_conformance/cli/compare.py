"""``lstm-conformance compare A B``: run two model files on the same random input and say where they part.

The diagnosis goes from the outside in:

1. configs: a difference in sizes ends it (the two cannot take the same input); others are listed as causes;
2. outputs: each file's own implementation on the same input and initial states, against a dtype-aware
   tolerance; agreeing here is exit 0;
3. layer, direction, time step: both models truncated to their first k layers, k = 1, 2, ...: the first k
   whose output differs names the layer; within it, each direction's first differing step, in the order that
   direction processes the sequence;
4. gates: the canonical gate blocks of W, R, the bias (Wb + Rb: only the sum is the function) and the
   peepholes of that layer and direction, compared one by one; blocks that match another gate's are called
   swapped; then the function is run again with A's weights carrying B's blocks of the differing gates, to
   show those gates explain the difference (and each gate's share alone);
5. when the weights agree and the implementations still differ, the reference runs A's weights changed by each
   common mistake (every permutation of the gates, a forget bias shifted by +-1) to find what B computes.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import Implementation, RunInputs, RunResult
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.cli.common import (
    LoadedModel,
    Progress,
    check_forget_bias_applies,
    common_dtype,
    format_of,
    implementation_for,
    load_model,
    output_errors,
    random_inputs,
    run_forward,
    scaled_error,
    takes_initial_state,
    tolerance_for,
    weights_dtype,
)
from lstm_conformance.reference.errors import LSTMConformanceError
from lstm_conformance.reference.layout import (
    DIRECTIONS,
    GATES,
    PEEPHOLES,
    LayerWeights,
    LSTMConfig,
    LSTMWeights,
    reorder_gates,
)

EXIT_AGREE, EXIT_DIFFER = 0, 1
#: Config fields that fix array shapes: two models differing here cannot run on the same input.
SHAPE_FIELDS = ("input_size", "hidden_size", "num_layers", "bidirectional", "proj_size", "peepholes")
#: Relative difference above which two weight blocks count as different, by the least precise stored dtype.
WEIGHT_TOLERANCES = {"float64": 1e-12, "float32": 1e-6, "float16": 1e-3, "bfloat16": 1e-2}

Runner = Callable[[LSTMWeights], RunResult]


def compare_command(args: argparse.Namespace) -> int:
    formats = [format_of(Path(args.a), args.from_a), format_of(Path(args.b), args.from_b)]
    check_forget_bias_applies(args.forget_bias, formats)
    a = load_model(args.a, formats[0], args.select_a, args.forget_bias, flag="--select-a")
    b = load_model(args.b, formats[1], args.select_b, args.forget_bias, flag="--select-b")
    progress = Progress()
    try:
        result = Comparison(a, b, args.seed, args.steps, args.batch, progress).run()
    finally:
        progress.done()
    if args.json:
        print(json.dumps(_finite(result), indent=2))
    else:
        _print(result)
    return EXIT_AGREE if result["agree"] else EXIT_DIFFER


def _finite(value: Any) -> Any:
    """The result with non-finite floats as strings ("inf", "nan"), so that the output is strict JSON."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


class Comparison:
    """One comparison of A and B; ``run`` returns the JSON-ready result."""

    def __init__(self, a: LoadedModel, b: LoadedModel, seed: int, steps: int, batch: int, progress: Progress):
        self.a, self.b = a, b
        self.seed, self.steps, self.batch = seed, steps, batch
        self.progress = progress
        self.result: dict[str, Any] = {
            "agree": False,
            "a": _side(a),
            "b": _side(b),
            "inputs": {"seed": seed, "steps": steps, "batch": batch},
            "config_differences": _config_differences(a.found.weights.config, b.found.weights.config),
            "summary": "",
        }

    def run(self) -> dict[str, Any]:
        differences = self.result["config_differences"]
        if any(item["field"] in SHAPE_FIELDS for item in differences):
            self.result["summary"] = "the configs differ in shape: " + _config_text(differences)
            return self.result
        self._prepare_runs()
        self.progress.step("running A and B")
        full_a, full_b = self.run_a(self.weights_a), self.run_b(self.weights_b)
        errors = output_errors(full_a, full_b)
        self.result["outputs"] = {"errors": errors, "error": max(errors.values()), "tolerance": self.tolerance}
        self.result["weight_differences"] = self._weight_differences()
        if max(errors.values()) <= self.tolerance:
            self.result["agree"] = True
            self.result["summary"] = (
                f"they agree: error {max(errors.values()):.2e} within tolerance {self.tolerance:.0e} "
                f"({self.tolerance_dtype})"
            )
            return self.result
        self._locate(full_a, full_b)
        return self.result

    # --- running -------------------------------------------------------------------------------------------

    def _prepare_runs(self) -> None:
        purpose = "compare"
        self.impl_a = implementation_for(self.a.found, purpose)
        self.impl_b = implementation_for(self.b.found, purpose)
        self.dtypes = common_dtype(self.impl_a, self.impl_b)
        stored = [weights_dtype(self.a.found.weights), weights_dtype(self.b.found.weights)]
        self.tolerance, self.tolerance_dtype = tolerance_for([*self.dtypes, *stored])
        self.weight_tolerance = WEIGHT_TOLERANCES[tolerance_for(stored)[1]]
        config = self.a.found.weights.config
        self.inputs = random_inputs(
            config, self.steps, self.batch, self.seed, takes_initial_state(self.impl_a, self.impl_b)
        )
        self.weights_a, self.weights_b = self.a.found.weights, self.b.found.weights
        self.result["a"]["dtype"], self.result["b"]["dtype"] = self.dtypes
        self.result["tolerance"] = {"value": self.tolerance, "dtype": self.tolerance_dtype}
        self.result["inputs"]["initial_states"] = self.inputs.h0 is not None

    def run_a(self, weights: LSTMWeights) -> RunResult:
        return self._run(self.impl_a, weights, self.dtypes[0])

    def run_b(self, weights: LSTMWeights) -> RunResult:
        return self._run(self.impl_b, weights, self.dtypes[1])

    def _run(self, implementation: Implementation, weights: LSTMWeights, dtype: str) -> RunResult:
        return run_forward(implementation, weights, _truncate_inputs(self.inputs, weights.config), dtype)

    def _weight_differences(self) -> list[dict[str, Any]]:
        """Every canonical gate block that differs, in every layer and direction."""
        hidden = self.weights_a.config.hidden_size
        found = []
        for layer, (per_a, per_b) in enumerate(zip(self.weights_a.layers, self.weights_b.layers, strict=True)):
            for direction, (a, b) in enumerate(zip(per_a, per_b, strict=True)):
                for block in _differing_blocks(a, b, hidden, self.weight_tolerance):
                    found.append({"layer": layer, "direction": DIRECTIONS[direction], **block})
        return found

    # --- locating ------------------------------------------------------------------------------------------

    def _locate(self, full_a: RunResult, full_b: RunResult) -> None:
        config = self.weights_a.config
        for layers in range(1, config.num_layers + 1):
            if layers == config.num_layers:
                run_a, run_b = full_a, full_b
            else:
                self.progress.step(f"running the first {layers} layer(s) of A and B")
                run_a = self.run_a(truncate(self.weights_a, layers))
                run_b = self.run_b(truncate(self.weights_b, layers))
            found = self._first_difference(layers - 1, run_a, run_b)
            if found:
                break
        else:
            found = []
        self.result["differences"] = found
        if not found:
            self.result["summary"] = "the outputs differ, but no single layer and direction could be named"
            return
        first = found[0]
        gates = self._explain_gates(first["layer"], first["direction"], run_b)
        self.result["gates"] = gates
        self.result["summary"] = _summary(first, gates, self.result["config_differences"])

    def _first_difference(self, layer: int, run_a: RunResult, run_b: RunResult) -> list[dict[str, Any]]:
        """Per direction of ``layer`` (the last of the truncated run): where its output first differs."""
        config = self.weights_a.config
        size = config.output_size
        found = []
        for direction in range(config.num_directions):
            columns = slice(direction * size, (direction + 1) * size)
            y_a, y_b = run_a.y[:, :, columns], run_b.y[:, :, columns]
            state = layer * config.num_directions + direction
            per_step = [scaled_error(y_a[t], y_b[t]) for t in range(y_a.shape[0])]
            h_error = scaled_error(run_a.h_n[state], run_b.h_n[state])
            c_error = scaled_error(run_a.c_n[state], run_b.c_n[state])
            bad = [t for t, error in enumerate(per_step) if error > self.tolerance]
            if not bad and max(h_error, c_error) <= self.tolerance:
                continue
            # The reverse direction walks the sequence from its end: its first step is the last index.
            step = (min(bad) if direction == 0 else max(bad)) if bad else None
            found.append(
                {
                    "layer": layer,
                    "direction": DIRECTIONS[direction],
                    "time_step": step,
                    "error_at_step": per_step[step] if step is not None else None,
                    "y_error": max(per_step),
                    "h_n_error": h_error,
                    "c_n_error": c_error,
                }
            )
        return found

    # --- gates ---------------------------------------------------------------------------------------------

    def _explain_gates(self, layer: int, direction_name: str, expected: RunResult) -> dict[str, Any]:
        direction = DIRECTIONS.index(direction_name)
        a = self.weights_a.layers[layer][direction]
        b = self.weights_b.layers[layer][direction]
        blocks = _differing_blocks(a, b, self.weights_a.config.hidden_size, self.weight_tolerance)
        gates = sorted({item["gate"] for item in blocks if item["gate"] in GATES}, key=GATES.index)
        explanation: dict[str, Any] = {
            "layer": layer,
            "direction": direction_name,
            "differing_blocks": blocks,
            "differing_gates": gates,
            "other_parameters": sorted({item["parameter"] for item in blocks if item["gate"] not in GATES}),
            "swapped": _swaps(a, b, gates, self.weights_a.config.hidden_size, self.weight_tolerance),
        }
        if gates:
            self.progress.step(f"running A with B's blocks of gates {', '.join(gates)}")
            explanation["substitution"] = self._substitute(layer, direction, gates, expected)
        elif not explanation["other_parameters"]:
            self.progress.step("testing hypotheses with the reference")
            explanation["hypotheses"] = self._hypotheses(layer, direction, expected)
        return explanation

    def _substitute(self, layer: int, direction: int, gates: list[str], expected: RunResult) -> dict[str, Any]:
        """Run A's implementation on A's weights with B's blocks of ``gates``: does it reproduce B?"""
        base = truncate(self.weights_a, layer + 1)
        donor = truncate(self.weights_b, layer + 1)
        together = max(output_errors(self.run_a(with_gates(base, donor, layer, direction, gates)), expected).values())
        alone = {}
        if len(gates) > 1:
            for gate in gates:
                hybrid = with_gates(base, donor, layer, direction, [gate])
                alone[gate] = max(output_errors(self.run_a(hybrid), expected).values())
        return {
            "gates": gates,
            "error_after": together,
            "explains": together <= self.tolerance,
            "error_with_one_gate_replaced": alone,
        }

    def _hypotheses(self, layer: int, direction: int, expected: RunResult) -> dict[str, Any]:
        """The weights agree: find a change of A's weights under which the reference computes what B does
        (``expected`` is B's run of the first ``layer + 1`` layers)."""
        try:
            reference = get_implementation("reference")
            unavailable = reference.unavailable_reason()
        except (LSTMConformanceError, ImportError) as error:
            unavailable = str(error)
        if unavailable:
            return {"tested": False, "reason": f"the reference implementation is unavailable: {unavailable}"}
        base = truncate(self.weights_a, layer + 1)
        hidden = base.config.hidden_size
        candidates: list[tuple[str, LSTMWeights]] = []
        for order in itertools.permutations(GATES):
            if order != GATES:
                label = f"gates in order {', '.join(order)} instead of {', '.join(GATES)}"
                candidates.append((label, _permuted(base, layer, direction, order)))
        for shift in (1.0, -1.0):
            candidates.append(
                (f"forget bias shifted by {shift:+g}", _bias_shifted(base, layer, direction, shift, hidden))
            )
        matches = []
        for label, weights in candidates:
            run = run_forward(reference, weights, _truncate_inputs(self.inputs, weights.config), "float64")
            mismatch = max(output_errors(run, expected).values())
            if mismatch <= self.tolerance:
                matches.append({"hypothesis": label, "error": mismatch})
        return {"tested": True, "candidates": len(candidates), "matches": matches}


# ----------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------


def truncate(weights: LSTMWeights, layers: int) -> LSTMWeights:
    """The model made of the first ``layers`` layers (its output is layer ``layers - 1``'s)."""
    if layers == weights.config.num_layers:
        return weights
    config = dataclasses.replace(weights.config, num_layers=layers)
    return LSTMWeights(config, [list(per_direction) for per_direction in weights.layers[:layers]])


def _truncate_inputs(inputs: RunInputs, config: LSTMConfig) -> RunInputs:
    states = config.num_layers * config.num_directions
    h0 = None if inputs.h0 is None else inputs.h0[:states]
    c0 = None if inputs.c0 is None else inputs.c0[:states]
    return dataclasses.replace(inputs, h0=h0, c0=c0)


def _gate_rows(gate: str, hidden: int) -> slice:
    index = GATES.index(gate)
    return slice(index * hidden, (index + 1) * hidden)


def _copy_layer(weights: LSTMWeights) -> LSTMWeights:
    return weights.map(np.array)


def with_gates(base: LSTMWeights, donor: LSTMWeights, layer: int, direction: int, gates: list[str]) -> LSTMWeights:
    """``base`` with ``donor``'s blocks of ``gates`` (W, R, Wb, Rb rows; peephole rows) in one layer/direction."""
    hybrid = _copy_layer(base)
    target, source = hybrid.layers[layer][direction], donor.layers[layer][direction]
    hidden = base.config.hidden_size
    for gate in gates:
        rows = _gate_rows(gate, hidden)
        for name in ("W", "R", "Wb", "Rb"):
            getattr(target, name)[rows] = getattr(source, name)[rows].astype(getattr(target, name).dtype)
        if target.P is not None and source.P is not None and gate in PEEPHOLES:
            target.P[PEEPHOLES.index(gate)] = source.P[PEEPHOLES.index(gate)]
    return hybrid


def _permuted(base: LSTMWeights, layer: int, direction: int, order: tuple[str, ...]) -> LSTMWeights:
    """``base`` whose gate block k holds the block of gate ``order[k]`` (as if B read the gates in ``order``)."""
    hybrid = _copy_layer(base)
    target, source = hybrid.layers[layer][direction], base.layers[layer][direction]
    for name in ("W", "R", "Wb", "Rb"):
        setattr(target, name, reorder_gates(getattr(source, name), GATES, order))
    return hybrid


def _bias_shifted(base: LSTMWeights, layer: int, direction: int, shift: float, hidden: int) -> LSTMWeights:
    hybrid = _copy_layer(base)
    hybrid.layers[layer][direction].Rb[_gate_rows("f", hidden)] += shift
    return hybrid


def _relative(a: NDArray[Any], b: NDArray[Any]) -> float:
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a64.shape != b64.shape:
        return float("inf")
    scale = max(float(np.abs(a64).max(initial=0.0)), float(np.abs(b64).max(initial=0.0)), 1e-30)
    difference = np.abs(a64 - b64)
    if not np.isfinite(difference).all():
        return 0.0 if np.array_equal(a64, b64, equal_nan=True) else float("inf")
    return float(difference.max(initial=0.0) / scale)


def _gate_blocks(weights: LayerWeights, hidden: int) -> dict[tuple[str, str], NDArray[Any]]:
    """(parameter, gate) -> block: W, R, bias (Wb + Rb) per gate; P per peephole; proj whole."""
    blocks: dict[tuple[str, str], NDArray[Any]] = {}
    bias = np.asarray(weights.Wb, dtype=np.float64) + np.asarray(weights.Rb, dtype=np.float64)
    for gate in GATES:
        rows = _gate_rows(gate, hidden)
        blocks["W", gate] = weights.W[rows]
        blocks["R", gate] = weights.R[rows]
        blocks["bias", gate] = bias[rows]
    if weights.P is not None:
        for index, gate in enumerate(PEEPHOLES):
            blocks["P", gate] = weights.P[index]
    if weights.proj is not None:
        blocks["proj", "-"] = weights.proj
    return blocks


def _differing_blocks(a: LayerWeights, b: LayerWeights, hidden: int, tolerance: float) -> list[dict[str, Any]]:
    blocks_a, blocks_b = _gate_blocks(a, hidden), _gate_blocks(b, hidden)
    found = []
    for key, block in blocks_a.items():
        error = _relative(block, blocks_b[key])
        if error > tolerance:
            item: dict[str, Any] = {"parameter": key[0], "gate": key[1], "relative_difference": error}
            offset = np.asarray(blocks_b[key], dtype=np.float64) - np.asarray(block, dtype=np.float64)
            if key[0] == "bias" and np.ptp(offset) <= 1e-6 * max(1.0, abs(float(offset.mean()))):
                item["constant_offset"] = float(offset.mean())  # B = A + offset: a forget_bias, say
            found.append(item)
    return found


def _swaps(a: LayerWeights, b: LayerWeights, gates: list[str], hidden: int, tolerance: float) -> list[dict[str, str]]:
    """For each differing gate of A, the gate of B whose W and R blocks hold A's (a gate-order bug)."""
    blocks_a, blocks_b = _gate_blocks(a, hidden), _gate_blocks(b, hidden)
    moved = []
    for gate in gates:
        for other in GATES:
            if other != gate and all(_relative(blocks_a[p, gate], blocks_b[p, other]) <= tolerance for p in ("W", "R")):
                moved.append({"a_gate": gate, "b_gate": other})
                break
    return moved


# ----------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------


def _side(model: LoadedModel) -> dict[str, Any]:
    return {
        "path": str(model.path),
        "format": model.format_name,
        "lstm": model.found.name,
        "implementation": model.found.implementation,
        "notes": list(model.found.notes),
    }


def _config_differences(a: LSTMConfig, b: LSTMConfig) -> list[dict[str, str]]:
    return [
        {"field": field.name, "a": str(getattr(a, field.name)), "b": str(getattr(b, field.name))}
        for field in dataclasses.fields(LSTMConfig)
        if getattr(a, field.name) != getattr(b, field.name)
    ]


def _config_text(differences: list[dict[str, str]]) -> str:
    return "; ".join(f"{item['field']} {item['a']} vs {item['b']}" for item in differences)


def _summary(first: dict[str, Any], gates: dict[str, Any], config_differences: list[dict[str, str]]) -> str:
    where = f"layer {first['layer']} {first['direction']}"
    names = gates["differing_gates"]
    if names:
        text = (
            f"gate{'s' if len(names) > 1 else ''} {', '.join(names)} of {where} differ{'' if len(names) > 1 else 's'}"
        )
        if gates["swapped"]:
            pairs = ", ".join(f"A's {s['a_gate']} is B's {s['b_gate']}" for s in gates["swapped"])
            text += f" (swapped: {pairs})"
    elif gates["other_parameters"]:
        text = f"{', '.join(gates['other_parameters'])} of {where} differ"
    else:
        text = f"the weights of {where} agree, yet the outputs differ there"
        matches = gates.get("hypotheses", {}).get("matches", [])
        if matches:
            text += "; B computes as with " + " or ".join(m["hypothesis"] for m in matches)
    if first["time_step"] is not None:
        text += f"; first differing time step {first['time_step']}"
    if config_differences:
        text += f"; configs differ in {_config_text(config_differences)}"
    return text


def _print(result: dict[str, Any]) -> None:
    for side in ("a", "b"):
        info = result[side]
        name = f" LSTM {info['lstm']!r}" if info["lstm"] else ""
        dtype = f", {info['dtype']}" if "dtype" in info else ""
        print(f"{side.upper()}: {info['path']} ({info['format']}{name}; runs with {info['implementation']}{dtype})")
        for note in info["notes"]:
            print(f"   note: {note}")
    inputs = result["inputs"]
    if "outputs" in result:
        states = "random initial states" if inputs.get("initial_states") else "zero initial states"
        print(f"inputs: seed {inputs['seed']}, {inputs['steps']} steps, batch {inputs['batch']}, {states}")
        errors = result["outputs"]["errors"]
        tolerance = result["tolerance"]
        print(
            "errors: "
            + ", ".join(f"{name} {value:.2e}" for name, value in errors.items())
            + f" (tolerance {tolerance['value']:.0e}, {tolerance['dtype']})"
        )
    for item in result.get("differences", []):
        step = "" if item["time_step"] is None else f", first at time step {item['time_step']}"
        print(f"differs: layer {item['layer']} {item['direction']}: y error {item['y_error']:.2e}{step}")
    gates = result.get("gates")
    if gates:
        _print_gates(gates)
    print(("AGREE: " if result["agree"] else "DIFFER: ") + result["summary"])


def _print_gates(gates: dict[str, Any]) -> None:
    where = f"layer {gates['layer']} {gates['direction']}"
    for block in gates["differing_blocks"]:
        offset = f", B = A {block['constant_offset']:+.4g}" if "constant_offset" in block else ""
        gate = "" if block["gate"] == "-" else f" gate {block['gate']}"
        size = f"relative {block['relative_difference']:.2e}{offset}"
        print(f"  weights differ: {block['parameter']}{gate} of {where} ({size})")
    for swap in gates["swapped"]:
        print(f"  A's gate {swap['a_gate']} block is B's gate {swap['b_gate']} block")
    substitution = gates.get("substitution")
    if substitution:
        verdict = "reproduces B" if substitution["explains"] else "does not fully reproduce B"
        print(
            f"  A run with B's blocks of gates {', '.join(substitution['gates'])}: error "
            f"{substitution['error_after']:.2e}, {verdict}"
        )
        for gate, error in substitution["error_with_one_gate_replaced"].items():
            print(f"    with B's gate {gate} alone: error {error:.2e}")
    hypotheses = gates.get("hypotheses")
    if hypotheses:
        if not hypotheses["tested"]:
            print(f"  hypotheses not tested: {hypotheses['reason']}")
        elif hypotheses["matches"]:
            for match in hypotheses["matches"]:
                print(f"  B computes what the reference computes with A's weights and {match['hypothesis']}")
        else:
            print(f"  none of {hypotheses['candidates']} common mistakes (gate order, forget bias) explains B")
