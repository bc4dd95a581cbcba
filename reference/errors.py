"""Errors shared by the three packages. Each message names the problem and, where there is one, the fix."""

from __future__ import annotations


class LSTMConformanceError(Exception):
    """Base of every error this project raises on purpose (the command line turns them into exit 2)."""


class LayoutError(LSTMConformanceError, ValueError):
    """Weights, shapes, dtypes or a config that do not fit the canonical layout."""


class UnsupportedFeatureError(LSTMConformanceError, ValueError):
    """A framework or layout cannot hold or run a feature without changing the function."""

    def __init__(self, framework: str, feature: str, hint: str = "") -> None:
        self.framework = framework
        self.feature = feature
        self.hint = hint
        message = f"{framework} does not support {feature}"
        super().__init__(f"{message}; {hint}" if hint else message)


class NotImplementedOptionError(LSTMConformanceError, NotImplementedError):
    """An option the reference or an adapter accepts in its signature but does not implement: never ignored."""


class FrameworkMissingError(LSTMConformanceError, ImportError):
    """The framework an implementation needs is not installed; the message says what to install."""


class InputFileError(LSTMConformanceError):
    """A model or array file that cannot be read as what it claims to be (corrupt, truncated, wrong format,
    no LSTM in it, several without --select)."""
