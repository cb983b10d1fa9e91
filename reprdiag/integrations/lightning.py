"""PyTorch Lightning callback: spectral metrics of a model's embeddings during training.

Needs ``lightning`` (or the older ``pytorch_lightning``): ``pip install 'reprdiag[lightning]'``.
The embeddings come either from ``training_step``'s returned dict (``key``, default
``"embeddings"``) or from a forward hook on a named submodule (``layer``); with a hook, every
training-mode forward call of that module during one step is captured and the outputs are
concatenated (two augmented views give one 2B-row batch). Every ``every_n_steps`` training
steps the metrics are computed by :class:`~reprdiag.monitor.SpectralMonitor` and sent to
each of the trainer's loggers (TensorBoard, CSV, W&B, ...) as ``{prefix}/{metric}`` at
``trainer.global_step``; the monitor's own CSV (``csv=``) is written as well. Under DDP each
rank monitors its own batches and only rank 0 logs; with ``distributed=True`` (passed on to
the monitor) every evaluation merges all ranks' statistics first, so the logged metrics
describe every rank's embeddings.

>>> cb = SpectralMonitorCallback(every_n_steps=50, metrics=["vne", "rankme"], layer="encoder")
>>> cb.monitor.every_n_steps, [m.name for m in cb.monitor.infos]
(50, ['vne', 'rankme'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from reprdiag.errors import InputError
from reprdiag.monitor import SpectralMonitor

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pytorch_lightning import Callback, LightningModule, Trainer
    except ImportError as exc:
        raise ImportError("reprdiag.integrations.lightning needs Lightning: "
                          "pip install 'reprdiag[lightning]'") from exc

__all__ = ["SpectralMonitorCallback"]


def _first_tensor(output: Any) -> torch.Tensor | None:
    """The module output itself, or the first tensor of a tuple/list output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Sequence) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


class SpectralMonitorCallback(Callback):
    """Feed a :class:`~reprdiag.monitor.SpectralMonitor` from Lightning's training loop.

    Args:
        every_n_steps, metrics: as for :class:`~reprdiag.monitor.SpectralMonitor`.
        key: the entry of ``training_step``'s returned dict that holds the (B, d) embeddings.
        layer: instead of ``key``, the name of a submodule (``pl_module.get_submodule``)
            whose output is captured by a forward hook.
        log_to_loggers: send each evaluation to ``trainer.loggers``.
        **monitor_options: passed on to the monitor (``csv``, ``tensorboard``, ``window``,
            ``sample_size``, ``nan``, ``options``, ``prefix``, ...).
    """

    def __init__(self, every_n_steps: int = 100, metrics: Sequence[str] | None = None, *,
                 key: str = "embeddings", layer: str | None = None,
                 log_to_loggers: bool = True, **monitor_options: Any):
        super().__init__()
        self.monitor = SpectralMonitor(every_n_steps, metrics, **monitor_options)
        self.key, self.layer, self.log_to_loggers = key, layer, log_to_loggers
        self._captured: list[torch.Tensor] = []
        self._hook: torch.utils.hooks.RemovableHandle | None = None

    # -- capture ----------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.layer is not None and self._hook is None:
            try:
                module = pl_module.get_submodule(self.layer)
            except AttributeError as exc:
                raise InputError(f"the model has no submodule {self.layer!r}",
                                 hint="name one of pl_module.named_modules()") from exc
            self._hook = module.register_forward_hook(self._capture)

    def _capture(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        tensor = _first_tensor(output)
        if module.training and tensor is not None:
            self._captured.append(tensor.detach().reshape(-1, tensor.shape[-1])
                                  if tensor.ndim > 2 else tensor.detach())

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._captured.clear()

    def _embeddings(self, outputs: Any) -> torch.Tensor:
        if self.layer is not None:
            if not self._captured:
                raise InputError(f"layer {self.layer!r} produced no tensor in this step",
                                 hint="check the layer name and that it runs in training_step")
            return torch.cat(self._captured) if len(self._captured) > 1 else self._captured[0]
        if isinstance(outputs, dict) and isinstance(outputs.get(self.key), torch.Tensor):
            return outputs[self.key]
        raise InputError(f"training_step did not return a dict with a {self.key!r} tensor",
                         hint=f"return {{'loss': loss, {self.key!r}: z}} or pass layer=...")

    # -- logging ----------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        row = self.monitor.update(self._embeddings(outputs), step=trainer.global_step)
        self._captured.clear()
        if row is not None:
            self._send(trainer, row)

    def _send(self, trainer: Trainer, row: dict[str, float]) -> None:
        if not (self.log_to_loggers and trainer.is_global_zero):
            return
        names = [m.name for m in self.monitor.infos]
        scalars = {f"{self.monitor.prefix}/{n}": float(row[n]) for n in names}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=int(row["step"]))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        row = self.monitor.log()  # the unfinished window, if any
        if row is not None:
            self._send(trainer, row)
        self.monitor.close(flush=False)
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
