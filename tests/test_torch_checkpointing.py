"""Gradient checkpointing in the PyTorch encoders (BERT and both ALBERT layouts): each layer runs
twice per training step (forward and recomputation), and with dropout on, the loss and every
gradient are bitwise those of the plain model (the recomputation redraws the same dropout masks)."""
import functools

import numpy as np
import pytest
import torch
import torch.utils.checkpoint

from cnbert.config import AlbertConfig, BertConfig
from cnbert.torch import (
    AlbertForCJRC,
    BertForCJRC,
    BertForSpanExtraction,
    cjrc_loss,
    set_gradient_checkpointing,
    span_loss,
)
from cnbert.torch import modeling
from cnbert.torch.trainer import Trainer
from cnbert.training import TrainingConfig
from model_helpers import padded_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DROPOUT = dict(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
BERT = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=32, **DROPOUT)
ALBERT_SIZES = dict(vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=32, **DROPOUT)
ALBERT = {
    "albert": AlbertConfig(**ALBERT_SIZES, num_hidden_groups=2, inner_group_num=2),  # 4 layers from 2 groups
    "factorized_word": AlbertConfig(**ALBERT_SIZES, embedding_layout="factorized_word"),  # one shared layer
}


def batch():
    return padded_batch(vocab_size=100, lengths=(16, 11, 16), seq_length=16, segment_b_start=6)


def cjrc_model(model_class, config):
    torch.manual_seed(0)
    return model_class(config).train()


def count_calls(modules):
    """Calls of each module's forward (forward pass and any recomputation), by module."""
    calls = {}

    def hook(module, args):
        calls[module] = calls.get(module, 0) + 1

    for module in modules:
        module.register_forward_pre_hook(hook)
    return calls


def loss_and_gradients(model, dropout_seed=123):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(dropout_seed)  # the dropout masks
    loss = cjrc_loss(model(*batch()), torch.tensor([2, 4, 0]), torch.tensor([5, 4, 0]), torch.tensor([0, 1, 3]))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_identical(checkpointed, plain):
    loss, gradients = checkpointed
    plain_loss, plain_gradients = plain
    assert torch.equal(loss, plain_loss), (loss, plain_loss)
    assert gradients.keys() == plain_gradients.keys()
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, plain_gradients[name], rtol=0, atol=0, msg=name)


def check_checkpointing(model, layers, applications):
    """Plain vs checkpointed step on one model: same loss and gradients; `layers` (modules) are
    called `applications[module]` times per step without, twice that with checkpointing."""
    calls = count_calls(layers)
    plain = loss_and_gradients(model)
    assert calls == applications
    assert any(g.abs().sum() > 0 for g in plain[1].values())
    different_dropout = loss_and_gradients(model, dropout_seed=124)
    assert not torch.equal(different_dropout[0], plain[0])  # dropout is on: the comparison below means something

    set_gradient_checkpointing(model, True)
    calls.clear()
    checkpointed = loss_and_gradients(model)
    assert calls == {layer: 2 * n for layer, n in applications.items()}  # forward + recomputation
    assert_identical(checkpointed, plain)

    calls.clear()
    with torch.no_grad():
        model(*batch())
    assert calls == applications  # no autograd graph, nothing to recompute
    calls.clear()
    model.eval()
    model(*batch())["start_logits"].sum().backward()
    model.train()
    assert calls == applications  # checkpointing applies only while training

    set_gradient_checkpointing(model, False)
    calls.clear()
    assert_identical(loss_and_gradients(model), plain)
    assert calls == applications


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_bert_checkpointing_recomputes_each_layer_and_gives_identical_gradients(attention):
    model = cjrc_model(BertForCJRC, BERT.replace(attention=attention))
    layers = list(model.bert.encoder.layer)
    check_checkpointing(model, layers, {layer: 1 for layer in layers})


@pytest.mark.parametrize("layout", ["albert", "factorized_word"])
def test_albert_checkpointing_recomputes_each_layer_and_gives_identical_gradients(layout):
    model = cjrc_model(AlbertForCJRC, ALBERT[layout])
    encoder = model.albert.encoder
    if layout == "albert":
        # layers 0-1 run group 0, layers 2-3 group 1; each application is checkpointed on its own
        check_checkpointing(model, list(encoder.albert_layer_groups), {group: 2 for group in encoder.albert_layer_groups})
    else:
        check_checkpointing(model, [encoder.layer_shared], {encoder.layer_shared: 4})


def test_recomputation_that_redraws_dropout_would_be_caught(monkeypatch):
    # The exact comparison above is sensitive to dropout masks: checkpointing without restoring the
    # RNG state gives different gradients (but the same loss, which only the forward pass makes).
    model = cjrc_model(BertForCJRC, BERT)
    plain = loss_and_gradients(model)
    monkeypatch.setattr(modeling, "checkpoint", functools.partial(torch.utils.checkpoint.checkpoint,
                                                                  preserve_rng_state=False))
    set_gradient_checkpointing(model, True)
    loss, gradients = loss_and_gradients(model)
    assert torch.equal(loss, plain[0])
    assert any(not torch.equal(gradients[name], plain[1][name]) for name in gradients)


def test_set_gradient_checkpointing_needs_a_cnbert_encoder():
    set_gradient_checkpointing(torch.nn.Linear(2, 2), False)  # nothing to switch off: fine
    with pytest.raises(ValueError, match="needs a cnbert BERT or ALBERT encoder; Linear has none"):
        set_gradient_checkpointing(torch.nn.Linear(2, 2), True)


def test_trainer_with_gradient_checkpointing_gives_the_same_loss_curve():
    rng = np.random.default_rng(0)
    ids = rng.integers(10, 100, size=(16, 12))
    where = rng.integers(1, 11, size=16)
    ids[np.arange(16), where] = 7
    data = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids),
            "start_positions": where, "end_positions": where}

    def loss_fn(outputs, batch):
        return span_loss(outputs, batch["start_positions"], batch["end_positions"], reduction="none")

    def train(gradient_checkpointing):
        torch.manual_seed(0)
        model = BertForSpanExtraction(BERT.replace(num_hidden_layers=2))
        calls = count_calls(model.bert.encoder.layer)
        config = TrainingConfig(learning_rate=5e-3, num_train_epochs=2, train_batch_size=8, seed=3,
                                gradient_checkpointing=gradient_checkpointing)
        trainer = Trainer(model, config, loss_fn, show_progress=False)
        assert model.bert.encoder.gradient_checkpointing is gradient_checkpointing
        return [loss for _, loss in trainer.fit(data).losses], sum(calls.values())

    plain, plain_calls = train(False)
    checkpointed, checkpointed_calls = train(True)
    assert len(plain) == 4 and plain_calls == 4 * 2  # 4 steps × 2 layers
    assert checkpointed_calls == 2 * plain_calls
    assert checkpointed == plain  # dropout on: identical masks in the recomputation, identical updates
