"""cnbert.tf.ops (blocksparse-style fused ops) against float64 references: values, gradients, XLA."""
import math

import numpy as np
import pytest

import tensorflow as tf
import cnbert.tf.ops as ops

FLOAT32_TOLERANCE = 2e-6  # absolute, on values and gradients of magnitude ~1


def reference_gelu(x, approximate):
    """The textbook formulas in float64 TF ops, differentiated by TF's own autodiff (no custom
    gradient): an independent reference for values and derivatives."""
    if approximate == "none":
        return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))
    if approximate == "tanh":
        return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return x * tf.sigmoid(1.702 * x)


def value_and_grad(fn, *inputs, upstream=None):
    inputs = [tf.convert_to_tensor(v) for v in inputs]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = fn(*inputs)
        weighted = tf.reduce_sum(y * (tf.cast(upstream, y.dtype) if upstream is not None else 1.0))
    return y.numpy(), [g.numpy() for g in tape.gradient(weighted, inputs)]


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(-8, 8, 161), rng.normal(0, 2, 300)])
    return x, rng.normal(0, 1, x.shape)


@pytest.mark.parametrize("approximate", ["none", "tanh", "sigmoid"])
def test_gelu_values_and_gradients_match_float64(points, approximate):
    x, upstream = points
    want, (want_grad,) = value_and_grad(lambda v: reference_gelu(v, approximate), x, upstream=upstream)
    got, (got_grad,) = value_and_grad(lambda v: ops.gelu(v, approximate), x.astype(np.float32), upstream=upstream)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT32_TOLERANCE * 4)  # |x| up to 8
    np.testing.assert_allclose(got_grad, want_grad, rtol=0, atol=FLOAT32_TOLERANCE * 4)
    # float64 in, float64 arithmetic out
    exact, (exact_grad,) = value_and_grad(lambda v: ops.gelu(v, approximate), x, upstream=upstream)
    np.testing.assert_allclose(exact, want, rtol=0, atol=1e-13)
    np.testing.assert_allclose(exact_grad, want_grad, rtol=0, atol=1e-13)


def test_the_variants_differ_as_documented_so_none_replaces_another(points):
    x = tf.constant(points[0])
    exact = ops.gelu(x).numpy()
    assert np.abs(ops.gelu(x, "tanh").numpy() - exact).max() == pytest.approx(4.7e-4, abs=0.2e-4)
    assert np.abs(ops.fast_gelu(x).numpy() - exact).max() == pytest.approx(2.0e-2, abs=0.1e-2)
    with pytest.raises(ValueError, match="approximate"):
        ops.gelu(x, "erf")


@pytest.mark.parametrize("approximate", ["none", "sigmoid"])
def test_bias_gelu_matches_float64_including_the_bias_gradient(approximate):
    rng = np.random.default_rng(1)
    x, bias, upstream = rng.normal(0, 2, (3, 5, 7)), rng.normal(0, 1, 7), rng.normal(0, 1, (3, 5, 7))
    want, want_grads = value_and_grad(lambda v, b: reference_gelu(v + b, approximate), x, bias, upstream=upstream)
    got, got_grads = value_and_grad(lambda v, b: ops.bias_gelu(v, b, approximate), x.astype(np.float32),
                                    bias.astype(np.float32), upstream=upstream)
    np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT32_TOLERANCE * 4)
    np.testing.assert_allclose(got_grads[0], want_grads[0], rtol=0, atol=FLOAT32_TOLERANCE * 4)
    np.testing.assert_allclose(got_grads[1], want_grads[1], rtol=0, atol=FLOAT32_TOLERANCE * 30)  # a sum of 15
    with pytest.raises(ValueError, match="bias must be"):
        ops.bias_gelu(x, bias[:3])


