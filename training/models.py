"""MobileNet v1 and ResNet-18 in backend-agnostic Keras 3, for the seed (224x224x3) and edge
(frames x mels x 1) input profiles. One builder per network; fixed layer names; arguments checked first.

Seed profile: the networks as the original study built them (stem stride 2, the standard stride schedule).
Edge profile: a 97x40 log-mel window would shrink to 4x2 after MobileNet's five stride-2 stages, so the
edge builders keep the stem at stride 1 along mel bands and stop halving a dimension once it reaches a floor.
"""
from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import layers

from edge.errors import AuricleError
from training.config import NETWORKS, PROFILES
from training.bn_check import bn_layers, recalibrate
from training.featureset import FeatureSet, model_inputs

# (pointwise filters, stride) of MobileNet v1's 13 depthwise-separable blocks
_MOBILENET_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


def _check(input_shape: Sequence[int], num_classes: int, width: float) -> tuple[int, int, int]:
    if len(tuple(input_shape)) != 3 or any((not isinstance(d, int)) or d <= 0 for d in input_shape):
        raise AuricleError(f"input_shape must be (height, width, channels) positive ints, got {input_shape!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise AuricleError(f"num_classes must be an int >= 2, got {num_classes!r}; a classifier needs two classes")
    if not width > 0:
        raise AuricleError(f"width multiplier must be > 0, got {width!r}")
    return tuple(input_shape)  # type: ignore[return-value]


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise AuricleError(f"profile must be 'seed' or 'edge', got {profile!r}")


def _stride(size: int, want: int, floor: int) -> int:
    """Stride 2 only while the halved size stays >= floor (edge profile keeps small inputs alive)."""
    return want if want == 1 or size // 2 >= floor else 1


def _conv_bn_relu(x, filters: int, kernel: int | tuple[int, int], strides, name: str, bn: float = 0.99):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=bn, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _ds_block(x, filters: int, strides: tuple[int, int], block_id: int, bn: float = 0.99):
    """Depthwise 3x3 + BN + ReLU, then pointwise 1x1 + BN + ReLU."""
    name = f"block{block_id}"
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(momentum=bn, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(momentum=bn, name=f"{name}_pw_bn")(x)
    return layers.ReLU(name=f"{name}_pw_relu")(x)


def build_mobilenet(input_shape: Sequence[int], num_classes: int, *, alpha: float = 1.0, profile: str = "seed",
                    dropout: float = 0.0, floor: int = 4, bn_momentum: float = 0.99) -> keras.Model:
    """MobileNet v1. ``profile="edge"`` uses stem stride (2, 1) and stops halving a side at ``floor``."""
    h, w, c = _check(input_shape, num_classes, alpha)
    _check_profile(profile)
    inputs = keras.Input(shape=(h, w, c), name="input")
    x = inputs
    if profile == "seed":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(x)
        stem = (2, 2)
    else:
        stem = (2, 1)
    x = _conv_bn_relu(x, max(8, int(32 * alpha)), 3, stem, "stem", bn_momentum)
    sh, sw = h // stem[0], w // stem[1]
    for i, (filters, stride) in enumerate(_MOBILENET_BLOCKS, start=1):
        if profile == "edge":
            s = (_stride(sh, stride, floor), _stride(sw, stride, floor))
        else:
            s = (stride, stride)
        sh, sw = max(1, -(-sh // s[0])), max(1, -(-sw // s[1]))
        x = _ds_block(x, max(8, int(filters * alpha)), s, i, bn_momentum)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"mobilenet_{profile}")


def _basic_block(x, filters: int, strides: tuple[int, int], name: str, bn: float = 0.99):
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(momentum=bn, name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(momentum=bn, name=f"{name}_bn2")(y)
    if strides != (1, 1) or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(momentum=bn, name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def build_resnet18(input_shape: Sequence[int], num_classes: int, *, width: float = 1.0, profile: str = "seed",
                   dense_units: int = 256, dropout: float = 0.0, floor: int = 2,
                   bn_momentum: float = 0.99) -> keras.Model:
    """ResNet-18: 7x7/64 stem, 3x3/2 max pool, 4 stages x 2 basic blocks, 2x2 avg pool, flatten,
    two dense ReLU layers, softmax. ``profile="edge"``: a 3x3 stem at stride (2, 1), no max pool, and
    halving stops at ``floor``."""
    h, w, c = _check(input_shape, num_classes, width)
    _check_profile(profile)
    inputs = keras.Input(shape=(h, w, c), name="input")
    x = inputs
    if profile == "seed":
        x = layers.Rescaling(1.0 / 255.0, name="rescale")(x)
        x = _conv_bn_relu(x, int(64 * width), 7, (2, 2), "stem", bn_momentum)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
        sh, sw = -(-h // 4), -(-w // 4)
    else:
        x = _conv_bn_relu(x, int(64 * width), 3, (2, 1), "stem", bn_momentum)
        sh, sw = -(-h // 2), w
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in (1, 2):
            want = 2 if (stage > 1 and block == 1) else 1
            if profile == "edge":
                s = (_stride(sh, want, floor), _stride(sw, want, floor))
            else:
                s = (want, want)
            sh, sw = -(-sh // s[0]), -(-sw // s[1])
            x = _basic_block(x, int(filters * width), s, f"stage{stage}_block{block}", bn_momentum)
    pool = (min(2, sh), min(2, sw))
    x = layers.AveragePooling2D(pool, name="avg_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = layers.Dense(dense_units, activation="relu", name=f"fc{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"resnet18_{profile}")


def build_model(name: str, input_shape: Sequence[int], num_classes: int, *, profile: str,
                width: float = 1.0, dropout: float = 0.0, bn_momentum: float = 0.99) -> keras.Model:
    if not 0.0 < bn_momentum < 1.0:
        raise AuricleError(f"bn_momentum must be in (0, 1), got {bn_momentum!r}")
    if name == "mobilenet":
        return build_mobilenet(input_shape, num_classes, alpha=width, profile=profile, dropout=dropout,
                               bn_momentum=bn_momentum)
    if name == "resnet18":
        return build_resnet18(input_shape, num_classes, width=width, profile=profile, dropout=dropout,
                              bn_momentum=bn_momentum)
    raise AuricleError(f"unknown network {name!r}; choose one of {NETWORKS}")


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass (batch 1): convolutions, depthwise convs and dense layers,
    those of nested models (an ensemble's members) included."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
        elif isinstance(layer, layers.DepthwiseConv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw
        elif isinstance(layer, layers.Conv2D):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            total += out[1] * out[2] * out[3] * kh * kw * cin // layer.groups
        elif isinstance(layer, layers.Dense):
            total += int(layer.input.shape[-1]) * layer.units
    return int(total)


def recalibrate_batchnorm(model: keras.Model, fs: FeatureSet, *, clips: int = 1024, batch_size: int = 64,
                          seed: int = 0) -> int:
    """Re-estimate every BatchNormalization layer's moving mean/variance as the exact average over
    ``clips`` training clips (their centre windows, un-augmented; :func:`training.bn_check.recalibrate`).

    A short, high-learning-rate run leaves the moving averages behind the weights (the model is right in
    training mode and wrong in inference mode); this "precise BN" pass repairs that without training.
    Returns the number of batches used."""
    if not bn_layers(model):
        return 0
    idx = np.random.default_rng(seed).permutation(fs.indices("train"))[:clips]
    recalibrate(model, model_inputs(fs, idx), batch_size=batch_size)
    return -(-len(idx) // batch_size)
