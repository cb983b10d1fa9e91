"""Models as sources: load a SPEC (``.pt2``, TorchScript, ``package.module:factory``, ``hf:``),
run it over a dataset and hook named layers; write extracted embeddings."""
