"""``hf:FOLDER``: a local Hugging Face model, read with the optional ``transformers`` package.

Input is text, one example per line. Layer ``hidden.N`` is hidden state N (``hidden.0`` the
embeddings, ``hidden.L`` the last layer), mean-pooled over the attention mask (``--pool first``
takes the first token, e.g. [CLS]). Nothing is downloaded: files are read with
``local_files_only=True``. No code in the folder runs: ``trust_remote_code=False`` (a folder that
needs its own modelling code is refused by transformers) and every ``torch.load`` of a
``pytorch_model.bin`` is forced weights-only; safetensors weights hold no code at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from reprdiag.errors import InputError, UsageError, first_line
from reprdiag.models.archive import weights_only_loads
from reprdiag.models.probes import OUTPUT, Batch

PREFIX = "hidden."


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over tokens where ``mask`` is 1: (B, T, d), (B, T) → (B, d).

    >>> h = torch.tensor([[[1.0], [3.0], [100.0]]]); masked_mean(h, torch.tensor([[1, 1, 0]]))
    tensor([[2.]])
    """
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise UsageError("hf: models need the optional transformers package",
                         hint="pip install 'reprdiag[hf]'") from exc
    return transformers


class HFProbe:
    """Hidden states of a local Hugging Face encoder, pooled per example."""

    def __init__(self, folder: str, spec: str):
        self.spec = spec
        if not Path(folder).is_dir():
            raise InputError("no such model folder", source=spec,
                             hint="hf:PATH names a local folder holding config.json")
        tf = _transformers()
        safe = {"local_files_only": True, "trust_remote_code": False}
        try:
            with weights_only_loads():
                self.tokenizer = tf.AutoTokenizer.from_pretrained(folder, **safe)
                self.module = tf.AutoModel.from_pretrained(folder, **safe)
        except Exception as exc:
            raise InputError(f"cannot load the Hugging Face model ({type(exc).__name__}: "
                             f"{first_line(exc, 200)})", source=spec,
                             hint="the folder needs config.json, weights and a tokenizer"
                             ) from exc
        self.float_dtype = None  # inputs are token ids
        self.depth = int(self.module.config.num_hidden_layers)
        self.first_token = False

    def set_pool(self, pool: str | None) -> None:
        """``None``/``mean``: masked mean over tokens; ``first``: the first token."""
        if pool not in (None, "mean", "first"):
            raise UsageError(f"--pool {pool} does not apply to hidden states of padded text",
                             source=self.spec, hint="use --pool mean (default) or first")
        self.first_token = pool == "first"

    def layer_names(self) -> list[str]:
        return [f"{PREFIX}{i}" for i in range(self.depth + 1)]

    def _index(self, name: str) -> int:
        return self.depth if name == OUTPUT else int(name.removeprefix(PREFIX))

    def run(self, batch: Batch, layers: Sequence[str],
            strict: bool = True) -> dict[str, torch.Tensor]:
        texts = [str(t) for t in batch]
        device = next(self.module.parameters()).device
        enc = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(device)
        hidden = self.module(**enc, output_hidden_states=True).hidden_states
        out = {}
        for name in layers:
            h = hidden[self._index(name)]
            out[name] = h[:, 0] if self.first_token else masked_mean(h, enc["attention_mask"])
        return out
