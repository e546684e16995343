"""Strict loading of Hugging Face and Google TF checkpoints, and saving directories transformers reads."""
import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cnbert.checkpoints import CheckpointError, google_to_hf, hf_to_google, load_tf_checkpoint
from cnbert.config import BertConfig
from cnbert.tokenization import bundled_vocab_path
from cnbert.torch import (BertForCJRC, BertForSpanExtraction, BertModel, backend, from_pretrained, load_for_task,
                          load_pretrained, save_pretrained)
from model_helpers import (TINY_BERT, assert_same_logits, google_config, hf_logits, our_logits, padded_batch,
                           random_transformers_model, randomise, save_hf, write_tf_checkpoint)

import transformers
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = BertConfig(**TINY_BERT)
PARITY_TOLERANCE = 1e-5  # fp32, absolute, on logits of magnitude ~1


@pytest.fixture(scope="module")
def reference():
    return random_transformers_model("BertForQuestionAnswering", **TINY_BERT)


@pytest.fixture
def hf_dir(tmp_path, reference):
    return save_hf(reference, tmp_path / "hf")


def assert_same(got, expected):
    assert_same_logits(got, expected, atol=PARITY_TOLERANCE)


def rewrite_weights(directory, change):
    """Apply `change` to the state dict in model.safetensors."""
    state = load_file(directory / "model.safetensors")
    change(state)
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})


# ---- Hugging Face directories ---------------------------------------------------------------------

def test_pytorch_model_bin_from_bert_for_question_answering(tmp_path, hf_dir, reference):
    (hf_dir / "model.safetensors").unlink()
    torch.save(reference.state_dict(), hf_dir / "pytorch_model.bin")
    model, report = from_pretrained(BertForSpanExtraction, hf_dir, attention="sdpa")
    assert report.source.endswith("pytorch_model.bin") and report.initialised == [] and report.ignored == []
    assert_same(our_logits(model), hf_logits(reference))


def test_bert_model_state_dict_without_prefix_and_with_legacy_names(tmp_path, reference):
    """A BertModel state dict (no "bert." prefix, with pooler) as older conversions saved it: LayerNorm
    gamma/beta and the position_ids buffer. The span head is initialised fresh and reported."""
    encoder = transformers.BertModel(transformers.BertConfig(**TINY_BERT)).eval()
    encoder.load_state_dict(reference.bert.state_dict(), strict=False)  # the reference has no pooler
    randomise(encoder.pooler)
    state = {name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): t
             for name, t in encoder.state_dict().items()}
    state["embeddings.position_ids"] = torch.arange(TINY_BERT["max_position_embeddings"])[None]
    torch.save(state, tmp_path / "pytorch_model.bin")

    span = BertForSpanExtraction(CONFIG)
    report = load_pretrained(span, tmp_path / "pytorch_model.bin")
    assert report.initialised == ["qa_outputs.weight", "qa_outputs.bias"]
    assert report.ignored == ["bert.embeddings.position_ids", "bert.pooler.dense.bias",
                                      "bert.pooler.dense.weight"]
    span.qa_outputs.load_state_dict(reference.qa_outputs.state_dict())
    assert_same(our_logits(span), hf_logits(reference))

    bare = BertModel(CONFIG)
    assert load_pretrained(bare, tmp_path / "pytorch_model.bin").ignored == ["embeddings.position_ids"]
    input_ids, attention_mask, token_type_ids = padded_batch()
    with torch.no_grad():
        expected = encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        got = bare.eval()(input_ids, attention_mask, token_type_ids)
    torch.testing.assert_close(got.pooled_output, expected.pooler_output, atol=PARITY_TOLERANCE, rtol=0)


class NotATensor:
    pass


def test_pytorch_model_bin_is_read_with_weights_only(tmp_path):
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(2), "evil": NotATensor()},
               tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused it: Unsupported global: GLOBAL "
                                              "test_torch_checkpoint.NotATensor was not an allowed global by "
                                              "default.; cnbert reads only plain") as error:
        load_pretrained(BertModel(CONFIG), tmp_path / "pytorch_model.bin")
    assert isinstance(error.value.__cause__, pickle.UnpicklingError)


