"""The exception hierarchy: every error it-relay raises on purpose derives from RelayError."""


class RelayError(Exception):
    """Base of every error it-relay raises on purpose."""


class UserError(RelayError):
    """Bad input from a user: the CLI prints the message on one line, no traceback."""

    exit_code = 1


class ConfigError(UserError):
    """The configuration is invalid; the message names the offending key."""

    exit_code = 2


class InputError(UserError):
    """A file or argument given to a command cannot be read or parsed."""

    exit_code = 2


class SchemaError(UserError):
    """The database schema is missing or older than this code; `it-relay db upgrade` fixes it."""

    exit_code = 3
