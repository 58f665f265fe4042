"""attnport: cross-backend tooling (the backend registry, the shared case list, `attnport check`)."""
from . import backends, cases

__all__ = ["backends", "cases"]
