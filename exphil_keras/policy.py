"""The Melee policy: per-frame embeddings -> backbone -> one logits head per controller target.

`build_policy` returns a compiled `PolicyModel` (a keras-hub-style functional subclass whose
config is its constructor arguments), ready for `model.fit(ds)` on `slippi_windows` batches, and
for the agent through `initial_state` / `step` / `sample_step`, which equal the windowed forward
frame by frame.

Heads are independent (each head reads the backbone output alone) or autoregressive (each head
also reads the classes of the heads before it, in `AUTOREGRESSIVE_ORDER`). An autoregressive
model is conditioned on the targets (teacher forcing) when its inputs dict holds them, under
the targets' own names: `train_step` and `test_step` add them from `(inputs, targets)` batches,
so `fit` and `evaluate` score the NLL of the whole action, as for independent heads, and
`with_targets` does it for `predict`. Without them (`predict(inputs)`, `serve`) each head is
conditioned on the greedy classes before it; `sample_step` draws them.
"""

import functools

import keras
import numpy as np
from keras import ops
from keras.src.losses.loss import scale_loss_for_distribution
from keras_hub.src.utils import preset_utils

from exphil_keras import architectures, backbones, features, preset_files
from exphil_keras.ops import compile_function, device_kind

EMBEDDING_WIDTHS = {"action": 32, "character": 8, "stage": 4}  # one table per id kind
HEAD_HIDDEN_SIZE = 64
LOGIT_CLIP = 60.0
# The autoregressive heads' order, by measurement (bench/head_order.py): buttons first, so the
# analog shoulder follows its L/R press and the stick follows the jump; main_y given main_x.
# Validation NLL of per-frame MLPs, same data and steps: independent 1.235, this order 1.073,
# HAL's (shoulder, c-stick, main stick, buttons) 1.109, main stick first 1.094.
AUTOREGRESSIVE_ORDER = ("buttons", "main_x", "main_y", "c_x", "c_y", "shoulder")
# One uniform random number per button and per categorical head, in the controller's column
# order (features.CONTROLLER_FEATURES): buttons 0-7, main_x, main_y, c_x, c_y, shoulder.
NUM_UNIFORMS = features.NUM_CONTROLLER_FEATURES
UNIFORM_COLUMNS = {
    "buttons": slice(0, 8),
    **{head: 8 + i for i, head in enumerate((*features.STICK_AXES, "shoulder"))},
}


def _id_kind(name):
    """The id kind of an input, e.g. "ego_nana_action" -> "action"; a kind shares one table."""
    return name.rsplit("_", 1)[-1]


# (prev_input column, lowest value, classes): the sticks span [-1, 1], the shoulder [0, 1].
PREVIOUS_INPUT_CLASSES = [
    *((8 + i, -1.0, features.STICK_BUCKETS) for i in range(len(features.STICK_AXES))),
    (12, 0.0, features.SHOULDER_BUCKETS),
]


def previous_input_classes(prev_input):
    """One-hot classes of the previous input's sticks and shoulder, as the heads discretise them.

    Like ExPhil's controller embedding: "press what I pressed" becomes one weight per class
    instead of a sharp function of the raw stick value, so the policy learns it in few steps.
    The bucketing is `features.discretise_controller`'s (round half up), in keras.ops.
    """
    x = ops.cast(prev_input, "float32")
    parts = []
    for column, low, classes in PREVIOUS_INPUT_CLASSES:
        value = ops.clip(x[..., column], low, 1.0)  # as features.encode_controller clips
        index = ops.floor((value - low) / (1.0 - low) * (classes - 1) + 0.5)
        parts.append(ops.one_hot(ops.cast(index, "int32"), classes))
    return ops.concatenate(parts, axis=-1)


class FrameEncoder(keras.layers.Layer):
    """Inputs dict [..., F] / [...] -> [..., hidden]: embeddings + continuous features, projected.

    Works on windows [B, T, ...] and single frames [B, ...] alike; ids are clipped to the table.
    """

    def __init__(self, hidden_size, **kwargs):
        super().__init__(**kwargs)
        self.embeddings = {}
        for kind, width in EMBEDDING_WIDTHS.items():
            vocabulary = max(
                size for name, size in features.CATEGORICAL_INPUTS.items() if _id_kind(name) == kind
            )
            self.embeddings[kind] = keras.layers.Embedding(
                vocabulary, width, name=f"{kind}_embedding"
            )
        self.projection = keras.layers.Dense(hidden_size, name="projection")

    def call(self, inputs):
        parts = [ops.cast(inputs[name], self.compute_dtype) for name in features.CONTINUOUS_INPUTS]
        parts.append(ops.cast(previous_input_classes(inputs["prev_input"]), self.compute_dtype))
        for name in features.CATEGORICAL_INPUTS:
            embedding = self.embeddings[_id_kind(name)]
            ids = ops.clip(ops.cast(inputs[name], "int32"), 0, embedding.input_dim - 1)
            parts.append(embedding(ids))
        return self.projection(ops.concatenate(parts, axis=-1))


