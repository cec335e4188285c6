"""Stop strings, with hold-back so a streamed piece never shows the start of a stop string."""

from __future__ import annotations


class StopStrings:
    """Feeds streamed text through and cuts it before the first stop string.

    Text that could still grow into a stop string is held back until it is either
    completed (then cut) or ruled out (then released).
    """

    def __init__(self, stops: tuple[str, ...], keep: bool = False):
        self.stops = tuple(s for s in stops if s)
        self.keep = keep  # the text ends after the stop string (transformers' pipeline), not before it
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Returns the text that is safe to show now; sets `stopped` once a stop string appears."""
        if not self.stops:
            return text
        if self.stopped:
            return ""
        self.buffer += text
        cut, end = self._cut()
        if cut >= 0:
            self.stopped = True
            out, self.buffer = self.buffer[: end if self.keep else cut], ""
            return out
        hold = self._partial_match_length()
        out = self.buffer[: len(self.buffer) - hold]
        self.buffer = self.buffer[len(self.buffer) - hold :]
        return out

    def flush(self) -> str:
        """At the end of generation the held-back text is plain text after all."""
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out

    def _cut(self) -> tuple[int, int]:
        """Where the first complete stop string starts and ends in the buffer, or (-1, -1).

        Generation stops as soon as any stop string is complete, so among overlapping ones
        the one that ends first wins (the longest of those that end there), not one that starts
        earlier but would end later: how the text was cut into pieces cannot change the result.
        """
        found = [(i + len(stop), i) for stop in self.stops if (i := self.buffer.find(stop)) >= 0]
        if not found:
            return -1, -1
        first_end = min(end for end, _ in found)
        return min(start for end, start in found if end == first_end), first_end

    def _partial_match_length(self) -> int:
        """Length of the longest buffer suffix that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.buffer)), best, -1):
                if self.buffer.endswith(stop[:k]):
                    best = k
                    break
        return best
