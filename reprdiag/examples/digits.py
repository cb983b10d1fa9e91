"""A small MLP for scikit-learn's 8×8 digits: the model of ``sample_data/digits-mlp.safetensors``.

``sample_data/train_digits.py`` trains it (inputs are pixel values / 16, 64 per image) and
writes the weights; analyze its layers with::

    reprdiag analyze --model reprdiag.examples.digits:build \\
        --weights sample_data/digits-mlp.safetensors --data sample_data/digits.safetensors \\
        --layer fc1 --layer fc2 --layer fc3 --layer head
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """64 → hidden → hidden/2 → hidden/4 → 10, ReLU between the linear layers.

    >>> DigitsMLP()(torch.zeros(3, 64)).shape
    torch.Size([3, 10])
    """

    def __init__(self, hidden: int = 128, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, hidden // 2)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(hidden // 2, hidden // 4)
        self.relu3 = nn.ReLU()
        self.head = nn.Linear(hidden // 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(x.flatten(1)))
        x = self.relu2(self.fc2(x))
        return self.head(self.relu3(self.fc3(x)))


def build(hidden: int = 128, seed: int = 0) -> DigitsMLP:
    """The factory ``--model reprdiag.examples.digits:build`` calls (``--model-arg
    hidden=N``); weights are seeded so an untrained model is reproducible."""
    torch.manual_seed(seed)
    return DigitsMLP(hidden)


def random_inputs(n: int = 200, seed: int = 0) -> torch.Tensor:
    """Seeded uniform inputs in [0, 1) of the digits' shape (n, 64), for tests and doctests."""
    return torch.rand(n, 64, generator=torch.Generator().manual_seed(seed))
