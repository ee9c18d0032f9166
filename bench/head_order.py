"""The autoregressive heads' order, by a short measurement: per-frame MLP policies (hidden 128, the
same games, seed and steps) with independent heads and autoregressive heads in a few orders,
scored by the validation NLL of the whole action (teacher-forced). policy.AUTOREGRESSIVE_ORDER
is the best of them.

    KERAS_BACKEND=jax python bench/head_order.py --replays ../shared/replays

Measured on 30 training games (311k frames), 141k validation frames, 2 epochs, one seed:
independent 1.2348; shoulder, c, main, buttons (HAL's) 1.1088; buttons, main, c, shoulder
1.0734; main, buttons, shoulder, c 1.0938.
"""

import argparse
import time
from pathlib import Path

import keras
import numpy as np

from exphil_keras import baselines, features
from exphil_keras.policy import build_policy

ORDERS = {
    "independent": None,
    "shoulder c main buttons (HAL)": ("shoulder", "c_x", "c_y", "main_x", "main_y", "buttons"),
    "buttons main c shoulder": ("buttons", "main_x", "main_y", "c_x", "c_y", "shoulder"),
    "main buttons shoulder c": ("main_x", "main_y", "buttons", "shoulder", "c_x", "c_y"),
}


def frames(paths):
    """Every perspective's rows as one-frame windows: (inputs, targets) [N, 1, ...]."""
    inputs, targets = [], []
    for path in paths:
        try:
            replay = features.read_replay(path)
        except features.ReplaySkipped:
            continue
        for view in replay.perspectives:
            inputs.append(view.inputs)
            targets.append(view.targets)
    return tuple(
        {k: np.concatenate([part[k] for part in parts])[:, None] for k in parts[0]}
        for parts in (inputs, targets)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replays", required=True)
    parser.add_argument("--games", type=int, default=30, help="training games")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    paths = sorted(Path(args.replays).rglob("*.slp"))
    split = {p: features.split_of(features.sha256_hex(p)) for p in paths}
    train = frames([p for p in paths if split[p] == "train"][: args.games])
    validation = frames([p for p in paths if split[p] == "validation"])
    for name, order in ORDERS.items():
        keras.utils.set_random_seed(0)
        heads = {"heads": "autoregressive", "head_order": order} if order else {}
        model = build_policy("mlp", window=1, hidden_size=128, learning_rate=1e-3, **heads)
        start = time.time()
        model.fit(*train, batch_size=512, epochs=args.epochs, verbose=0)
        logits = model.predict(model.with_targets(*validation), batch_size=4096, verbose=0)
        scores = baselines.head_nll_and_correct(logits, validation[1])
        nll = {head: float(v.mean()) for head, (v, _) in scores.items()}
        per_head = " ".join(f"{head} {v:.4f}" for head, v in nll.items())
        print(f"{name:>30}: NLL {sum(nll.values()):.4f}  {per_head}  ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
