"""Where two LSTMs part: ``api.compare``'s search once the two runs disagree. NumPy only.

The search goes from the outside in, every error judged by the suite's rule (``conformance.checks.measure``
under the comparison's pair tolerance) and said as a fraction of that tolerance (above 1 differs):

1. outputs and gradients of both files' own runs (``api.run_check``); agreeing there ends it;
2. layer, direction, time step: both models truncated to their first k layers, k = 1, 2, ...: the first k
   whose output differs names the layer; within it, each direction's first differing step, in the order that
   direction processes the sequence;
3. gates: the canonical gate blocks of W, R, the bias (Wb + Rb: only the sum is the function) and the
   peepholes of that layer and direction, compared one by one; blocks that match another gate's are called
   swapped; then the function is run again with A's weights carrying B's blocks of the differing gates, to
   show those gates explain the difference (and each gate's share alone);
4. when the weights agree and the implementations still differ, the reference runs A's weights changed by each
   common mistake (every permutation of the gates, a forget bias shifted by +-1) to find what B computes.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.api import (
    DEVICE,
    CheckPlan,
    Comparison,
    Divergence,
    GateExplanation,
    Hypotheses,
    HypothesisMatch,
    Progress,
    Substitution,
    Swap,
    WeightBlock,
    config_text,
    worst_text,
)
from lstm_conformance.conformance.checks import forward_measurements, measure
from lstm_conformance.conformance.tolerances import Tolerance
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


def diagnose(comparison: Comparison, plan: CheckPlan, run_a: RunResult, run_b: RunResult, progress: Progress) -> None:
    """Fill ``comparison``'s weight differences, divergences, gates and summary from the two full runs."""
    _Search(comparison, plan, progress).run(run_a, run_b)


