"""The one exception type the CLIs turn into a single `error: ...` line and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user (file, flag, game name, checkpoint): message is one clear line."""