def test_pretraining_heads_are_ignored_and_reported(tmp_path):
    pretrained = randomise(transformers.BertForPreTraining(transformers.BertConfig(**TINY_BERT)))
    pretrained.save_pretrained(tmp_path)
    model, report = from_pretrained(BertForCJRC, tmp_path)
    assert report.initialised == ["qa_outputs.weight", "qa_outputs.bias", "answer_class.weight", "answer_class.bias"]
    assert {name.split(".")[0] + "." + name.split(".")[1] for name in report.ignored} == {
        "cls.predictions", "cls.seq_relationship", "bert.pooler"}
    torch.testing.assert_close(model.bert.encoder.layer[1].output.dense.weight,
                               pretrained.bert.encoder.layer[1].output.dense.weight, atol=0, rtol=0)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("bert.encoder.layer.1.output.LayerNorm.bias"),
     r"missing weights \[bert\.encoder\.layer\.1\.output\.LayerNorm\.bias\]"),
    (lambda s: s.update({"bert.encoder.layer.0.intermediate.dense.weight": torch.zeros(100, 64)}),
     r"bert\.encoder\.layer\.0\.intermediate\.dense\.weight: the checkpoint has shape \(100, 64\) "
     r"but the model expects \(128, 64\)"),
    (lambda s: s.update({"bert.encoder.layer.0.attention.extra.weight": torch.zeros(1)}),
     r"unexpected keys \[bert\.encoder\.layer\.0\.attention\.extra\.weight\]"),
    (lambda s: s.pop("qa_outputs.bias"), r"missing weights \[qa_outputs\.bias\]"),
])
def test_strict_loading_errors(hf_dir, change, message):
    rewrite_weights(hf_dir, change)
    with pytest.raises(CheckpointError, match=message) as info:
        from_pretrained(BertForSpanExtraction, hf_dir)
    assert str(hf_dir / "model.safetensors") in str(info.value)


