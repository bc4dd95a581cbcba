"""Whether a framework can run here, found without importing it, and importing it with the settings the
adapters need. Shared by the runners and the file formats (neither imports the other for these)."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from lstm_conformance.reference.errors import FrameworkMissingError


def torch_unavailable_reason() -> str | None:
    """Why torch cannot run here, without importing it."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'lstm-conformance[torch]')"
    return None


def tensorflow_unavailable_reason() -> str | None:
    """None when TensorFlow and tf_keras (which holds the tf.compat.v1 cells) are importable; never imports them."""
    for module, package in (("tensorflow", "tensorflow"), ("tf_keras", "tf-keras")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'lstm-conformance[tensorflow]' installs {package})"
    return None


def import_tensorflow() -> Any:
    """Import TensorFlow with its tf.compat.v1 cells available, or raise FrameworkMissingError saying why."""
    reason = tensorflow_unavailable_reason()
    if reason:
        raise FrameworkMissingError(reason)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    if not hasattr(tf.compat.v1.nn.rnn_cell, "LSTMCell"):
        raise FrameworkMissingError(
            "tf.compat.v1.nn.rnn_cell has no LSTMCell: TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was "
            "set; set it in the environment before Python starts"
        )
    return tf
