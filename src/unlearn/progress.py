"""Progress bars that suit where they are written: tqdm's bar on a terminal, plain lines in a log.

A bar written to a file or a pipe (``nohup``, CI, ``2> run.log``) would fill it with carriage returns
and the cursor moves of nested bars (``ESC[A``). There :class:`LineBar` writes one plain line when the
bar starts, then at most one every :data:`PERIOD` seconds, and one when it ends.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm
from tqdm.std import tqdm as std_tqdm

PERIOD = 30.0  # seconds between two lines of a bar in a log


class LineBar(std_tqdm):
    """tqdm for a log: whole lines, no carriage returns or cursor moves."""

    def __init__(self, *args, **kwargs):
        self._said = 0.0
        kwargs.update(dynamic_ncols=False, ncols=100, position=None)
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        now = time.time()
        if msg == "" or now - self._said < PERIOD:  # (msg "": tqdm clearing a bar; close() says the end)
            return False
        self._said = now
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()
        return False

    def close(self):
        if self.disable:
            return
        last = self.__str__() if hasattr(self, "last_print_t") else None
        self.disable = True
        self._decr_instances(self)
        if last:
            self.fp.write(last + "\n")
            self.fp.flush()


def bar(iterable=None, **kwargs):
    """A progress bar: tqdm's on a terminal, :class:`LineBar` when stderr is a file or a pipe."""
    stream = kwargs.get("file") or sys.stderr
    interactive = hasattr(stream, "isatty") and stream.isatty()
    return (tqdm if interactive else LineBar)(iterable, **kwargs)