class _Search:
    def __init__(self, comparison: Comparison, plan: CheckPlan, progress: Progress) -> None:
        self.comparison = comparison
        self.plan = plan
        self.tolerance: Tolerance = plan.tolerance
        self.progress = progress
        self.inputs = dataclasses.replace(plan.inputs, dy=None, dh_n=None, dc_n=None)
        self.weights_a, self.weights_b = plan.first.weights, plan.second.weights

    def run(self, full_a: RunResult, full_b: RunResult) -> None:
        comparison = self.comparison
        agreement = comparison.agreement
        assert agreement is not None
        comparison.weight_differences = self._weight_differences()
        if agreement.agree:
            gradients = "" if agreement.forward_only else f", gradients {worst_text(agreement.gradients)}"
            comparison.summary = f"they agree: forward {worst_text(agreement.forward)}{gradients}"
            if agreement.forward_only:
                comparison.summary += f" ({agreement.forward_only})"
            return
        if all(m.passed for m in agreement.forward):
            comparison.summary = f"the outputs agree, but the gradients differ: {worst_text(agreement.gradients)}"
            return
        self._locate(full_a, full_b)

    # --- running -------------------------------------------------------------------------------------------

    def run_a(self, weights: LSTMWeights) -> RunResult:
        return self.plan.first.run(_truncate_inputs(self.inputs, weights.config), self.plan.dtypes[0], weights)

    def run_b(self, weights: LSTMWeights) -> RunResult:
        return self.plan.second.run(_truncate_inputs(self.inputs, weights.config), self.plan.dtypes[1], weights)

    def fraction(self, expected: RunResult, got: RunResult) -> float:
        """The worst output's error as a fraction of the tolerance."""
        return max(m.ratio for m in forward_measurements(got, expected, self.tolerance))

    def _weight_differences(self) -> list[WeightBlock]:
        """Every canonical gate block that differs, in every layer and direction."""
        hidden = self.weights_a.config.hidden_size
        found = []
        for layer, (per_a, per_b) in enumerate(zip(self.weights_a.layers, self.weights_b.layers, strict=True)):
            for direction, (a, b) in enumerate(zip(per_a, per_b, strict=True)):
                found += _differing_blocks(a, b, hidden, self.tolerance, layer, DIRECTIONS[direction])
        return found

    # --- locating ------------------------------------------------------------------------------------------

    def _locate(self, full_a: RunResult, full_b: RunResult) -> None:
        comparison = self.comparison
        config = self.weights_a.config
        found: list[Divergence] = []
        for layers in range(1, config.num_layers + 1):
            if layers == config.num_layers:
                run_a, run_b = full_a, full_b
            else:
                self.progress(f"running the first {layers} layer(s) of A and B")
                run_a = self.run_a(truncate(self.weights_a, layers))
                run_b = self.run_b(truncate(self.weights_b, layers))
            found = self._first_difference(layers - 1, run_a, run_b)
            if found:
                break
        comparison.differences = found
        if not found:
            comparison.summary = "the outputs differ, but no single layer and direction could be named"
            return
        first = found[0]
        gates = self._explain_gates(first.layer, first.direction, run_b)
        comparison.gates = gates
        text = _summary(first, gates)
        if comparison.config_differences:
            text += f"; configs differ in {config_text(comparison.config_differences)}"
        comparison.summary = text

    def _first_difference(self, layer: int, run_a: RunResult, run_b: RunResult) -> list[Divergence]:
        """Per direction of ``layer`` (the last of the truncated run): where its output first differs."""
        config = self.weights_a.config
        size = config.output_size
        found = []
        for direction in range(config.num_directions):
            columns = slice(direction * size, (direction + 1) * size)
            y_a, y_b = run_a.y[:, :, columns], run_b.y[:, :, columns]
            state = layer * config.num_directions + direction
            per_step = [measure("y", y_b[t], y_a[t], self.tolerance).ratio for t in range(y_a.shape[0])]
            h_fraction = measure("h_n", run_b.h_n[state], run_a.h_n[state], self.tolerance).ratio
            c_fraction = measure("c_n", run_b.c_n[state], run_a.c_n[state], self.tolerance).ratio
            bad = [t for t, fraction in enumerate(per_step) if fraction > 1.0]
            if not bad and max(h_fraction, c_fraction) <= 1.0:
                continue
            # The reverse direction walks the sequence from its end: its first step is the last index.
            step = (min(bad) if direction == 0 else max(bad)) if bad else None
            found.append(
                Divergence(
                    layer=layer,
                    direction=DIRECTIONS[direction],
                    time_step=step,
                    fraction_at_step=per_step[step] if step is not None else None,
                    y_fraction=max(per_step),
                    h_n_fraction=h_fraction,
                    c_n_fraction=c_fraction,
                )
            )
        return found

    # --- gates ---------------------------------------------------------------------------------------------

    def _explain_gates(self, layer: int, direction_name: str, expected: RunResult) -> GateExplanation:
        direction = DIRECTIONS.index(direction_name)
        a = self.weights_a.layers[layer][direction]
        b = self.weights_b.layers[layer][direction]
        hidden = self.weights_a.config.hidden_size
        blocks = _differing_blocks(a, b, hidden, self.tolerance, layer, direction_name)
        gates = sorted({item.gate for item in blocks if item.gate in GATES}, key=GATES.index)
        explanation = GateExplanation(
            layer=layer,
            direction=direction_name,
            differing_blocks=blocks,
            differing_gates=gates,
            other_parameters=sorted({item.parameter for item in blocks if item.gate not in GATES}),
            swapped=_swaps(a, b, gates, hidden, self.tolerance),
        )
        if gates:
            self.progress(f"running A with B's blocks of gates {', '.join(gates)}")
            explanation.substitution = self._substitute(layer, direction, gates, expected)
        elif not explanation.other_parameters:
            self.progress("testing hypotheses with the reference")
            explanation.hypotheses = self._hypotheses(layer, direction, expected)
        return explanation

    def _substitute(self, layer: int, direction: int, gates: list[str], expected: RunResult) -> Substitution:
        """Run A's implementation on A's weights with B's blocks of ``gates``: does it reproduce B?"""
        base = truncate(self.weights_a, layer + 1)
        donor = truncate(self.weights_b, layer + 1)
        together = self.fraction(self.run_a(with_gates(base, donor, layer, direction, gates)), expected)
        alone = {}
        if len(gates) > 1:
            for gate in gates:
                hybrid = with_gates(base, donor, layer, direction, [gate])
                alone[gate] = self.fraction(self.run_a(hybrid), expected)
        return Substitution(
            gates=gates, fraction_after=together, explains=together <= 1.0, fraction_with_one_gate_replaced=alone
        )

    def _hypotheses(self, layer: int, direction: int, expected: RunResult) -> Hypotheses:
        """The weights agree: find a change of A's weights under which the reference computes what B does
        (``expected`` is B's run of the first ``layer + 1`` layers)."""
        try:
            reference = get_implementation("reference")
            unavailable = reference.unavailable_reason()
        except (LSTMConformanceError, ImportError) as error:
            unavailable = str(error)
        if unavailable:
            return Hypotheses(tested=False, reason=f"the reference implementation is unavailable: {unavailable}")
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
        options = RunOptions(dtype="float64", device=DEVICE)
        for label, weights in candidates:
            run = reference.run(weights, _truncate_inputs(self.inputs, weights.config), options)
            mismatch = self.fraction(expected, run)
            if mismatch <= 1.0:
                matches.append(HypothesisMatch(hypothesis=label, fraction=mismatch))
        return Hypotheses(tested=True, candidates=len(candidates), matches=matches)


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


