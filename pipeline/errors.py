"""User-facing errors: the CLI prints them without a traceback and exits with code 2."""


class UserError(Exception):
    """Bad input or usage, reported as one line per problem naming the file or key."""
