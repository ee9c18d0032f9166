"""The backbone names and their facts, in one Keras-free table read by the CLI, bench, docs and
tests (and the policy's kinds of heads). Adding a backbone is its file in `backbones/` plus one
row here."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    layer: str  # "module:Class" under exphil_keras.backbones
    kind: str  # what it is, in a few words (the docs' "type" column)
    cost: str  # time per window of T frames
    state: str  # what `step` carries from frame to frame
    parallel: str  # whether the windowed forward is parallel over T
    page: str  # its page under docs/
    # TensorFlow on a CPU trains it faster as one XLA program than as a graph (Keras's "auto"
    # never compiles there); Keras's GRU and LSTM loops run slower under XLA. Measured with
    # bench/train_throughput.py (docs/ARCHITECTURES.md, "Training throughput").
    xla_on_cpu: bool = True


ARCHITECTURES = {
    a.name: a
    for a in (
        Architecture("mlp", "mlp:MLPBackbone", "single frame", "O(H²)", "none", "yes", "MLP.md"),
        Architecture(
            "lstm", "lstm:LSTMBackbone", "recurrent", "O(T·H²)", "h, c per layer",
            "no (sequential in T)", "LSTM.md", xla_on_cpu=False,
        ),
        Architecture(
            "gru", "gru:GRUBackbone", "recurrent", "O(T·H²)", "h per layer",
            "no (sequential in T)", "GRU.md", xla_on_cpu=False,
        ),
        Architecture(
            "attention", "attention:SlidingWindowAttentionBackbone", "sliding-window attention",
            "O(T·K·H + T·H²)", "K/V of the last K frames", "yes", "ATTENTION.md",
        ),
        Architecture(
            "mamba", "mamba:MambaBackbone", "state space", "O(T·E·N + T·H·E)",
            "conv tail + SSM state [E, N]", "partly (scan in T)", "MAMBA.md",
        ),
        Architecture(
            "jamba", "jamba:JambaBackbone", "hybrid (Mamba + attention)",
            "mamba + attention layers", "both kinds", "partly", "JAMBA.md",
        ),
    )
}  # fmt: skip
ALIASES = {"sliding_window": "attention"}  # ExPhil's second name for the attention backbone
NAMES = (*ARCHITECTURES, *ALIASES)  # every name `--backbone` takes
# The policy's heads (`--heads`): each drawn on its own, or each conditioned on those before it.
HEADS = ("independent", "autoregressive")


def get(name: str) -> Architecture:
    """The architecture called `name` (or an alias of it); a ValueError lists the names."""
    name = ALIASES.get(name, name)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(NAMES)}")
    return ARCHITECTURES[name]