class PolicyHeads(keras.layers.Layer):
    """[..., hidden] -> {head: logits [..., classes]}: per head Dense(64, relu), Dense(classes)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden_layers = [
            keras.layers.Dense(HEAD_HIDDEN_SIZE, activation="relu", name=f"{head}_hidden")
            for head in features.TARGETS
        ]
        self.logit_layers = [
            keras.layers.Dense(classes, name=f"{head}_logits")
            for head, classes in features.TARGETS.items()
        ]

    def call(self, x):
        return {
            head: logits(hidden(x))
            for head, hidden, logits in zip(
                features.TARGETS, self.hidden_layers, self.logit_layers, strict=True
            )
        }

    def sample(self, x, uniforms, temperature):
        """-> (action, logits): every head drawn from its own logits (`draw`)."""
        logits = self(x)
        action = {head: draw(head, z, uniforms, temperature) for head, z in logits.items()}
        return action, logits


def greedy(head, logits):
    """The most likely class: buttons float32 0/1 [..., 8] (logit > 0), else int32 [...]."""
    if head == "buttons":
        return ops.cast(logits > 0, "float32")
    # The first maximum, found on ints: keras's float argmax bitcasts (to order -0.0 below 0.0),
    # an op tf2onnx cannot convert.
    is_max = ops.cast(logits >= ops.max(logits, axis=-1, keepdims=True), "int32")
    return ops.cast(ops.argmax(is_max, axis=-1), "int32")


def draw(head, logits, uniforms, temperature):
    """One head's classes drawn at `temperature` from `uniforms` [..., NUM_UNIFORMS] in [0, 1).

    Buttons: pressed where u < sigmoid(z / T); the other heads: the inverse CDF of softmax(z / T)
    at u. Temperature 0 is `greedy`, whatever the uniforms. Exported graphs take the uniforms as
    inputs, so they draw exactly what Keras draws from the same numbers.
    """
    z = ops.cast(logits, "float32")
    temperature = ops.cast(temperature, "float32")
    hot = temperature > 0
    scaled = z / ops.where(hot, temperature, 1.0)
    u = ops.cast(uniforms[..., UNIFORM_COLUMNS[head]], "float32")
    if head == "buttons":
        return ops.where(hot, ops.cast(u < ops.sigmoid(scaled), "float32"), greedy(head, z))
    cdf = ops.cumsum(ops.softmax(scaled, axis=-1), axis=-1)
    drawn = ops.sum(ops.cast(cdf < u[..., None], "int32"), axis=-1)  # rounding may leave cdf < 1
    drawn = ops.minimum(drawn, features.TARGETS[head] - 1)
    return ops.where(hot, drawn, greedy(head, z))


def _encode_choice(head, classes, dtype):
    """A head's classes as the next heads read them: buttons 0/1, the others one-hot."""
    if head == "buttons":
        return ops.cast(classes, dtype)
    return ops.one_hot(ops.cast(classes, "int32"), features.TARGETS[head], dtype=dtype)


class AutoregressiveHeads(keras.layers.Layer):
    """[..., hidden] -> {head: logits}, each head conditioned on the heads before it in `order`.

    Head k reads concat(x, classes of heads 0..k-1) (buttons as 0/1, the others one-hot) through
    Dense(64, relu) -> logits: given classes (`teacher`, teacher forcing), else the greedy ones.
    """

    def __init__(self, order=AUTOREGRESSIVE_ORDER, **kwargs):
        super().__init__(**kwargs)
        if sorted(order) != sorted(features.TARGETS):
            raise ValueError(f"head order {order}: must name each of {list(features.TARGETS)}")
        self.order = tuple(order)
        self.hidden_layers = {
            head: keras.layers.Dense(HEAD_HIDDEN_SIZE, activation="relu", name=f"{head}_hidden")
            for head in self.order
        }
        self.logit_layers = {
            head: keras.layers.Dense(features.TARGETS[head], name=f"{head}_logits")
            for head in self.order
        }

    def call(self, x, teacher=None):
        teacher = teacher or {}

        def choose(head, logits):
            return teacher[head] if head in teacher else greedy(head, logits)

        return self._run(x, choose)[1]

    def sample(self, x, uniforms, temperature):
        """-> (action, logits): each head drawn (`draw`) given the classes drawn before it."""
        return self._run(x, lambda head, z: draw(head, z, uniforms, temperature))

    def _run(self, x, choose):
        action, logits, previous = {}, {}, []
        for head in self.order:
            inputs = ops.concatenate([x, *previous], axis=-1) if previous else x
            logits[head] = self.logit_layers[head](self.hidden_layers[head](inputs))
            action[head] = choose(head, logits[head])
            previous.append(_encode_choice(head, action[head], self.compute_dtype))
        return (
            {head: action[head] for head in features.TARGETS},
            {head: logits[head] for head in features.TARGETS},
        )

    def get_config(self):
        return {**super().get_config(), "order": list(self.order)}


