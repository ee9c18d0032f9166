"""Scoring at the last window position: a policy's per-head figures, and the baselines every
policy must beat there: repeat the previous input, and Markov-1 over the heads.

Both baselines read only the previous input (`prev_input`, the controller at frame t) and
predict the targets (the controller at t + action_delay), so they score exactly the frames the
model does.
"""

from __future__ import annotations

import numpy as np

from exphil_keras import features


def repeat_previous_accuracy(prev_input: np.ndarray, targets: dict) -> dict[str, float]:
    """Per-head accuracy of predicting that the input does not change (buttons: all 8 right)."""
    guess = features.discretise_controller(prev_input)
    accuracy = {}
    for head in features.TARGETS:
        right = guess[head] == targets[head]
        accuracy[head] = float(np.mean(right.all(axis=-1) if head == "buttons" else right))
    return accuracy


class Markov1:
    """P(target class | previous input's class) per head, from counts with add-one smoothing.

    Buttons are 8 independent 2 x 2 tables; the sticks and shoulder are [C, C] tables.
    """

    def __init__(self, counts: dict[str, np.ndarray] | None = None):
        self.counts = counts or {
            head: np.zeros((classes, 2, 2) if head == "buttons" else (classes, classes), np.int64)
            for head, classes in features.TARGETS.items()
        }

    def update(self, prev_input: np.ndarray, targets: dict) -> None:
        previous = features.discretise_controller(prev_input)
        for head, table in self.counts.items():
            if head == "buttons":
                for b in range(table.shape[0]):
                    before = previous[head][..., b].astype(int).ravel()
                    after = np.asarray(targets[head])[..., b].astype(int).ravel()
                    np.add.at(table[b], (before, after), 1)
            else:
                np.add.at(table, (previous[head].ravel(), np.asarray(targets[head]).ravel()), 1)

    def probabilities(self, head: str) -> np.ndarray:
        table = self.counts[head] + 1.0
        return table / table.sum(axis=-1, keepdims=True)

    def nll(self, prev_input: np.ndarray, targets: dict) -> dict[str, np.ndarray]:
        """Per-frame NLL per head, in the policy loss's terms (buttons: mean BCE over 8)."""
        previous = features.discretise_controller(prev_input)
        out = {}
        for head in features.TARGETS:
            p = self.probabilities(head)
            if head == "buttons":
                before = previous[head].astype(int)
                after = np.asarray(targets[head]).astype(int)
                per_button = [-np.log(p[b][before[..., b], after[..., b]]) for b in range(8)]
                out[head] = np.mean(per_button, axis=0)
            else:
                out[head] = -np.log(p[previous[head], np.asarray(targets[head])])
        return out

    def to_json(self) -> dict:
        return {head: table.tolist() for head, table in self.counts.items()}

    @classmethod
    def from_json(cls, tables: dict) -> Markov1:
        return cls({head: np.asarray(table, np.int64) for head, table in tables.items()})


def figures(prev_input: np.ndarray, targets: dict, markov: Markov1 | None = None) -> dict:
    """Both baselines on the same frames: `exphil eval`'s "baselines" JSON."""
    result = {
        "repeat_previous": {
            head: {"acc": acc}
            for head, acc in repeat_previous_accuracy(prev_input, targets).items()
        }
    }
    if markov is not None:
        nll = markov.nll(prev_input, targets)
        result["markov1"] = {
            "loss": float(sum(v.mean() for v in nll.values())),
            "heads": {head: {"nll": float(v.mean())} for head, v in nll.items()},
        }
    return result


def _log_softmax(logits):
    z = np.clip(logits.astype(np.float64), -60.0, 60.0)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def head_nll_and_correct(logits: dict, targets: dict) -> dict[str, tuple]:
    """Per-frame (NLL, correct) per head, in the policy loss's terms (float64)."""
    out = {}
    for head in features.TARGETS:
        z, y = logits[head], targets[head]
        if head == "buttons":
            z = np.clip(z.astype(np.float64), -60.0, 60.0)
            bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
            out[head] = (bce.mean(axis=-1), ((z > 0) == (y > 0.5)).all(axis=-1))
        else:
            logp = _log_softmax(z)
            out[head] = (-np.take_along_axis(logp, y[..., None], -1)[..., 0], z.argmax(-1) == y)
    return out


class LastFrames:
    """The last position of each window (the frame that policies are scored on), gathered batch
    by batch: its previous input and targets for the baselines, and the policy's NLL and
    correctness there."""

    def __init__(self):
        self.prev_input, self.targets = [], {head: [] for head in features.TARGETS}
        self.nll = {head: [] for head in features.TARGETS}
        self.correct = {head: [] for head in features.TARGETS}

    def add(self, inputs: dict, targets: dict, logits: dict) -> None:
        """Adds a batch of windows and the policy's logits for them (every position)."""
        last = {head: targets[head][:, -1] for head in features.TARGETS}
        self.prev_input.append(inputs["prev_input"][:, -1])
        scores = head_nll_and_correct({h: np.asarray(v)[:, -1] for h, v in logits.items()}, last)
        for head, (nll, correct) in scores.items():
            self.targets[head].append(last[head])
            self.nll[head].append(nll)
            self.correct[head].append(correct)

    def __len__(self) -> int:
        return sum(len(p) for p in self.prev_input)

    def result(self, markov: Markov1 | None = None) -> dict:
        """`exphil eval`'s JSON: the seed-comparable loss, frames, heads and baselines."""
        heads = {
            h: {
                "nll": float(np.concatenate(self.nll[h]).mean()),
                "acc": float(np.concatenate(self.correct[h]).mean()),
            }
            for h in features.TARGETS
        }
        baselines = figures(
            np.concatenate(self.prev_input),
            {head: np.concatenate(v) for head, v in self.targets.items()},
            markov,
        )
        return {
            "loss": sum(v["nll"] for v in heads.values()),
            "frames": len(self),
            "heads": heads,
            "baselines": baselines,
        }
