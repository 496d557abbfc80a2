"""Writes weight files in the Keras 1.2 ``save_weights`` layout of the original port.

Root attribute ``layer_names``; one group per layer with attribute ``weight_names`` (``conv1_1_W:0``,
``conv1_1_b:0``, ``conv4_3_norm_gamma:0``) and one dataset per weight, kernels (kh, kw, in, out).
"""

from __future__ import annotations

import h5py
import numpy as np

SUFFIXES = {1: ["gamma"], 2: ["W", "b"]}


def random_legacy_weights(model, seed: int = 0, scale: float = 0.05) -> dict[str, list[np.ndarray]]:
    """Random arrays shaped like every weighted layer of ``model`` (legacy order), by layer name."""
    rng = np.random.default_rng(seed)
    weights = {}
    for layer in model.layers:
        variables = layer.trainable_weights + layer.non_trainable_weights
        if variables:
            weights[layer.name] = [rng.normal(0, scale, tuple(v.shape)).astype(np.float32)
                                   for v in variables]
    return weights


def write_legacy_h5(path, model, weights: dict[str, list[np.ndarray]],
                    whole_model: bool = False, compression: str | None = None) -> None:
    """Writes ``weights`` with every layer of ``model`` listed, as Keras 1.2 did.

    Layers of ``weights`` that the model lacks are written too (after the model's layers), so a
    file can hold heads of another class count. ``whole_model`` nests everything under
    ``model_weights`` as in a file saved with ``model.save``.
    """
    names = [layer.name for layer in model.layers]
    names += [n for n in weights if n not in names]
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if whole_model else f
        root.attrs["layer_names"] = [n.encode("utf8") for n in names]
        root.attrs["backend"] = b"tensorflow"
        for name in names:
            group = root.create_group(name)
            arrays = weights.get(name, [])
            weight_names = [f"{name}_{s}:0" for s in SUFFIXES.get(len(arrays), [])]
            group.attrs["weight_names"] = np.array([w.encode("utf8") for w in weight_names],
                                                   dtype="S64")
            for weight_name, array in zip(weight_names, arrays):
                group.create_dataset(weight_name, data=array, compression=compression)
