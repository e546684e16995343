"""Dropout in the TensorFlow mirror: each rate drives its own sites, attention dropout drops the
probabilities, residual dropout drops the sublayer's output, and every site, micro-batch and step
draws its own seed. (The TF-vs-PyTorch parity tests run with dropout off, so they see none of this.)"""
import numpy as np
import pytest

import tensorflow as tf
import cnbert.tf as ctf
from cnbert.config import AlbertConfig, BertConfig
from cnbert.tf import albert as tf_albert
from cnbert.tf import backend
from cnbert.tf import heads as tf_heads
from cnbert.tf import modeling as tf_modeling
from cnbert.tf.modeling import BertResidualOutput, BertSelfAttention
from cnbert.training import TrainingConfig

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40)
SEED = tf.constant([3, 4], tf.int64)


def batch(n=3, seq=12, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 100, (n, seq))
    mask = (np.arange(seq) < np.array([seq, seq - 4, 5][:n])[:, None]).astype(np.int64)
    return ids * mask, mask


def test_dropout_drops_the_given_fraction_and_rescales_the_rest():
    y = tf_modeling.dropout(tf.ones([200, 500]), 0.1, SEED, site=7).numpy()
    assert abs((y == 0).mean() - 0.1) < 0.01  # rate is the probability to drop (a keep-probability mix-up gives 0.9)
    np.testing.assert_allclose(y[y != 0], 1 / 0.9, rtol=1e-6)


@pytest.mark.parametrize("hidden, attention", [(0.0, 0.3), (0.3, 0.0)])
def test_each_dropout_probability_drives_its_own_sites(hidden, attention):
    model = ctf.BertModel(BertConfig(**TINY, hidden_dropout_prob=hidden, attention_probs_dropout_prob=attention),
                          add_pooling_layer=False)
    ids, mask = batch()
    train = model(ids, attention_mask=mask, training=True, dropout_seed=[1, 2])["sequence_output"].numpy()
    infer = model(ids, attention_mask=mask)["sequence_output"].numpy()
    assert np.abs(train - infer).max() > 1e-3


def test_attention_dropout_drops_probabilities_not_scores():
    """query = key = 0: every probability is 1/6. Dropout of the probabilities leaves the kept ones at
    (1/6)/(1-p); dropout of the scores (all zero) would change nothing."""
    layer = BertSelfAttention(BertConfig(**TINY, attention_probs_dropout_prob=0.5), site=1)
    layer.build((None, None, 32))
    for dense in (layer.query, layer.key):
        dense.kernel.assign(np.zeros(dense.kernel.shape, np.float32))
        dense.bias.assign(np.zeros(dense.bias.shape, np.float32))
    hidden = tf.random.stateless_normal((1, 6, 32), seed=[0, 1])
    got = layer(hidden, None, SEED).numpy()
    probabilities = tf_modeling.dropout(tf.fill([1, 4, 6, 6], 1 / 6), 0.5, SEED, 1)
    values = tf.transpose(tf.reshape(layer.value(hidden), [1, 6, 4, 8]), [0, 2, 1, 3])
    want = tf.reshape(tf.transpose(tf.matmul(probabilities, values), [0, 2, 1, 3]), [1, 6, 32]).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.abs(got - layer(hidden, None).numpy()).max() > 1e-2


def test_residual_dropout_drops_the_sublayer_output_not_the_normalised_sum():
    """With the sublayer's output zero, dropout before the residual sum has nothing to drop."""
    block = BertResidualOutput(BertConfig(**TINY, hidden_dropout_prob=0.5), site=2)
    block.build((None, None, 32))
    hidden = tf.random.stateless_normal((2, 5, 32), seed=[0, 2])
    residual = tf.random.stateless_normal((2, 5, 32), seed=[0, 3])
    assert np.abs(block(hidden, residual, SEED).numpy() - block(hidden, residual).numpy()).max() > 1e-2
    block.dense.kernel.assign(np.zeros((32, 32), np.float32))
    np.testing.assert_array_equal(block(hidden, residual, SEED).numpy(), block(hidden, residual).numpy())


def test_albert_layer_drops_sublayer_outputs_before_the_residual_sums():
    config = AlbertConfig(**TINY, embedding_size=16, hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5)
    layer = tf_albert.AlbertLayer(config, 0)
    layer.build((None, None, 32))
    for dense in (layer.attention_dense, layer.ffn_output):
        dense.kernel.assign(np.zeros(dense.kernel.shape, np.float32))
        dense.bias.assign(np.zeros(dense.bias.shape, np.float32))
    hidden = tf.random.stateless_normal((2, 5, 32), seed=[0, 4])
    np.testing.assert_array_equal(layer(hidden, None, SEED).numpy(), layer(hidden, None).numpy())


def test_training_without_a_seed_draws_fresh_masks_each_call():
    model = ctf.BertModel(BertConfig(**TINY, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3))
    ids, mask = batch()
    first = model(ids, attention_mask=mask, training=True)["sequence_output"].numpy()
    second = model(ids, attention_mask=mask, training=True)["sequence_output"].numpy()
    assert np.abs(first - second).max() > 1e-3


@pytest.mark.parametrize("task", ["lcqmc", "msra_ner"])
def test_classifier_dropout_draws_a_seed_no_other_site_uses(monkeypatch, task):
    seeds = []
    original = tf_modeling.dropout

    def recording(x, rate, seed, site):
        if seed is not None and rate > 0:
            seeds.append(tuple(tf.random.experimental.stateless_fold_in(seed, site).numpy()))
        return original(x, rate, seed, site)

    for module in (tf_modeling, tf_heads):
        monkeypatch.setattr(module, "dropout", recording)
    model = backend.create_model(task, BertConfig(**TINY, hidden_dropout_prob=0.1))[0]
    ids, mask = batch()
    model(ids, attention_mask=mask, training=True, dropout_seed=[3, 4])
    # embeddings, then attention probabilities, attention output and FFN output per layer, then the head
    assert len(seeds) == 1 + 3 * 2 + 1 and len(set(seeds)) == len(seeds)


def test_every_micro_batch_of_every_step_draws_its_own_seed_from_the_run_seed():
    model = ctf.BertForSpanExtraction(BertConfig(**TINY))
    ids, mask = batch(n=3, seq=12)
    arrays = {"input_ids": np.tile(ids, (3, 1))[:8].astype(np.int32),
              "attention_mask": np.tile(mask, (3, 1))[:8].astype(np.int32)}
    arrays["token_type_ids"] = np.zeros_like(arrays["input_ids"])

    def seeds(run_seed):
        trainer = ctf.Trainer(model, TrainingConfig(train_batch_size=8, gradient_accumulation_steps=2, seed=run_seed),
                              "drcd", show_progress=False, jit_compile=False)
        return [tuple(s) for step in range(3) for s in trainer._replica_inputs(arrays, np.arange(8), step, 4)[2]]

    first = seeds(1)
    assert len(first) == 6 and len(set(first)) == 6  # 3 steps x 2 micro-batches
    assert set(first).isdisjoint(seeds(2))  # another --seeds value, other masks
