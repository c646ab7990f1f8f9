"""The one exception type for bad input: its message is shown to the user as a single line."""


class InputError(Exception):
    """Bad config, data or path; the message names the key or file and says what is wrong."""
