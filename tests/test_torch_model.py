"""The PyTorch encoder and heads against transformers' BertForQuestionAnswering (the reference)."""
import math

import pytest
import torch

from cnbert.checkpoints import bert_parameter_shapes
from cnbert.config import BertConfig
from cnbert.torch import (
    ANSWER_CLASSES,
    IGNORE_INDEX,
    BertForCJRC,
    BertForSpanExtraction,
    BertModel,
    cjrc_loss,
    eager_attention,
    fused_attention,
    from_pretrained,
    sdpa_attention,
    span_loss,
)
from kernel_testing import needs_extension
from model_helpers import (TINY_BERT, assert_fused_matches_eager, assert_padding_does_not_leak, count_kernel_calls, assert_same_logits, fixed_batch_losses, hf_logits, our_logits, padded_batch,
                           random_transformers_model, save_hf)

import transformers
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARITY_TOLERANCE = 1e-5  # fp32, absolute, on logits of magnitude ~1


def hf_reference(attention, **overrides):
    """A transformers BertForQuestionAnswering with every parameter random (LayerNorm included, so a
    swapped or unloaded tensor shows), in eval mode."""
    torch.manual_seed(0)  # before construction: these draws give start logits above the parity test's 0.5 floor
    return random_transformers_model("BertForQuestionAnswering", attention, seed=None, **{**TINY_BERT, **overrides})


@pytest.mark.parametrize("attention", ["eager", "sdpa", "fused"])
@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu"])
def test_logits_match_transformers(tmp_path, attention, hidden_act):
    # cnbert's fused kernels are compared with transformers' eager attention
    reference = hf_reference("eager" if attention == "fused" else attention, hidden_act=hidden_act)
    model, report = from_pretrained(BertForSpanExtraction, save_hf(reference, tmp_path), attention=attention)
    assert report.initialised == [] and report.ignored == []
    expected = hf_logits(reference)
    assert expected[0].abs().max() > 0.5  # logits big enough for the tolerance to mean something
    assert_same_logits(our_logits(model), expected, PARITY_TOLERANCE)


def test_state_dict_names_and_shapes_are_transformers_bert_model():
    config = BertConfig(**TINY_BERT)
    ours = {name: tuple(t.shape) for name, t in BertModel(config).state_dict().items()}
    reference = transformers.BertModel(transformers.BertConfig(**TINY_BERT))
    assert ours == {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    assert ours == bert_parameter_shapes(config)
    no_pooler = BertModel(config, add_pooling_layer=False).state_dict()
    assert set(no_pooler) == set(bert_parameter_shapes(config, add_pooling_layer=False))
    span_names = set(BertForSpanExtraction(config).state_dict())
    assert span_names == set(transformers.BertForQuestionAnswering(transformers.BertConfig(**TINY_BERT)).state_dict())


@pytest.mark.parametrize("attention", ["eager", "sdpa", "fused"])
def test_padding_does_not_leak_into_real_tokens(attention):
    torch.manual_seed(0)
    model = BertForSpanExtraction(BertConfig(**TINY_BERT, attention=attention, initializer_range=0.2)).eval()
    assert_padding_does_not_leak(model)


def test_default_token_types_are_zeros_and_positions_count_from_zero():
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY_BERT, initializer_range=0.2)).eval()
    input_ids, attention_mask, _ = padded_batch()
    with torch.no_grad():
        default = model(input_ids, attention_mask).sequence_output
        explicit = model(input_ids, attention_mask, torch.zeros_like(input_ids),
                         torch.arange(input_ids.shape[1])[None, :]).sequence_output
        shifted = model(input_ids, attention_mask, None, torch.arange(1, input_ids.shape[1] + 1)[None, :])
    torch.testing.assert_close(default, explicit, atol=0, rtol=0)
    assert (shifted.sequence_output - default).abs().max() > 1e-3


def test_sequence_longer_than_position_table_raises():
    model = BertModel(BertConfig(**TINY_BERT))
    with pytest.raises(ValueError, match="sequence length 49 exceeds max_position_embeddings 48"):
        model(torch.ones(1, 49, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 5\) but input_ids has \(1, 6\)"):
        model(torch.ones(1, 6, dtype=torch.long), torch.ones(1, 5, dtype=torch.long))


def test_attention_implementations_agree_in_float64():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 3, 7, 8, generator=generator, dtype=torch.float64) * 3 for _ in range(3))
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [False] * 7])  # the last: all padding
    expected = torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(8)).masked_fill(~mask[:, None, None], -math.inf),
                             dim=-1) @ v
    expected[2] = 0.0  # a row of padded keys attends to nothing, in every implementation
    for attend in (eager_attention, sdpa_attention, fused_attention):
        got = attend(q.float(), k.float(), v.float(), mask, dropout_p=0.0, scale=8 ** -0.5)
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)  # float32 rounding
        # a float64 model stays float64 (no implementation drops to float32 inside)
        got = attend(q, k, v, mask, dropout_p=0.0, scale=8 ** -0.5)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    inputs = tuple(t[:2, :1, :4, :3].clone().requires_grad_(True) for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda *t: eager_attention(*t, mask[:2, :4], dropout_p=0.0, scale=0.5), inputs)


