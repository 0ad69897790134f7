"""Model builders: the book's MLPs, parameterised by the recipe's [model] section.

Keras 3 APIs only, so the same code runs on the TensorFlow and JAX backends.
Serving runs the exported ONNX graph, so any layer tf2onnx converts would do;
the book's models only need Dense and Dropout.
"""

from __future__ import annotations

from typing import Any

from dlqr.card import get as get_card


def build_model(name: str, model_cfg: dict[str, Any], seed: int | None = None):
    """Build (not compile) the MLP for ``name`` from a recipe's [model] section."""
    import keras

    card = get_card(name)
    regularizer = keras.regularizers.L2(model_cfg["l2"]) if model_cfg.get("l2") else None
    layers: list[Any] = [keras.Input(shape=(card.input_dim,), name="features")]
    if model_cfg.get("input_dropout"):
        layers.append(
            keras.layers.Dropout(float(model_cfg["input_dropout"]), seed=seed, name="input_dropout")
        )
    for i, units in enumerate(model_cfg["hidden"]):
        layers.append(
            keras.layers.Dense(
                int(units),
                activation=model_cfg["activation"],
                kernel_regularizer=regularizer,
                kernel_initializer=keras.initializers.GlorotUniform(seed=None if seed is None else seed + i),
                name=f"hidden_{i}",
            )
        )
        if model_cfg.get("dropout"):
            layers.append(keras.layers.Dropout(float(model_cfg["dropout"]), seed=seed, name=f"dropout_{i}"))
    layers.append(keras.layers.Dense(card.output_dim, activation=card.task.output_activation, name="output"))
    return keras.Sequential(layers, name=name)


def learning_rate(train_cfg: dict[str, Any], steps_per_epoch: int | None = None):
    """The recipe's learning rate: a float, or a cosine decay over all epochs (``lr_schedule = "cosine"``)."""
    import keras

    lr = float(train_cfg["learning_rate"])
    schedule = train_cfg.get("lr_schedule", "constant")
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        if not steps_per_epoch:
            raise ValueError("lr_schedule 'cosine' needs the number of steps per epoch")
        return keras.optimizers.schedules.CosineDecay(
            lr, decay_steps=int(steps_per_epoch) * int(train_cfg["epochs"])
        )
    raise ValueError(f"unknown lr_schedule {schedule!r}; use 'constant' or 'cosine'")


def compile_model(model, name: str, train_cfg: dict[str, Any], steps_per_epoch: int | None = None) -> None:
    """Compile with the recipe's loss/optimizer (and learning-rate schedule) and the task's metrics."""
    import keras

    optimizers = {
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    try:
        opt_cls = optimizers[train_cfg["optimizer"]]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {train_cfg['optimizer']!r}; choose from {sorted(optimizers)}"
        ) from None
    metrics = {
        "regression": [keras.metrics.MeanAbsoluteError(name="mae")],
        "binary": [keras.metrics.BinaryAccuracy(name="accuracy")],
        "multiclass": [keras.metrics.CategoricalAccuracy(name="accuracy")],
    }[get_card(name).task.kind]
    model.compile(
        optimizer=opt_cls(learning_rate=learning_rate(train_cfg, steps_per_epoch)),
        loss=train_cfg["loss"],
        metrics=metrics,
        steps_per_execution=int(train_cfg.get("steps_per_execution", 1)),
    )
