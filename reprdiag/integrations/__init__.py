"""Integrations with training frameworks; each needs its framework, installed as an extra.

- :mod:`reprdiag.integrations.lightning`: ``SpectralMonitorCallback``, a Lightning
  ``Callback`` around :class:`reprdiag.monitor.SpectralMonitor`
  (``pip install 'reprdiag[lightning]'``).

Nothing here is imported by ``import reprdiag``; import the submodule you need.
"""
