"""Read one string from a GGUF file's metadata without loading the file.

``gguf.GGUFReader`` maps every tensor and takes over a second on a 100 MB model;
the metadata sits at the head of the file and is walked here in milliseconds.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

MAGIC = b"GGUF"
STRING = 8
ARRAY = 9
# value type -> size in bytes, for the fixed-size types.
FIXED_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class _Cursor:
    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.at = 0

    def u32(self) -> int:
        (value,) = struct.unpack_from("<I", self.data, self.at)
        self.at += 4
        return int(value)

    def u64(self) -> int:
        (value,) = struct.unpack_from("<Q", self.data, self.at)
        self.at += 8
        return int(value)

    def string(self) -> bytes:
        size = self.u64()
        value = self.data[self.at : self.at + size]
        self.at += size
        return value

    def skip(self, value_type: int) -> None:
        if value_type == STRING:
            size = self.u64()
            self.at += size
        elif value_type == ARRAY:
            item_type, count = self.u32(), self.u64()
            if item_type in FIXED_SIZES:
                self.at += FIXED_SIZES[item_type] * count
            else:
                for _ in range(count):
                    self.skip(item_type)
        else:
            self.at += FIXED_SIZES[value_type]


def metadata_string(path: Path, key: str) -> str | None:
    """The string stored under ``key``; None when absent, not a string, or not GGUF v2+."""
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != MAGIC:
            return None
        cursor = _Cursor(data)
        cursor.at = 4
        if cursor.u32() < 2:
            return None
        cursor.u64()  # tensor count
        wanted = key.encode()
        try:
            for _ in range(cursor.u64()):
                name, value_type = cursor.string(), cursor.u32()
                if name == wanted:
                    return cursor.string().decode() if value_type == STRING else None
                cursor.skip(value_type)
        except (KeyError, struct.error):
            return None
    return None
