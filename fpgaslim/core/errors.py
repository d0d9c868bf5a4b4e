"""The few user-facing error types. Library code raises these; only the CLI turns them into
messages and exit codes, so Python API users can catch them precisely."""

from __future__ import annotations


class FpgaslimError(Exception):
    """Base class: a problem the user can fix; the message says what and how."""

    exit_code = 2


class ConfigError(FpgaslimError):
    """An invalid setting or config file; the message names the field."""


class UnknownNameError(ConfigError):
    """An unknown model, method, dataset or board; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: list[str] | tuple[str, ...]) -> None:
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")
        self.kind, self.name, self.valid = kind, name, list(valid)


class DatasetNotFoundError(FpgaslimError):
    """The data is neither local nor downloadable; the message says where we looked."""


class CheckpointError(FpgaslimError):
    """A checkpoint, record or ONNX file is missing, truncated or not what it claims to be."""


class TrainingDivergedError(FpgaslimError):
    """The training loss became NaN or infinite; nothing of that epoch is saved."""


class UnsupportedLayerError(FpgaslimError):
    """FINN could not map a node to hardware; the message names the node and what to change."""

    exit_code = 3


class BuildTimeoutError(FpgaslimError):
    """A FINN build step ran past its time limit (e.g. a streamlining loop)."""

    exit_code = 4


class ToolMissingError(FpgaslimError):
    """Vivado / Vitis HLS / XRT (or a board) is needed and not present."""

    exit_code = 5


class VerificationError(FpgaslimError):
    """The hardware graph does not compute what the QAT model computes."""

    exit_code = 6


class BundleError(FpgaslimError):
    """A deployment bundle fails its manifest check or holds an unsafe path."""
