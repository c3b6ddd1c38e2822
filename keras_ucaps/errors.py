"""Errors and warnings that keras-ucaps reports to its users.

An :class:`InputError` is a problem with something the user gave us (a missing
or corrupt file, a wrong shape, an unknown class). Its message always names the
file or option at fault; the command line prints it on one line and exits 2.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad user input: the message names the file (or option) and the problem.

    Parameters
    ----------
    source : str or os.PathLike
        The file or option at fault, e.g. ``"tomo.mrc"`` or ``"--voxel-size"``.
    problem : str
        What is wrong with it, in a few words.
    """

    def __init__(self, source: str | os.PathLike, problem: str):
        self.source = os.fspath(source)
        # One line, whatever a parser's message carried: the command line prints it as the only line.
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.source}: {self.problem}")


class KerasUcapsWarning(UserWarning):
    """A recoverable surprise in the user's input (rescaled volume, guessed value)."""
