"""Error types whose message is shown to the user as one line."""


class AirloopError(Exception):
    """A user-facing failure: the CLI prints ``error: <message>`` and exits non-zero."""

    exit_code = 1


class SpecError(AirloopError):
    """A project spec is missing, malformed or fails schema validation."""

    exit_code = 2


class ValidationFailed(AirloopError):
    """Input data failed its expectations (the offending files are quarantined)."""

    exit_code = 3