def test_eager_scores_are_float32_under_bf16_autocast(monkeypatch):
    # scores of about 20 from bf16 inputs: rounded to bf16 (half a step is 0.2 %) they would be off
    # by up to ~0.04 before the softmax
    torch.manual_seed(0)
    q, k, v = [(torch.randn(1, 2, 24, 16) * 2.0).bfloat16() for _ in range(3)]
    seen = []
    softmax = torch.softmax
    monkeypatch.setattr(torch, "softmax", lambda scores, dim: seen.append(scores) or softmax(scores, dim=dim))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager_attention(q, k, v, None, dropout_p=0.0, scale=0.25)
    want = q.double() @ k.double().transpose(-1, -2) * 0.25
    assert want.abs().max() > 10 and seen[0].dtype == torch.float32
    assert (seen[0].double() - want).abs().max() < 1e-4


@needs_extension
def test_fused_scores_overflow_fp16_only_where_the_scaled_ones_would():
    # |q.k| about 1.2e5 > 65504, the largest fp16, while the scaled scores (x 1/8) are not
    q = torch.full((1, 1, 2, 64), 44.0, dtype=torch.float16)
    k = torch.full((1, 1, 2, 64), 44.0, dtype=torch.float16)
    v = torch.randn(1, 1, 2, 64).half()
    out = fused_attention(q, k, v, None, dropout_p=0.0, scale=64 ** -0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), v.float().mean(dim=2, keepdim=True).expand_as(out), rtol=0, atol=2e-3)


