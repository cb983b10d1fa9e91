"""Models as sources: load a SPEC (``.pt2``, TorchScript, ``package.module:factory``, ``hf:``:
:mod:`~reprdiag.models.load`, :mod:`~reprdiag.models.archive`, :mod:`~reprdiag.models.hf`), hook
named layers (:mod:`~reprdiag.models.probes`), feed it a dataset (:mod:`~reprdiag.models.data`),
and stream each layer's rows into the statistics or write them to a file
(:mod:`~reprdiag.models.extract`, :mod:`~reprdiag.models.writer`)."""
