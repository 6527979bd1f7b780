"""Batch buffers for request bodies, reused from one upload to the next.

A fresh megabyte per batch is a fresh mapping whose pages the kernel zeroes
on first touch: page faults were a twentieth of a large upload's CPU. A
buffer given back is kept (up to ``keep`` of them) for the next upload.
Used from the event loop only.
"""


class BufferPool:
    """Buffers of ``size`` bytes, handed out and given back.

    Args:
        size: Each buffer's length.
        keep: How many idle buffers stay allocated.
    """

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self._keep = keep
        self._idle: list[bytearray] = []

    def take(self) -> bytearray:
        """An idle buffer, or a new one."""
        return self._idle.pop() if self._idle else bytearray(self.size)

    def give(self, buffer: bytearray) -> None:
        """Return a buffer nobody reads or writes any more."""
        if len(self._idle) < self._keep:
            self._idle.append(buffer)
