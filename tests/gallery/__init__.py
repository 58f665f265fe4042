"""Ports for `attnport.verify`'s tests: a correct independent NumPy port and buggy ports, each with
the one catalogue entry it should be diagnosed with."""
