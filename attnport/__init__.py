"""attnport: cross-backend tooling: the backend registry, the shared case list, checkpoints
(`save`/`load`), layout conversion, port verification (`verify`) and the command line
(`check`, `inspect`, `convert`, `diff`, `verify`, `bench`)."""
from . import backends, cases
from .checkpoint import CheckpointError, Summary, load, read_tensors, save
from .verification import Report, verify

__all__ = ["backends", "cases", "save", "load", "read_tensors", "CheckpointError", "Summary", "verify", "Report"]