def head_losses(targets, logits, label_smoothing=0.0):
    """{head: float32 loss per position [B, T] (or [B])}; logits clamped to +-LOGIT_CLIP.

    buttons: binary cross-entropy averaged over the 8 buttons (never smoothed); the other heads:
    categorical cross-entropy against targets smoothed by `label_smoothing`.
    """
    losses = {}
    for head, classes in features.TARGETS.items():
        z = ops.clip(ops.cast(logits[head], "float32"), -LOGIT_CLIP, LOGIT_CLIP)
        target = targets[head]
        if head == "buttons":
            bce = ops.binary_crossentropy(ops.cast(target, "float32"), z, from_logits=True)
            losses[head] = ops.mean(bce, axis=-1)
        else:
            one_hot = ops.one_hot(ops.cast(target, "int32"), classes, dtype="float32")
            smoothed = one_hot * (1.0 - label_smoothing) + label_smoothing / classes
            losses[head] = -ops.sum(smoothed * ops.log_softmax(z, axis=-1), axis=-1)
    return losses


def head_accuracies(targets, logits):
    """{head: 1.0 where the argmax is right [B, T]}; buttons: all 8 right at threshold 0.5."""
    accuracies = {}
    for head in features.TARGETS:
        z = ops.cast(logits[head], "float32")
        if head == "buttons":
            correct = ops.all((z > 0) == (ops.cast(targets[head], "float32") > 0.5), axis=-1)
        else:
            correct = ops.argmax(z, axis=-1) == ops.cast(targets[head], "int32")
        accuracies[head] = ops.cast(correct, "float32")
    return accuracies


@functools.cache
def _scalar(value):
    """`value` as a float32 tensor, made once: converting it costs JAX ~0.1 ms, a step's third."""
    return ops.convert_to_tensor(value, "float32")


