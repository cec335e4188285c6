"""The one exception type edgelm raises for problems a user can fix."""


class EdgelmError(Exception):
    """A problem with the user's input or environment, with a message that says what to do.

    The CLI prints these as one line (no traceback); the Python API lets them propagate.
    """
