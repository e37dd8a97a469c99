#!/usr/bin/env python3
"""Train PAS's LSTM networks in PyTorch on the exact examples `pas models
train --export-examples` wrote, and time each epoch's training pass.

The network, optimiser, batch size, loss and per-epoch sampling mirror
models/src/lstm.rs, read from the manifest.json that the same `pas models
train` run wrote (its hyper_parameters), so the two loops do the same work.
Used by scripts/bench-epoch.sh; prints one JSON object.
"""
import argparse
import json
import time

import numpy as np
import torch
from torch import nn


class Direct(nn.Module):
    """PAS's `lstm`: LSTM encoder, heads for the change and the upper margin,
    which also read the seasonal inputs where the examples have them."""

    def __init__(self, hp, seasonal):
        super().__init__()
        self.h = hp["horizon"]
        self.lstm = nn.LSTM(2, hp["hidden"], num_layers=hp["layers"], batch_first=True)
        self.head = nn.Linear(hp["hidden"] + seasonal, 2 * self.h)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x, last, seasonal=None):
        out, _ = self.lstm(x)
        state = out[:, -1] if seasonal is None else torch.cat([out[:, -1], seasonal], 1)
        heads = self.head(state)
        point = heads[:, : self.h] + last
        upper = point + nn.functional.softplus(heads[:, self.h :])
        return point, upper


class EncoderDecoder(nn.Module):
    """The older system's network (`lstm-seed`)."""

    def __init__(self, hp):
        super().__init__()
        self.h = hp["horizon"]
        hidden = hp["hidden"]
        self.encoder = nn.LSTM(1, hidden, num_layers=hp["layers"], batch_first=True)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.dense = nn.Linear(hidden, hp["dense"])
        self.out = nn.Linear(hp["dense"], 1)

    def forward(self, x, last, seasonal=None):
        enc, _ = self.encoder(x)
        state = enc[:, -1].unsqueeze(1).repeat(1, self.h, 1)
        dec, _ = self.decoder(state)
        return self.out(torch.relu(self.dense(dec))).squeeze(-1), None


def loss_of(hp, point, upper, y):
    if hp["loss"] == "squared-error":
        return nn.functional.mse_loss(point, y)
    q = hp["quantile"]
    diff = y - upper
    pinball = torch.maximum(diff * q, diff * (q - 1.0)).mean()
    return (point - y).abs().mean() + pinball


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--examples", required=True, help=".npz from pas models train --export-examples")
    ap.add_argument("--manifest", required=True, help="manifest.json of the same run")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    hp = json.load(open(args.manifest))["hyper_parameters"]
    data = np.load(args.examples)
    x, y, last = (torch.from_numpy(data[k]).float() for k in ("x", "y", "last"))
    seasonal = torch.from_numpy(data["seasonal"]).float() if "seasonal" in data else None
    features = 0 if seasonal is None else seasonal.shape[1]
    model = Direct(hp, features) if hp["architecture"] == "direct" else EncoderDecoder(hp)
    opt = torch.optim.Adam(model.parameters(), lr=hp["learning_rate"])
    rng = np.random.default_rng(hp["seed"])
    n = x.shape[0]
    per_epoch = min(hp["max_examples"], n) if hp["max_examples"] > 0 else n
    seconds, losses = [], []
    for _ in range(args.epochs):
        started = time.perf_counter()
        order = torch.from_numpy(rng.permutation(n)[:per_epoch])
        total, batches = 0.0, 0
        for chunk in torch.split(order, hp["batch_size"]):
            extra = None if seasonal is None else seasonal.index_select(0, chunk)
            point, upper = model(x.index_select(0, chunk), last.index_select(0, chunk), extra)
            loss = loss_of(hp, point, upper, y.index_select(0, chunk))
            opt.zero_grad()
            loss.backward()
            if hp["clip_norm"] > 0:
                nn.utils.clip_grad_norm_(model.parameters(), hp["clip_norm"])
            opt.step()
            total += loss.item()
            batches += 1
        seconds.append(time.perf_counter() - started)
        losses.append(total / max(batches, 1))
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "examples": n,
        "epochs": args.epochs,
        "seconds_per_epoch": sum(seconds) / len(seconds),
        "losses": losses,
    }))


if __name__ == "__main__":
    main()