@keras.saving.register_keras_serializable(package="exphil_keras")
class PolicyModel(keras.Model):
    """Inputs dict [B, T, ...] -> {head: logits [B, T, classes]}, with a one-frame `step`.

    Args:
        backbone: one of `exphil_keras.backbones.BACKBONES`.
        window: training window; also the attention span K.
        hidden_size, num_layers, state_size, num_heads, expand, conv_size, attention_every: the
            backbone's knobs (each backbone takes the ones it has).
        label_smoothing: on the categorical heads' training loss only.
        heads: "independent" or "autoregressive" (see the module's docstring).
        head_order: the autoregressive heads' order (default `AUTOREGRESSIVE_ORDER`).
    """

    def __init__(
        self,
        backbone="jamba",
        window=60,
        hidden_size=256,
        num_layers=2,
        state_size=16,
        num_heads=4,
        expand=2,
        conv_size=4,
        attention_every=2,
        label_smoothing=0.0,
        heads="independent",
        head_order=None,
        **kwargs,
    ):
        if heads not in architectures.HEADS:
            raise ValueError(f"heads {heads!r}: choose one of {', '.join(architectures.HEADS)}")
        if heads == "autoregressive":  # a saved config names its order: a later default can't
            head_order = tuple(head_order or AUTOREGRESSIVE_ORDER)  # change what it loads as
        elif head_order is not None:
            raise ValueError("head_order: independent heads have no order")
        # === Layers ===
        encoder = FrameEncoder(hidden_size, name="frame_encoder")
        backbone_layer = backbones.build(
            backbone,
            hidden_size=hidden_size,
            num_layers=num_layers,
            state_size=state_size,
            num_heads=num_heads,
            expand=expand,
            conv_size=conv_size,
            window=window,
            attention_every=attention_every,
            name="backbone",
        )
        if heads == "autoregressive":
            head_layer = AutoregressiveHeads(head_order, name="heads")
        else:
            head_layer = PolicyHeads(name="heads")

        # === Functional model ===
        inputs = {
            name: keras.Input((None, width), name=name)
            for name, width in features.CONTINUOUS_INPUTS.items()
        }
        inputs |= {
            name: keras.Input((None,), dtype="int32", name=name)
            for name in features.CATEGORICAL_INPUTS
        }
        outputs = head_layer(backbone_layer(encoder(inputs)))
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        self.backbone_name = backbone
        self.window = window
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.state_size = state_size
        self.num_heads = num_heads
        self.expand = expand
        self.conv_size = conv_size
        self.attention_every = attention_every
        self.label_smoothing = label_smoothing
        self.head_kind = heads
        self.head_order = head_order
        self.encoder = encoder
        self.backbone = backbone_layer
        self.heads = head_layer
        self.last_loss_tracker = keras.metrics.Mean(name="last_loss")
        self.accuracy_trackers = {
            h: keras.metrics.Mean(name=f"{h}_accuracy") for h in features.TARGETS
        }
        self.nll_trackers = {h: keras.metrics.Mean(name=f"{h}_nll") for h in features.TARGETS}
        self._compiled_step = None

    def compile(self, *args, jit_compile="auto", **kwargs):
        """Keras's `jit_compile="auto"`, except that TensorFlow on a CPU, which Keras keeps out of
        XLA, compiles the backbones that train faster so (`Architecture.xla_on_cpu`); under
        tf.distribute Keras still decides."""
        on_tensorflow_cpu = keras.backend.backend() == "tensorflow" and device_kind() == "cpu"
        if jit_compile == "auto" and on_tensorflow_cpu and self._distribute_strategy is None:
            jit_compile = architectures.get(self.backbone_name).xla_on_cpu
        super().compile(*args, jit_compile=jit_compile, **kwargs)

    def call(self, inputs, training=None, mask=None):
        """Independent heads: the functional graph. Autoregressive: the same layers, with the
        heads conditioned on whichever targets `inputs` holds (see `with_targets`)."""
        if self.head_kind == "independent":
            return super().call(inputs, training=training, mask=mask)
        hidden = self.backbone(self.encoder(inputs), training=training)
        return self.heads(hidden, {h: inputs[h] for h in features.TARGETS if h in inputs})

    def with_targets(self, inputs, targets):
        """The inputs that make the model score `targets`: an autoregressive model's heads are
        conditioned on them (teacher forcing); independent heads need nothing more."""
        if self.head_kind == "independent":
            return inputs
        return {**inputs, **{head: targets[head] for head in features.TARGETS}}

    def train_step(self, *args):
        # (data) on TensorFlow and torch, (state, data) on JAX: the batch is the last argument.
        return super().train_step(*args[:-1], self._teacher_forced(args[-1]))

    def test_step(self, *args):
        return super().test_step(*args[:-1], self._teacher_forced(args[-1]))

    def _teacher_forced(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is not None:
            x = self.with_targets(x, y)
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Sum over heads of the loss averaged over all positions, in float32."""
        if sample_weight is not None:
            raise ValueError(
                "PolicyModel weighs every position equally; sample weights unsupported"
            )
        losses = head_losses(y, y_pred, self.label_smoothing)
        # Under tf.distribute each replica's loss is scaled by 1 / replicas, as Keras does for
        # its compiled losses (there is no public alias); a no-op on one device and on JAX.
        return scale_loss_for_distribution(sum(ops.mean(loss) for loss in losses.values()))

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """last_loss (no smoothing, last position: seed-comparable), per-head NLL and accuracy."""
        nlls = head_losses(y, y_pred)
        self.last_loss_tracker.update_state(sum(nll[:, -1] for nll in nlls.values()))
        for head, accuracy in head_accuracies(y, y_pred).items():
            self.accuracy_trackers[head].update_state(accuracy)
            self.nll_trackers[head].update_state(nlls[head])
        return self.get_metrics_result()

    def initial_state(self, batch_size):
        """The backbone's streaming state before the first frame (nested tensors)."""
        return self.backbone.initial_state(batch_size)

    def step(self, frame_inputs, state):
        """One frame (the inputs dict at one time index, [B, ...]) -> ({head: [B, classes]}, state):
        the logits of the greedy decision (`sample_step` at temperature 0).

        Compiled on first use (XLA on TensorFlow, jit on JAX); equals the windowed forward.
        """
        uniforms = np.full((len(frame_inputs["prev_input"]), NUM_UNIFORMS), 0.5, "float32")
        _, logits, state = self.sample_step(frame_inputs, state, uniforms)
        return logits, state

    def sample_step(self, frame_inputs, state, uniforms, temperature=0.0):
        """One frame, its decision drawn -> (action, logits, state).

        `uniforms`: [B, NUM_UNIFORMS] in [0, 1), one per button and categorical head (`draw`);
        temperature 0 is greedy. `action` is in the targets' form ({"buttons": float32 0/1
        [B, 8], stick and shoulder heads: int32 classes [B]}); an autoregressive head's logits are
        conditioned on the classes drawn before it. Stepping a window with the classes drawn
        equals the windowed forward given them as targets.
        """
        if self._compiled_step is None:
            self._compiled_step = compile_function(self._sample_step, self)
        return self._compiled_step(frame_inputs, state, uniforms, _scalar(float(temperature)))

    def _sample_step(self, frame_inputs, state, uniforms, temperature):
        hidden, state = self.backbone.step(self.encoder(frame_inputs), state)
        action, logits = self.heads.sample(hidden, uniforms, temperature)
        return action, logits, state

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": self.backbone_name,
            "window": self.window,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "state_size": self.state_size,
            "num_heads": self.num_heads,
            "expand": self.expand,
            "conv_size": self.conv_size,
            "attention_every": self.attention_every,
            "label_smoothing": self.label_smoothing,
            "heads": self.head_kind,
            "head_order": None if self.head_order is None else list(self.head_order),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """A PolicyModel from a preset: a shipped name, a folder, an `hf://` or `kaggle://` handle.

        keras-hub's `Backbone.from_preset` through its `KerasPresetLoader` (safe mode), but every
        file is checked against the preset's `metadata.json` before it is parsed; any problem
        with a file is a ValueError naming it. `kwargs` go to the loader (e.g. `dtype`).
        """
        files = preset_files.PresetFiles(preset)
        config = files.json(preset_files.CONFIG_FILE)
        try:
            if not issubclass(preset_utils.check_config_class(config), cls):
                raise ValueError(
                    f"it describes a {config['registered_name']}, not a {cls.__name__}"
                )
            # The weights are loaded below, from the file whose hash was checked.
            model = preset_utils.KerasPresetLoader(files.handle, config).load_backbone(
                cls, load_weights=False, **kwargs
            )
        except (KeyError, TypeError, ValueError) as e:
            where = files.where(preset_files.CONFIG_FILE)
            problem = f"missing key {e}" if isinstance(e, KeyError) else preset_files.one_line(e)
            raise ValueError(f"{where}: not a {cls.__name__} config ({problem})") from None
        if load_weights:
            weights = files.path(preset_files.WEIGHTS_FILE)
            try:
                model.load_weights(weights)
            except Exception as e:  # h5py and Keras raise many kinds for a damaged file
                problem = f"{type(e).__name__}: {preset_files.one_line(e)}"
                raise ValueError(
                    f"{weights}: not readable as this model's weights ({problem})"
                ) from None
        return model


def build_policy(
    backbone="jamba",
    window=60,
    hidden_size=256,
    num_layers=2,
    state_size=16,
    learning_rate=3e-4,
    label_smoothing=0.0,
    jit_compile="auto",
    **backbone_kwargs,
):
    """A compiled `PolicyModel` (Adam at `learning_rate`); `backbone_kwargs` go to PolicyModel."""
    model = PolicyModel(
        backbone=backbone,
        window=window,
        hidden_size=hidden_size,
        num_layers=num_layers,
        state_size=state_size,
        label_smoothing=label_smoothing,
        **backbone_kwargs,
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
    return model


def example_batch(model, batch_size, num_frames=None, seed=0):
    """A random but valid (inputs, targets) numpy batch [batch_size, num_frames or window, ...]."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, num_frames or model.window)
    inputs = {
        name: rng.normal(size=shape + (width,)).astype("float32")
        for name, width in features.CONTINUOUS_INPUTS.items()
    }
    inputs |= {
        name: rng.integers(0, size, shape, dtype="int32")
        for name, size in features.CATEGORICAL_INPUTS.items()
    }
    targets = {
        head: rng.integers(0, 2, shape + (classes,)).astype("float32")
        if head == "buttons"
        else rng.integers(0, classes, shape, dtype="int32")
        for head, classes in features.TARGETS.items()
    }
    return inputs, targets
