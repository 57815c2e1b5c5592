"""The one exception type that means "the user's input is wrong"."""


class TreeseekError(ValueError):
    """Bad input: the message is a single line meant for a person.

    The CLI prints it as ``error: <message>`` and exits with status 2; any
    other exception is a bug in treeseek.
    """