def test_vocab_size_disagreements(tmp_path, hf_dir):
    small = BertForSpanExtraction(CONFIG.replace(vocab_size=21000))
    for source in (hf_dir, hf_dir / "model.safetensors"):  # the vocab.txt beside a weights file is the model's too
        with pytest.raises(CheckpointError, match="the vocabulary has 21128 entries but the model config says "
                                                  "vocab_size=21000"):
            load_pretrained(small, source)
    lines = (hf_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    (hf_dir / "vocab.txt").write_text("\n".join(lines[:21000]) + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"embeddings\.word_embeddings\.weight: the checkpoint has shape "
                                              r"\(21128, 64\) but the model expects \(21000, 64\) "
                                              r"\(config vocab_size=21000, checkpoint has 21128\)"):
        load_pretrained(small, hf_dir / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"{hf_dir / 'vocab.txt'}: the vocabulary has 21000 entries"):
        from_pretrained(BertForSpanExtraction, hf_dir)


def test_directory_without_weights_is_an_error(tmp_path):
    BertConfig(**TINY_BERT).to_json_file(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no weights found"):
        from_pretrained(BertForSpanExtraction, tmp_path)
    with pytest.raises(CheckpointError, match="nowhere: not found"):
        from_pretrained(BertForSpanExtraction, tmp_path / "nowhere")
    (tmp_path / "config.json").unlink()
    save_file({"qa_outputs.bias": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="no model config"):
        from_pretrained(BertForSpanExtraction, tmp_path)



# ---- saving -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_saved_directory_loads_in_transformers_with_the_same_logits(tmp_path, hf_dir, attention):
    model, _ = from_pretrained(BertForSpanExtraction, hf_dir, attention=attention)
    torch.manual_seed(5)
    with torch.no_grad():  # make the saved weights differ from the reference's
        model.qa_outputs.weight.normal_(0.0, 0.3)
    expected = our_logits(model)
    out = tmp_path / "saved"
    save_pretrained(model, out, bundled_vocab_path())
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]

    loaded, info = transformers.BertForQuestionAnswering.from_pretrained(
        out, attn_implementation=attention, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_same(hf_logits(loaded), expected)
    again, report = from_pretrained(BertForSpanExtraction, out)
    assert report.initialised == [] and again.config == model.config
    assert_same(our_logits(again), expected)


def test_save_replaces_an_existing_directory_atomically(tmp_path):
    torch.manual_seed(0)
    first, second = BertForCJRC(CONFIG), BertForCJRC(CONFIG)
    out = tmp_path / "model"
    save_pretrained(first, out, bundled_vocab_path())
    save_pretrained(second, out, bundled_vocab_path())
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging or old copies left behind
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForCJRC"]
    reloaded, report = from_pretrained(BertForCJRC, out)
    assert report.initialised == []
    with torch.no_grad():
        got, expected = reloaded.eval()(*padded_batch()), second.eval()(*padded_batch())
    for name in ("start_logits", "end_logits", "class_logits"):
        torch.testing.assert_close(got[name], expected[name], atol=0, rtol=0)

    with pytest.raises(CheckpointError, match="vocab_size=100"):
        save_pretrained(BertForCJRC(CONFIG.replace(vocab_size=100)), tmp_path / "bad", bundled_vocab_path())
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


# ---- Google TF1 checkpoints ------------------------------------------------------------------------

def numpy_state(module):
    return {name: t.detach().numpy().copy() for name, t in module.state_dict().items()}


def test_google_names_round_trip_exactly():
    encoder = randomise(transformers.BertModel(transformers.BertConfig(**TINY_BERT)))
    weights = numpy_state(encoder)
    variables = hf_to_google(weights)
    layer = "bert/encoder/layer_1/"
    for name in ("bert/embeddings/word_embeddings", "bert/embeddings/position_embeddings",
                 "bert/embeddings/token_type_embeddings", "bert/embeddings/LayerNorm/gamma",
                 "bert/embeddings/LayerNorm/beta", layer + "attention/self/query/kernel",
                 layer + "attention/self/value/bias", layer + "attention/output/dense/kernel",
                 layer + "attention/output/LayerNorm/gamma", layer + "intermediate/dense/kernel",
                 layer + "output/dense/bias", layer + "output/LayerNorm/beta", "bert/pooler/dense/kernel"):
        assert name in variables, name
    assert len(variables) == len(weights)
    assert variables[layer + "intermediate/dense/kernel"].shape == (64, 128)  # TF kernels are [in, out]
    back = google_to_hf(variables).weights
    assert back.keys() == weights.keys()
    for name, array in weights.items():
        np.testing.assert_array_equal(back[name], array, err_msg=name)


def test_tf_kernels_compute_what_the_torch_linear_computes():
    encoder = randomise(transformers.BertModel(transformers.BertConfig(**TINY_BERT)))
    variables = hf_to_google(numpy_state(encoder))
    x = torch.randn(5, 64)
    query = encoder.encoder.layer[0].attention.self.query
    tf_style = (x.numpy() @ variables["bert/encoder/layer_0/attention/self/query/kernel"]
                + variables["bert/encoder/layer_0/attention/self/query/bias"])
    np.testing.assert_allclose(tf_style, query(x).detach().numpy(), atol=1e-5)


def test_optimizer_slots_and_heads_are_skipped_and_unknown_variables_refused():
    variables = {"bert/pooler/dense/bias": np.zeros(4, np.float32), "global_step": np.int64(7),
                 "bert/pooler/dense/bias/adam_m": np.zeros(4), "bert/pooler/dense/bias/adam_v": np.zeros(4),
                 "cls/predictions/output_bias": np.zeros(10), "cls/seq_relationship/output_weights": np.zeros((2, 4))}
    conversion = google_to_hf(variables)
    assert list(conversion.weights) == ["pooler.dense.bias"]
    assert len(conversion.skipped) == 5
    with pytest.raises(CheckpointError, match=r"bert/encoder/layer_0/attention/self/query/gain"):
        google_to_hf({"bert/encoder/layer_0/attention/self/query/gain": np.zeros(4)})
    with pytest.raises(CheckpointError, match="looks like an ALBERT checkpoint"):
        google_to_hf({"bert/encoder/layer_shared/attention/self/query/kernel": np.zeros((4, 4))})
    with pytest.raises(CheckpointError, match="looks like a siBert checkpoint .*convert_tf_variables"):
        google_to_hf({"bert_model/transformers/layer_0/self_attention/proj_q/w": np.zeros((4, 4))})


def test_a_fine_tuned_model_must_carry_its_task_heads(tmp_path, hf_dir):
    # a pretrained encoder directory may start a fine-tuning run, with fresh heads ...
    model, report = load_for_task("cmrc2018", hf_dir)
    assert report.initialised == []  # hf_dir holds BertForQuestionAnswering, heads included
    encoder_only = tmp_path / "encoder"
    save_pretrained(model.bert, encoder_only, bundled_vocab_path())
    assert load_for_task("cmrc2018", encoder_only)[1].initialised == ["qa_outputs.weight", "qa_outputs.bias"]
    # ... but is no fine-tuned model to answer with
    with pytest.raises(CheckpointError, match="qa_outputs.weight"):
        backend.load_finetuned(encoder_only, "cmrc2018")


def test_a_bfloat16_tf1_checkpoint_loads(tmp_path, reference):
    import ml_dtypes

    encoder = {name.removeprefix("bert."): t.numpy() for name, t in reference.state_dict().items()
               if name.startswith("bert.")}
    variables = {name: array.astype(ml_dtypes.bfloat16) for name, array in hf_to_google(encoder).items()}
    write_tf_checkpoint(tmp_path, variables, google_config(CONFIG), "bert_model.ckpt", "bert_config.json")
    model, _ = from_pretrained(BertForSpanExtraction, tmp_path)
    word = variables["bert/embeddings/word_embeddings"].astype(np.float32)
    np.testing.assert_array_equal(model.bert.embeddings.word_embeddings.weight.detach().numpy(), word)


@pytest.mark.slow
def test_tf1_checkpoint_directory_loads_like_the_reference(tmp_path, reference):
    variables = hf_to_google({name.removeprefix("bert."): t.numpy() for name, t in reference.state_dict().items()
                              if name.startswith("bert.")})
    variables["bert/pooler/dense/kernel"] = np.ones((64, 64), np.float32)
    variables["bert/pooler/dense/bias"] = np.ones(64, np.float32)
    variables["bert/embeddings/word_embeddings/adam_m"] = np.zeros((21128, 64), np.float32)
    variables["cls/predictions/output_bias"] = np.zeros(21128, np.float32)
    write_tf_checkpoint(tmp_path, variables, google_config(CONFIG), "bert_model.ckpt", "bert_config.json")

    assert set(load_tf_checkpoint(tmp_path / "bert_model.ckpt")) == {*variables, "global_step"}
    model, report = from_pretrained(BertForSpanExtraction, tmp_path)
    assert report.initialised == ["qa_outputs.weight", "qa_outputs.bias"]
    assert report.ignored == ["bert.pooler.dense.bias", "bert.pooler.dense.weight"]
    model.qa_outputs.load_state_dict(reference.qa_outputs.state_dict())
    assert_same(our_logits(model), hf_logits(reference))


def test_damaged_weight_files_name_the_file(tmp_path, hf_dir):
    # The readers' own errors (safetensors, torch's unpickler, TF's index reader) do not say which
    # file they were reading, and torch's suggests weights_only=False, unsafe for an unknown file.
    import shutil

    from cnbert.tf.checkpoint import read_canonical_weights
    from cnbert.torch.checkpoint import read_state_dict

    truncated = tmp_path / "truncated"
    shutil.copytree(hf_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    for read in (read_state_dict, read_canonical_weights):
        with pytest.raises(CheckpointError, match=f"{weights}: cannot read the weights \\(SafetensorError: "):
            read(truncated)
    garbage = tmp_path / "pytorch_model.bin"
    garbage.write_bytes(pickle.dumps({"a": object()}))
    with pytest.raises(CheckpointError, match=f"{garbage}: cannot read the weights \\(UnpicklingError: torch.load "
                                              "with weights_only=True refused it: Unsupported operand") as error:
        read_state_dict(garbage)
    assert "weights_only` set to `False`" not in str(error.value)
    tf_dir = tmp_path / "tf"
    tf_dir.mkdir()
    (tf_dir / "bert_model.ckpt.index").write_bytes(b"")
    (tf_dir / "bert_model.ckpt.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{tf_dir / 'bert_model.ckpt'}: cannot read the weights"):
        load_tf_checkpoint(tf_dir)


def test_the_vocab_file_given_is_the_one_checked(tmp_path):
    config = BertConfig(**TINY_BERT)  # vocab_size 21128, the bundled vocabulary's
    torch.manual_seed(0)
    directory = save_pretrained(BertForSpanExtraction(config), tmp_path / "model", bundled_vocab_path())
    lines = bundled_vocab_path().read_text(encoding="utf-8").split("\n")
    short = tmp_path / "short_vocab.txt"
    short.write_text("\n".join(lines[:21000]) + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="short_vocab.txt: the vocabulary has 21000 entries"):
        load_pretrained(BertForSpanExtraction(config), directory, vocab_file=short)
    # the directory's own vocab.txt is wrong; the vocab_file given is right and is the one that counts
    (directory / "vocab.txt").write_text("\n".join(lines[:21000]) + "\n", encoding="utf-8")
    load_pretrained(BertForSpanExtraction(config), directory, vocab_file=bundled_vocab_path())
    backend.create_model("cmrc2018", config, directory, bundled_vocab_path())
