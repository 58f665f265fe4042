"""attnport: cross-backend tooling: the backend registry, the shared case list, checkpoints
(`save`/`load`, `load_into` your own model), layout conversion, port verification (`verify`) and the command line
(`check`, `inspect`, `convert`, `diff`, `verify`, `bench`)."""
from importlib import metadata as _metadata

from . import backends, cases
from .assign import Loaded, LoadIntoError, load_into
from .checkpoint import CheckpointError, Interrupted, NonFiniteWarning, Summary, WriteError, load, read_tensors, save
from .verification import BadCandidate, Report, SpecTooLarge, verify

try:
    __version__ = _metadata.version("attnport")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "backends", "cases", "save", "load", "read_tensors", "CheckpointError", "WriteError", "Interrupted",
           "NonFiniteWarning", "Summary", "verify", "Report", "BadCandidate", "SpecTooLarge", "load_into", "Loaded",
           "LoadIntoError"]