def _copy(weights: LSTMWeights) -> LSTMWeights:
    return weights.map(np.array)


def with_gates(base: LSTMWeights, donor: LSTMWeights, layer: int, direction: int, gates: list[str]) -> LSTMWeights:
    """``base`` with ``donor``'s blocks of ``gates`` (W, R, Wb, Rb rows; peephole rows) in one layer/direction."""
    hybrid = _copy(base)
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
    hybrid = _copy(base)
    target, source = hybrid.layers[layer][direction], base.layers[layer][direction]
    for name in ("W", "R", "Wb", "Rb"):
        setattr(target, name, reorder_gates(getattr(source, name), GATES, order))
    return hybrid


def _bias_shifted(base: LSTMWeights, layer: int, direction: int, shift: float, hidden: int) -> LSTMWeights:
    hybrid = _copy(base)
    hybrid.layers[layer][direction].Rb[_gate_rows("f", hidden)] += shift
    return hybrid


def _block_fraction(a: NDArray[Any], b: NDArray[Any], tolerance: Tolerance) -> float:
    """B's block against A's by the suite's rule; NaN at the same places on both sides agrees."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a64.shape == b64.shape:
        same = (np.isnan(a64) & np.isnan(b64)) | (np.isinf(a64) & (a64 == b64))
        a64, b64 = np.where(same, 0.0, a64), np.where(same, 0.0, b64)
    return measure("block", b64, a64, tolerance).ratio


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


def _differing_blocks(
    a: LayerWeights, b: LayerWeights, hidden: int, tolerance: Tolerance, layer: int, direction: str
) -> list[WeightBlock]:
    blocks_a, blocks_b = _gate_blocks(a, hidden), _gate_blocks(b, hidden)
    found = []
    for key, block in blocks_a.items():
        fraction = _block_fraction(block, blocks_b[key], tolerance)
        if fraction <= 1.0:
            continue
        item = WeightBlock(layer=layer, direction=direction, parameter=key[0], gate=key[1], fraction=fraction)
        offset = np.asarray(blocks_b[key], dtype=np.float64) - np.asarray(block, dtype=np.float64)
        if key[0] == "bias" and np.ptp(offset) <= 1e-6 * max(1.0, abs(float(offset.mean()))):
            item.constant_offset = float(offset.mean())  # B = A + offset: a forget_bias, say
        found.append(item)
    return found


def _swaps(a: LayerWeights, b: LayerWeights, gates: list[str], hidden: int, tolerance: Tolerance) -> list[Swap]:
    """For each differing gate of A, the gate of B whose W and R blocks hold A's (a gate-order bug)."""
    blocks_a, blocks_b = _gate_blocks(a, hidden), _gate_blocks(b, hidden)
    moved = []
    for gate in gates:
        for other in GATES:
            if other != gate and all(
                _block_fraction(blocks_a[p, gate], blocks_b[p, other], tolerance) <= 1.0 for p in ("W", "R")
            ):
                moved.append(Swap(a_gate=gate, b_gate=other))
                break
    return moved


def _summary(first: Divergence, gates: GateExplanation) -> str:
    where = f"layer {first.layer} {first.direction}"
    names = gates.differing_gates
    if names:
        plural = len(names) > 1
        text = f"gate{'s' if plural else ''} {', '.join(names)} of {where} differ{'' if plural else 's'}"
        if gates.swapped:
            pairs = ", ".join(f"A's {s.a_gate} is B's {s.b_gate}" for s in gates.swapped)
            text += f" (swapped: {pairs})"
    elif gates.other_parameters:
        text = f"{', '.join(gates.other_parameters)} of {where} differ"
    else:
        text = f"the weights of {where} agree, yet the outputs differ there"
        matches = gates.hypotheses.matches if gates.hypotheses else []
        if matches:
            text += "; B computes as with " + " or ".join(m.hypothesis for m in matches)
    if first.time_step is not None:
        text += f"; first differing time step {first.time_step}"
    return text
