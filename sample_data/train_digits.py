"""Train the sample checkpoint: reprdiag.examples.digits on scikit-learn's 8×8 digits.

scikit-learn ships the data set (1,797 images, no download); it is a test extra only. Writes
``digits-mlp.safetensors`` (the weights) and ``digits.safetensors`` (every image as 64 floats,
pixel / 16, key ``inputs``) next to this script. Deterministic on the CPU::

    python sample_data/train_digits.py          # prints the test accuracy
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from torch import nn

from reprdiag.examples.digits import build

HERE = Path(__file__).resolve().parent
EPOCHS, BATCH, LR, SEED = 30, 64, 3e-3, 0


def main() -> None:
    torch.manual_seed(SEED)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))
    test, train = order[:360], order[360:]
    model = build(hidden=128, seed=SEED)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(EPOCHS):
        model.train()
        for idx in train[torch.randperm(len(train))].split(BATCH):
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    print(f"test accuracy {acc:.3f} on {len(test)} held-out images")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(HERE / "digits-mlp.safetensors"),
              metadata={"factory": "reprdiag.examples.digits:build", "hidden": "128",
                        "test_accuracy": f"{acc:.4f}"})
    save_file({"inputs": x}, str(HERE / "digits.safetensors"))
    save_file({"labels": y}, str(HERE / "digits-labels.safetensors"),
              metadata={"source": "sklearn.datasets.load_digits().target, row-aligned with "
                        "digits.safetensors"})


if __name__ == "__main__":
    main()
