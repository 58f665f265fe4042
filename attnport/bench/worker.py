"""The process ``attnport bench`` times one framework in: ``python -m attnport.bench.worker REQUEST RESULT FD``.

REQUEST is the JSON of the cases, RESULT the file the measured part is written to, FD the pipe that
carries one byte per progress step back to the parent (``core._run_worker``).
"""
import sys

from .core import worker_main

if __name__ == "__main__":
    raise SystemExit(worker_main(*sys.argv[1:4]))
