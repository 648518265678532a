"""Bounded capture of a child's output: keep the head and the tail, count the rest, cut in the middle."""
from __future__ import annotations


class HeadTailBuffer:
    """Keeps the first and last `max_bytes // 2` bytes of a stream and how many bytes were seen."""

    def __init__(self, max_bytes: int):
        if max_bytes < 2:
            raise ValueError(f"max_output_bytes must be >= 2, got {max_bytes}")
        self.head_limit = max_bytes // 2
        self.tail_limit = max_bytes - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        """The captured text, with a marker where the middle was cut (decoding errors replaced)."""
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if not self.truncated:
            return head + tail
        dropped = self.total - len(self.head) - len(self.tail)
        return f"{head}\n... [{dropped} bytes truncated] ...\n{tail}"

