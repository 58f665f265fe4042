"""attnport: cross-backend tooling: the backend registry, the shared case list, checkpoints
(`save`/`load`), layout conversion and the command line (`check`, `inspect`, `convert`)."""
from . import backends, cases
from .checkpoint import CheckpointError, Summary, load, read_tensors, save

__all__ = ["backends", "cases", "save", "load", "read_tensors", "CheckpointError", "Summary"]
