"""The one exception type the command line turns into a one-line error and exit code 2."""


class UserError(Exception):
    """Something the user gave (a file, a flag, a config) cannot be used.

    The message is one sentence that says what is wrong and what to do about it.
    """
