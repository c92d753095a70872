"""Proposition 1 on the 2-D toys: does a trained T = 1 chain keep the data distribution over 10^5 steps, and
what in the operator, its fixed expansion or its training decides it. ``python -m studies.prop1.<name> --help``."""