def test_bf16_autocast_stays_close_to_fp32_with_layer_norm_in_fp32():
    """bf16 has an 8-bit mantissa: through 2 layers the logits stay within 5 % of the largest |fp32
    logit| (measured: 1.2-2.1 %)."""
    for attention in ("eager", "sdpa", "fused"):
        torch.manual_seed(0)
        model = BertForSpanExtraction(BertConfig(**TINY_BERT, attention=attention, initializer_range=0.2)).eval()
        input_ids, attention_mask, token_type_ids = padded_batch()
        norm_dtypes, linear_dtypes = [], {}
        hooks = [m.register_forward_hook(lambda _m, _i, out: norm_dtypes.append(out.dtype))
                 for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
        hooks += [m.register_forward_hook(lambda _m, _i, out, name=name: linear_dtypes.__setitem__(name, out.dtype))
                  for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        with torch.no_grad():
            fp32 = model(input_ids, attention_mask, token_type_ids)
            norm_dtypes.clear()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = model(input_ids, attention_mask, token_type_ids)
        for hook in hooks:
            hook.remove()
        # the encoder's matmuls ran in bf16; the head in float32, so its logits do not tie as bf16 ones would
        assert {dtype for name, dtype in linear_dtypes.items() if name != "qa_outputs"} == {torch.bfloat16}
        assert linear_dtypes["qa_outputs"] == bf16["start_logits"].dtype == torch.float32
        assert not torch.equal(bf16["start_logits"], bf16["start_logits"].bfloat16().float())
        assert set(norm_dtypes) == {torch.float32}
        scale = fp32["start_logits"].abs().max()
        assert scale > 0.5
        for name in ("start_logits", "end_logits"):
            error = (bf16[name].float() - fp32[name]).abs().max()
            assert error < 0.05 * scale, (attention, name, float(error), float(scale))
        loss = span_loss(bf16, torch.tensor([0, 3, 5]), torch.tensor([2, 4, 5]))
        assert loss.dtype == torch.float32


def test_fresh_weights_follow_the_bert_initialisation():
    torch.manual_seed(0)
    model = BertForCJRC(BertConfig(**TINY_BERT, initializer_range=0.05))
    state = model.state_dict()
    query = state["bert.encoder.layer.0.attention.self.query.weight"]
    assert abs(float(query.std()) - 0.05) < 0.005 and abs(float(query.mean())) < 0.005
    assert abs(float(state["answer_class.weight"].std()) - 0.05) < 0.02
    assert torch.all(state["bert.encoder.layer.1.output.dense.bias"] == 0)
    assert torch.all(state["qa_outputs.bias"] == 0) and torch.all(state["answer_class.bias"] == 0)
    assert torch.all(state["bert.embeddings.LayerNorm.weight"] == 1)
    assert torch.all(state["bert.encoder.layer.0.output.LayerNorm.bias"] == 0)
    assert torch.all(state["bert.embeddings.word_embeddings.weight"][0] == 0)  # pad_token_id row


@pytest.mark.parametrize("attention", ["eager", "sdpa", "fused"])
def test_a_fresh_model_learns_a_fixed_batch(attention):
    torch.manual_seed(0)
    config = BertConfig(**{**TINY_BERT, "vocab_size": 200}, attention=attention)
    model = BertForSpanExtraction(config).train()
    losses = fixed_batch_losses(model)
    assert losses[0] > math.log(20) - 0.5 and losses[-1] < 0.3 * losses[0], losses


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = BertForSpanExtraction(BertConfig(**TINY_BERT, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3))
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        model.train()
        first, second = (model(input_ids, attention_mask, token_type_ids)["start_logits"] for _ in range(2))
        model.eval()
        third, fourth = (model(input_ids, attention_mask, token_type_ids)["start_logits"] for _ in range(2))
    assert (first - second).abs().max() > 1e-4
    torch.testing.assert_close(third, fourth, atol=0, rtol=0)


def test_span_loss_matches_transformers_and_ignores_unlabelled_features():
    reference = hf_reference("eager")
    input_ids, attention_mask, token_type_ids = padded_batch()
    starts, ends = torch.tensor([3, 0, 5]), torch.tensor([4, 7, 5])
    with torch.no_grad():
        out = reference(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        start_positions=starts, end_positions=ends)
    logits = {"start_logits": out.start_logits, "end_logits": out.end_logits}
    torch.testing.assert_close(span_loss(logits, starts, ends), out.loss, atol=1e-6, rtol=0)
    per_feature = span_loss(logits, starts, ends, reduction="none")
    assert per_feature.shape == (3,)
    torch.testing.assert_close(per_feature.mean(), out.loss, atol=1e-6, rtol=0)

    ignored = torch.tensor([3, IGNORE_INDEX, IGNORE_INDEX]), torch.tensor([4, IGNORE_INDEX, IGNORE_INDEX])
    first = {name: value[:1] for name, value in logits.items()}
    torch.testing.assert_close(span_loss(logits, *ignored), span_loss(first, starts[:1], ends[:1]), atol=1e-6, rtol=0)
    torch.testing.assert_close(span_loss(logits, *ignored, reduction="none"),
                               torch.cat([per_feature[:1], torch.zeros(2)]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"end_positions holds \[20\]"):
        span_loss(logits, starts, torch.tensor([4, 20, 5]))


def test_cjrc_head_and_loss():
    torch.manual_seed(0)
    model = BertForCJRC(BertConfig(**TINY_BERT, initializer_range=0.2)).eval()
    input_ids, attention_mask, token_type_ids = padded_batch()
    logits = model(input_ids, attention_mask, token_type_ids)
    assert logits["start_logits"].shape == (3, 20) and logits["class_logits"].shape == (3, len(ANSWER_CLASSES))
    assert ANSWER_CLASSES == ("span", "yes", "no", "unknown")
    # Feature 0: span answer in the window; 1: a "yes" question; 2: a window of a span question that
    # misses the answer (pointed at [CLS]), which must teach nothing about the class.
    starts, ends = torch.tensor([9, IGNORE_INDEX, 0]), torch.tensor([11, IGNORE_INDEX, 0])
    answer_class = torch.tensor([0, 1, IGNORE_INDEX])
    loss = cjrc_loss(logits, starts, ends, answer_class)
    ce = torch.nn.functional.cross_entropy
    start, end, cls = logits["start_logits"], logits["end_logits"], logits["class_logits"]
    expected = (ce(start[[0, 2]], starts[[0, 2]]) + ce(end[[0, 2]], ends[[0, 2]])) / 2 + ce(cls[:2], answer_class[:2])
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
    per_feature = cjrc_loss(logits, starts, ends, answer_class, reduction="none")
    expected_class = torch.cat([ce(cls[:2], answer_class[:2], reduction="none"), torch.zeros(1)])
    expected_span = torch.cat([(ce(start[[0]], starts[[0]]) + ce(end[[0]], ends[[0]]))[None] / 2, torch.zeros(1),
                               (ce(start[[2]], starts[[2]]) + ce(end[[2]], ends[[2]]))[None] / 2])
    torch.testing.assert_close(per_feature, expected_span + expected_class, atol=1e-6, rtol=0)
    loss.backward()
    assert model.answer_class.weight.grad.abs().sum() > 0

    nothing = torch.full((3,), IGNORE_INDEX)
    empty = cjrc_loss(model(input_ids, attention_mask, token_type_ids), nothing, nothing, nothing)
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match=r"answer_class holds \[4\]"):
        cjrc_loss(logits, starts, ends, torch.tensor([0, 4, 1]))


def _eager_and_fused_span_models(hidden_act="gelu"):
    torch.manual_seed(0)
    eager = BertForSpanExtraction(BertConfig(**TINY_BERT, attention="eager", initializer_range=0.2, hidden_act=hidden_act,
                                             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    fused = BertForSpanExtraction(eager.config.replace(attention="fused"))
    fused.load_state_dict(eager.state_dict())
    return eager, fused


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "quick_gelu"])
def test_fused_mode_runs_the_kernels_and_matches_eager_values_and_gradients(monkeypatch, hidden_act):
    """attention="fused" routes the softmax and the FFN's bias + GELU (in the config's form: erf, tanh,
    or siBert's sigmoid) through cnbert.kernels; logits and every parameter gradient equal the eager
    model's (assert_fused_matches_eager)."""
    calls = count_kernel_calls(monkeypatch)
    assert_fused_matches_eager(*_eager_and_fused_span_models(hidden_act))
    layers = TINY_BERT["num_hidden_layers"]
    assert calls == {"scaled_masked_softmax": layers, "bias_gelu": layers}


def test_fused_ffn_falls_back_to_eager_where_the_kernels_do_not_run(monkeypatch):
    """Where the compiled kernels do not run (extension missing or stale, or a device it has no
    kernels for), the fused model's FFN is the eager Linear + GELU, not bias_gelu's pure-torch
    reference (which keeps several activation-sized float32 tensors for backward); the softmax
    still goes through cnbert.kernels (its reference keeps what eager attention keeps)."""
    from cnbert.kernels import _extension

    calls = count_kernel_calls(monkeypatch)
    monkeypatch.setattr(_extension, "LOADED", False)  # as when cnbert._C is absent or stale
    assert_fused_matches_eager(*_eager_and_fused_span_models())
    assert calls == {"scaled_masked_softmax": TINY_BERT["num_hidden_layers"], "bias_gelu": 0}


def test_fused_ffn_needs_kernels_for_the_tensors_device(monkeypatch):
    """The decision is per tensor (cnbert.kernels.runs_on): a device the build has no kernels for
    gets the eager FFN. Simulated on the CPU by making runs_on say no for it."""
    import cnbert.kernels as kernels
    from cnbert.torch.modeling import BertIntermediate

    layer = BertIntermediate(BertConfig(**TINY_BERT, attention="fused"))
    x = torch.randn(2, 5, TINY_BERT["hidden_size"])
    calls = count_kernel_calls(monkeypatch, ("bias_gelu",))
    with torch.no_grad():
        if kernels.is_available():
            layer(x)
            assert calls["bias_gelu"] == 1
        monkeypatch.setattr(kernels, "runs_on", lambda t: False)
        calls["bias_gelu"] = 0
        torch.testing.assert_close(layer(x), torch.nn.functional.gelu(layer.dense(x)), atol=0, rtol=0)
    assert calls["bias_gelu"] == 0


@needs_extension
def test_fused_model_traces_with_fullgraph():
    """The FFN's kernels-or-eager choice causes no graph break (dynamo only: backend="eager")."""
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY_BERT, attention="fused")).eval()
    input_ids, attention_mask, token_type_ids = padded_batch()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        got = compiled(input_ids, attention_mask, token_type_ids).sequence_output
        want = model(input_ids, attention_mask, token_type_ids).sequence_output
    torch._dynamo.reset()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("attention", ["eager", "sdpa", "fused"])
def test_training_mode_logits_match_transformers_under_the_same_random_draws(tmp_path, attention):
    """Same weights, same seed, dropout 0.3 everywhere: cnbert's dropouts draw transformers' masks in
    the same order (embeddings after their LayerNorm, attention probabilities, each sub-layer's output
    before its residual sum and LayerNorm), so the train-mode logits are transformers' own. The
    inference parity tests see none of this."""
    torch.manual_seed(0)
    hf = random_transformers_model("BertForQuestionAnswering", "eager" if attention == "fused" else attention,
                                   seed=None, **TINY_BERT, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    ours, _ = from_pretrained(BertForSpanExtraction, save_hf(hf, tmp_path), attention=attention)
    input_ids, attention_mask, token_type_ids = padded_batch()
    hf.train(), ours.train()
    with torch.no_grad():
        torch.manual_seed(5)
        want = hf(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).start_logits
        torch.manual_seed(5)
        got = ours(input_ids, attention_mask, token_type_ids)["start_logits"]
        torch.manual_seed(6)
        other = ours(input_ids, attention_mask, token_type_ids)["start_logits"]
    assert (other - got).abs().max() > 1e-2  # dropout is on
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