def reference_softmax(x, scale, mask):
    scores = x * scale + np.where(mask, 0.0, -np.inf)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_masked_scaled_softmax_matches_float64_values_and_gradients():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 3, (2, 3, 4, 6))
    mask = np.ones((2, 1, 1, 6), bool)
    mask[0, ..., 4:] = False
    mask[1, ..., 1] = False
    upstream = rng.normal(0, 1, x.shape)
    scale = 0.125
    want = reference_softmax(x, scale, mask)
    # float64 reference gradient by TF autodiff of the plain composition
    _, (want_grad,) = value_and_grad(
        lambda v: tf.nn.softmax(tf.where(mask, v * scale, tf.constant(-1e300, tf.float64)), axis=-1), x, upstream=upstream)
    got, (got_grad,) = value_and_grad(lambda v: ops.softmax(v, scale, mask), x.astype(np.float32), upstream=upstream)
    np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT32_TOLERANCE)
    np.testing.assert_allclose(got_grad, want_grad, rtol=0, atol=FLOAT32_TOLERANCE)
    assert (got[np.broadcast_to(~mask, got.shape)] == 0).all()
    # a 0/1 integer mask means the same; a fully masked row is all zeros (as the PyTorch model and
    # cnbert.kernels give), never NaN, and the other rows are untouched
    np.testing.assert_array_equal(ops.softmax(x.astype(np.float32), scale, mask.astype(np.int32)).numpy(), got)
    rows = np.array([[False] * 4, [True, False, True, True]])
    partly = ops.softmax(tf.ones((2, 4)), 1.0, rows).numpy()
    np.testing.assert_array_equal(partly[0], 0.0)
    np.testing.assert_allclose(partly[1], [1 / 3, 0, 1 / 3, 1 / 3], rtol=1e-6)
    # its scores were replaced by a constant, so no gradient reaches them (autodiff of the
    # composition agrees: tf.where passes none to the masked branch)
    dead = np.zeros((1, 4), bool)
    weights = np.array([[1.0, -2.0, 3.0, 0.5]], np.float32)
    _, (grad,) = value_and_grad(lambda v: ops.softmax(v, 1.0, dead), np.arange(4, dtype=np.float32)[None], upstream=weights)
    np.testing.assert_array_equal(grad, 0.0)


def test_half_precision_inputs_are_computed_in_float32_and_returned_in_their_dtype():
    x = tf.constant(np.linspace(-30, 30, 64).reshape(4, 16), tf.bfloat16)
    for y in (ops.gelu(x), ops.softmax(x, 0.5), ops.bias_gelu(x, tf.zeros(16))):
        assert y.dtype == tf.bfloat16
    # float32 internals: a large-magnitude row still sums to 1 within bf16 rounding
    np.testing.assert_allclose(tf.reduce_sum(tf.cast(ops.softmax(x, 0.5), tf.float32), -1).numpy(), 1.0, atol=1e-2)


def test_xla_compiled_ops_agree_with_eager_values_and_gradients():
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(0, 2, (2, 4, 8)), tf.float32)
    bias = tf.constant(rng.normal(0, 1, 8), tf.float32)
    mask = tf.constant(rng.random((2, 1, 8)) > 0.3)

    def everything(x, bias):
        with tf.GradientTape() as tape:
            tape.watch([x, bias])
            total = (tf.reduce_sum(ops.bias_gelu(x, bias) ** 2) + tf.reduce_sum(ops.gelu(x, "tanh") * x)
                     + tf.reduce_sum(ops.softmax(x, 0.3, mask) * x))
        return [total] + tape.gradient(total, [x, bias])

    eager = everything(x, bias)
    compiled = tf.function(everything, jit_compile=True)(x, bias)
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-5)


def test_bf16_ops_compute_in_float32_and_round_once():
    x = tf.constant(np.linspace(-6, 6, 4 * 96).reshape(4, 96), tf.bfloat16)
    bias = tf.constant(np.linspace(-1, 1, 96), tf.bfloat16)

    def as32(t):
        return tf.cast(t, tf.float32)

    for got, want in ((ops.gelu(x), ops.gelu(as32(x))),
                      (ops.bias_gelu(x, bias), ops.bias_gelu(as32(x), as32(bias))),
                      (ops.softmax(x, 0.7), ops.softmax(as32(x), 0.7))):
        assert got.dtype == tf.bfloat16
        np.testing.assert_array_equal(as32(got).numpy(), as32(tf.cast(want, tf.bfloat16)).numpy())
