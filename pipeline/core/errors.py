"""User-facing errors: the CLI prints them without a traceback and exits with code 2 (3: locked)."""


class UserError(Exception):
    """Bad input or usage, reported as one line per problem naming the file or key."""


class LockedError(Exception):
    """Another process holds the lock of a stage folder or fold: the CLI exits with code 3."""


class ConfigError(UserError):
    """A config problem, reported to the user as one line."""
