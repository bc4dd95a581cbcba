"""``lstm-conformance convert SRC DST``: read, write atomically, and prove the written file computes the same."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_conformance.adapters.base import RunResult
from lstm_conformance.adapters.formats import FoundLSTM
from lstm_conformance.cli.common import (
    LoadedModel,
    Progress,
    StagedOutput,
    check_forget_bias_applies,
    common_dtype,
    describe_config,
    destination_exists,
    format_of,
    format_options,
    implementation_for,
    least_precise,
    load_format,
    load_model,
    output_errors,
    random_inputs,
    read_model,
    run_forward,
    takes_initial_state,
    tolerance_for,
    weights_dtype,
)
from lstm_conformance.reference.errors import InputFileError
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights

EXIT_OK, EXIT_NOT_VERIFIED = 0, 1
VERIFY_STEPS, VERIFY_BATCH = 5, 3


@dataclass
class Verification:
    """What the verification ran and measured."""

    source_implementation: str
    destination_implementation: str
    dtypes: list[str]
    errors: dict[str, float]
    tolerance: float
    tolerance_dtype: str
    #: Config fields the written file does not hold as the source did (a clip a checkpoint cannot store):
    #: the function differs wherever they matter, even if this input did not reach them.
    lost: list[str]
    #: Output values NaN or Inf in the source's run (NaN weights): compared by position only, not by value.
    nonfinite: int = 0
    compared: int = 0

    @property
    def error(self) -> float:
        return max(self.errors.values())

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance and not self.lost

    def describe(self) -> str:
        runs = (
            f"{self.source_implementation} ({self.dtypes[0]}) vs {self.destination_implementation} ({self.dtypes[1]})"
        )
        per_output = ", ".join(f"{name} {value:.2e}" for name, value in self.errors.items())
        lost = f"; the written file does not hold {', '.join(self.lost)}" if self.lost else ""
        nonfinite = (
            f"; {self.nonfinite} of {self.compared} output values are NaN/Inf (the weights are): those only had "
            "to be NaN/Inf on both sides"
            if self.nonfinite
            else ""
        )
        return (
            f"{runs} on {VERIFY_STEPS} steps, batch {VERIFY_BATCH}, random input and initial states: "
            f"error {self.error:.2e} ({per_output}); tolerance {self.tolerance:.0e} ({self.tolerance_dtype})"
            f"{lost}{nonfinite}"
        )


def convert_command(args: argparse.Namespace) -> int:
    progress = Progress()
    try:
        return _convert(args, progress)
    finally:
        progress.done()  # before any message: the status line must not outlive the command


def _convert(args: argparse.Namespace, progress: Progress) -> int:
    source_path, destination = Path(args.src), Path(args.dst)
    source_format = format_of(source_path, args.from_format)
    destination_format = format_of(destination, args.to_format)
    check_forget_bias_applies(args.forget_bias, [source_format, destination_format])
    load_format(destination_format)  # an unavailable format fails before the source is read
    if destination_exists(destination, destination_format) and not args.force:
        raise InputFileError(f"{destination} exists; pass --force to overwrite it")
    progress.step(f"reading {source_path}")
    source = load_model(args.src, source_format, args.select, args.forget_bias)
    if not args.no_verify:
        # Fail before writing anything when a side cannot run here.
        implementation_for(source.found, "verify the conversion (pass --no-verify to convert without it)")
    write_options = format_options(destination_format, args.forget_bias)
    if args.dtype:
        write_options["dtype"] = args.dtype
    return _write_and_verify(args, source, destination, destination_format, write_options, progress)


def _write_and_verify(
    args: argparse.Namespace,
    source: LoadedModel,
    destination: Path,
    destination_format: str,
    write_options: dict[str, Any],
    progress: Progress,
) -> int:
    writer = load_format(destination_format)
    with StagedOutput(destination, destination_format) as staged:
        progress.step(f"writing {destination}")
        notes = writer.write(staged.path, source.found.weights, write_options)
        staged.written()
        verification = None
        if not args.no_verify:
            progress.step("verifying: running both sides")
            read_options = format_options(destination_format, args.forget_bias)
            written = _read_back(staged.path, destination, destination_format, read_options)
            notes += _layout_notes(source.found.weights, written.weights) + written.notes
            verification = _verify(source.found, written, args.seed)
        progress.done()
        _report(source, destination, destination_format, notes, verification)
        if verification is not None and not verification.passed:
            why = "the function changed" if verification.lost else "error beyond tolerance"
            print(f"NOT VERIFIED: {destination} not written ({why})")
            return EXIT_NOT_VERIFIED
        staged.commit()
    return EXIT_OK


def _read_back(path: Path, destination: Path, format_name: str, options: dict[str, Any]) -> FoundLSTM:
    contents = read_model(path, format_name, options)
    if len(contents.lstms) != 1:
        names = ", ".join(found.name for found in contents.lstms) or "none"
        raise InputFileError(
            f"cannot verify: {destination} ({format_name}) reads back as {len(contents.lstms)} LSTMs ({names}), "
            "not one (the format does not record how they chain); choose another format, or pass --no-verify"
        )
    return contents.lstms[0]


def _verify(source: FoundLSTM, written: FoundLSTM, seed: int) -> Verification:
    purpose = "verify the conversion (pass --no-verify to convert without it)"
    source_impl = implementation_for(source, purpose)
    written_impl = implementation_for(written, purpose)
    dtypes = common_dtype(source_impl, written_impl)
    config = source.weights.config
    inputs = random_inputs(config, VERIFY_STEPS, VERIFY_BATCH, seed, takes_initial_state(source_impl, written_impl))
    expected = run_forward(source_impl, source.weights, inputs, dtypes[0])
    got = run_forward(written_impl, written.weights, inputs, dtypes[1])
    stored = [weights_dtype(source.weights), weights_dtype(written.weights)]
    tolerance, tolerance_dtype = tolerance_for([*dtypes, *stored])
    return Verification(
        source_implementation=source_impl.name,
        destination_implementation=written_impl.name,
        dtypes=dtypes,
        errors=output_errors(expected, got),
        tolerance=tolerance,
        tolerance_dtype=tolerance_dtype,
        lost=_lost_config(source.weights, written.weights),
        nonfinite=sum(int(np.size(a) - np.count_nonzero(np.isfinite(a))) for a in _outputs(expected)),
        compared=sum(int(np.size(a)) for a in _outputs(expected)),
    )


def _outputs(result: RunResult) -> list[Any]:
    return [result.y, result.h_n, result.c_n]


def _lost_config(source: LSTMWeights, written: LSTMWeights) -> list[str]:
    """Config fields that differ between the source and the file read back, as "name source -> read back";
    a difference that cannot change the function (biases or peepholes that are all zero) is not one."""
    lost = []
    for item in dataclasses.fields(LSTMConfig):
        before, after = getattr(source.config, item.name), getattr(written.config, item.name)
        if before == after or _all_zero_either_way(item.name, source, written):
            continue
        lost.append(f"{item.name} {before} (read back: {after})")
    return lost


def _all_zero_either_way(field_name: str, source: LSTMWeights, written: LSTMWeights) -> bool:
    names = {"bias": (".Wb", ".Rb"), "peepholes": (".P",)}.get(field_name)
    if names is None:
        return False
    arrays = {**source.named_arrays(), **written.named_arrays()}
    return not any(np.any(value) for key, value in arrays.items() if key.endswith(names))


def _layout_notes(source: LSTMWeights, written: LSTMWeights) -> list[str]:
    """What the destination's layout changed, seen by reading it back (casts, a summed bias)."""
    notes = []
    before, after = weights_dtype(source), weights_dtype(written)
    if least_precise([before, after]) != before:  # a reader that widens float32 to float64 loses nothing
        notes.append(f"weights stored as {after} (were {before})")
    source_arrays, written_arrays = source.named_arrays(), written.named_arrays()
    bias_keys = [key for key in source_arrays if key.endswith(".Wb")]
    split_before = any(np.any(source_arrays[key]) for key in bias_keys)
    split_after = any(np.any(written_arrays.get(key, 0.0)) for key in bias_keys)
    if split_before and not split_after:
        notes.append("the two biases (input and recurrent) were summed into the destination's one bias")
    return notes


def _report(
    source: LoadedModel,
    destination: Path,
    destination_format: str,
    notes: list[str],
    verification: Verification | None,
) -> None:
    found = source.found
    name = f" LSTM {found.name!r}" if found.name else ""
    print(f"converted {source.path} ({source.format_name}{name}) -> {destination} ({destination_format})")
    config = found.weights.config
    print(f"  LSTM: {describe_config(config)}; weights {weights_dtype(found.weights)}")
    features = config.features()
    print(f"  features: {', '.join(features) if features else 'none beyond a plain LSTM'}")
    for note in dict.fromkeys([*found.notes, *notes]):
        print(f"  note: {note}")
    for assumption in found.assumptions:  # stopgap until the proof says them on stderr (issue 10, CLI side)
        print(f"  assumption: {assumption}")
    if verification is None:
        print("  not verified (--no-verify)")
    else:
        verdict = "verified" if verification.passed else "FAILED"
        print(f"  {verdict}: {verification.describe()}")
