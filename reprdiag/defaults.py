"""Defaults that the library and the command line share, in a module that imports nothing, so
``reprdiag --help`` can show them without importing torch or pandas."""

#: Jackknife blocks K of ``--uncertainty`` (reprdiag.uncertainty).
DEFAULT_BLOCKS = 20
#: How the jackknife's deleted spectra are computed (first = default; reprdiag.uncertainty).
DELETED_SPECTRA = ("auto", "first-order", "exact")
#: |z| below this marks a change "within noise" (reprdiag.compare, runs with standard errors).
NOISE_Z = 2.0
