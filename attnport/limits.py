"""Resource bounds for reading untrusted weight files (docs/how-to/convert-a-checkpoint.md "Checkpoint files", "Resource bounds").

A reader checks what a file *states* (dataset shapes, zip member sizes) against what the file can
hold before it reads anything, so a small file cannot make attnport allocate or decompress gigabytes.
"""
from __future__ import annotations

import os
import stat

# Compressed data (torch zip members, HDF5 filtered datasets) may expand to at most this multiple
# of the file's size. Weights compress poorly (torch writes its zips uncompressed, gzip on float32
# gains ~10%); only a decompression bomb comes near it.
MAX_EXPANSION = 64

# HDF5 filters that ship with HDF5 itself (deflate, shuffle, fletcher32, szip, nbit, scaleoffset)
# and h5py's LZF. Any other filter id would make HDF5 look for a plugin library to load.
H5_BUILTIN_FILTERS = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
                      32000: "lzf"}

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words ("a FIFO", "a directory", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def not_regular(path, mode: int) -> str:
    """The message for a path that exists but is not a regular file (symlinks are named)."""
    link = f" (a symbolic link to {os.readlink(path)})" if os.path.islink(path) else ""
    return f"is {file_kind(mode)}{link}, not a regular file"


def expansion_problem(stated: int, file_size: int, what: str) -> str | None:
    """Why ``stated`` decompressed bytes are refused for a file of ``file_size`` bytes, or None."""
    if stated > MAX_EXPANSION * file_size:
        return f"{what} decompresses to {stated:,} bytes, more than {MAX_EXPANSION}x the file's {file_size:,}"
    return None
