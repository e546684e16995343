"""The useful part of openai/blocksparse's API (gelu variants, bias + GELU, scaled masked softmax)
as TensorFlow 2 functions that XLA fuses.

blocksparse's fused kernels need TF 1.13 and CUDA 10 and cannot run on TensorFlow 2. What they
saved was memory traffic and activation memory: one kernel instead of several element-wise
passes, and a backward that keeps only what it needs. Under `tf.function(jit_compile=True)` XLA
fuses these element-wise chains into single kernels (a bias add and GELU into the matmul's
epilogue or one loop; scale, mask and softmax into one reduction), and `tf.custom_gradient` keeps
the saved-for-backward set minimal:

  softmax       keeps its output y only (dx = scale·y·(dy − Σ dy·y)), never the scores;
  gelu          keeps its input x only (the derivative is recomputed from x in the backward);
  bias_gelu     keeps x and the bias, not x + bias nor the activation.

All arithmetic is done in float32 (float64 for float64 inputs) whatever the input dtype, and the
result is returned in the input dtype: under bf16/fp16 the exponentials, erf and the softmax sum
never run in half precision, at no memory cost once fused.
"""
from __future__ import annotations

import math

import tensorflow as tf

GELU_APPROXIMATIONS = ("none", "tanh", "sigmoid")

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_CUBIC = 0.044715
_SIGMOID_SLOPE = 1.702  # blocksparse's fast_gelu: x·σ(1.702x), up to 2e-2 away from the erf form


def _compute_dtype(dtype: tf.DType) -> tf.DType:
    return tf.float64 if dtype == tf.float64 else tf.float32


def _gelu_and_derivative(z, approximate: str):
    """GELU(z) and dGELU/dz for a float32/float64 tensor z."""
    if approximate == "none":
        cdf = 0.5 * (1.0 + tf.math.erf(z * _SQRT_HALF))
        return z * cdf, cdf + z * _INV_SQRT_2PI * tf.exp(-0.5 * z * z)
    if approximate == "tanh":
        t = tf.tanh(_SQRT_2_OVER_PI * (z + _TANH_CUBIC * z * z * z))
        value = 0.5 * z * (1.0 + t)
        return value, 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_CUBIC * z * z)
    if approximate == "sigmoid":
        s = tf.sigmoid(_SIGMOID_SLOPE * z)
        return z * s, s + _SIGMOID_SLOPE * z * s * (1.0 - s)
    raise ValueError(f"approximate must be one of {GELU_APPROXIMATIONS}, got {approximate!r}")


def gelu(x, approximate: str = "none"):
    """GELU: "none" = exact x·Φ(x) with erf (what Google's "gelu" means), "tanh" = the tanh
    approximation (Hugging Face's gelu_new), "sigmoid" = x·σ(1.702x) (blocksparse's fast_gelu)."""
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {GELU_APPROXIMATIONS}, got {approximate!r}")

    @tf.custom_gradient
    def _gelu(x):
        z = tf.cast(x, _compute_dtype(x.dtype))
        value, _ = _gelu_and_derivative(z, approximate)

        def grad(dy):
            _, derivative = _gelu_and_derivative(tf.cast(x, z.dtype), approximate)
            return tf.cast(tf.cast(dy, z.dtype) * derivative, x.dtype)

        return tf.cast(value, x.dtype), grad

    return _gelu(tf.convert_to_tensor(x))


def fast_gelu(x):
    """blocksparse's fast_gelu, x·σ(1.702x). Never a stand-in for "gelu" (see gelu)."""
    return gelu(x, approximate="sigmoid")


def bias_gelu(x, bias, approximate: str = "none"):
    """gelu(x + bias) for x [..., n] and bias [n]: the FFN's bias add and activation as one fused
    op whose backward keeps x and the bias only."""
    if approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {GELU_APPROXIMATIONS}, got {approximate!r}")
    x = tf.convert_to_tensor(x)
    bias = tf.cast(bias, x.dtype)
    if bias.shape.rank != 1 or (x.shape[-1] is not None and bias.shape[0] != x.shape[-1]):
        raise ValueError(f"bias must be [{x.shape[-1]}] to match x {x.shape}, got {bias.shape}")

    @tf.custom_gradient
    def _bias_gelu(x, bias):
        dtype = _compute_dtype(x.dtype)
        value, _ = _gelu_and_derivative(tf.cast(x, dtype) + tf.cast(bias, dtype), approximate)

        def grad(dy):
            _, derivative = _gelu_and_derivative(tf.cast(x, dtype) + tf.cast(bias, dtype), approximate)
            dz = tf.cast(dy, dtype) * derivative
            dbias = tf.reduce_sum(tf.reshape(dz, [-1, tf.shape(dz)[-1]]), axis=0)
            return tf.cast(dz, x.dtype), tf.cast(dbias, bias.dtype)

        return tf.cast(value, x.dtype), grad

    return _bias_gelu(x, bias)


def softmax(x, scale: float = 1.0, mask=None):
    """softmax(scale·x) over the last axis, with entries where `mask` is False (or 0) given
    probability 0.

    mask: broadcastable to x (e.g. [batch, 1, 1, keys] for attention scores [batch, heads,
    queries, keys]). A row with every entry masked gives all zeros (never NaN), as the PyTorch
    model does with every attention implementation and as cnbert.kernels' softmax does.
    The backward keeps only the output y.
    """
    x = tf.convert_to_tensor(x)
    if mask is not None:
        mask = tf.convert_to_tensor(mask)
        if mask.dtype != tf.bool:
            mask = tf.not_equal(mask, tf.zeros((), mask.dtype))

    @tf.custom_gradient
    def _softmax(x):
        dtype = _compute_dtype(x.dtype)
        scores = tf.cast(x, dtype) * tf.constant(scale, dtype)
        probs = tf.nn.softmax(scores if mask is None else tf.where(mask, scores, tf.constant(dtype.min, dtype)),
                              axis=-1)
        if mask is not None:  # a fully masked row came out uniform: zero it
            probs = tf.where(tf.reduce_any(mask, axis=-1, keepdims=True), probs, tf.zeros((), dtype))
        y = tf.cast(probs, x.dtype)

        def grad(dy):
            # Only y (in the input dtype, the tensor the forward hands on anyway) is kept.
            probs, dy = tf.cast(y, dtype), tf.cast(dy, dtype)
            dx = tf.constant(scale, dtype) * probs * (dy - tf.reduce_sum(dy * probs, axis=-1, keepdims=True))
            if mask is not None:  # masked scores were replaced by a constant: no gradient reaches them
                dx = tf.where(mask, dx, tf.zeros((), dtype))
            return tf.cast(dx, x.dtype)

        return y, grad

    return _softmax(x)
