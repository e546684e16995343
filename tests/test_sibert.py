"""siBert checkpoints (ewrfcas/SiBert_tensorflow): setting.txt as the config, the TF1 variable layout,
and the model they describe, checked against a float64 forward pass written from siBert's
models/SiBert.py (post-LayerNorm BERT, x·σ(1.702x) in the FFN, LayerNorm epsilon 1e-5, -10000 added
to masked scores before the scaled softmax) that reads the variables by siBert's own names."""
import shutil

import numpy as np
import pytest
import torch

from cnbert.checkpoints import (CheckpointError, bert_parameter_shapes, hf_to_google, is_sibert_checkpoint,
                                sibert_to_hf)
from cnbert.config import BertConfig, ConfigError, config_from_dict, read_config
from cnbert.torch import BertForSpanExtraction, BertModel, from_pretrained, load_for_task, save_pretrained
from model_helpers import (VOCAB_SIZE, google_config, hf_logits, our_logits, padded_arrays, random_sibert_variables,
                           sibert_setting_txt, write_tf_checkpoint)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = {"vocab_size": VOCAB_SIZE, "hidden_size": 64, "n_layer": 2, "n_head": 4, "mlp_ratio": 2,
            "max_position_embeddings": 48, "type_vocab_size": 2, "dropout": 0.0}
CONFIG = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, max_position_embeddings=48, type_vocab_size=2, hidden_act="quick_gelu",
                    layer_norm_eps=1e-5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
# float32 models against the float64 reference; outputs are LayerNorm'd (magnitude ~1) or tanh
PARITY_TOLERANCE = 2e-5
# pretraining heads (models/SiBert.py), optimizer slots and pretrain.py's training state outside
# bert_model/ (fp16 loss scaling, blocksparse's entropy; global_step comes with every checkpoint): never
# read for fine-tuning
PRETRAINING_EXTRAS = {
    "loss_scale": (), "good_steps": (), "bad_steps": (), "Entropy": (16,),
    "bert_model/pooler/pooler_dense/w": (64, 64), "bert_model/pooler/pooler_dense/bias": (64,),
    "bert_model/pretrain_output/MLM_output/cloze_transform/w": (64, 64),
    "bert_model/pretrain_output/MLM_output/cloze_transform/bias": (64,),
    "bert_model/pretrain_output/MLM_output/LayerNorm_cloze/gamma": (64,),
    "bert_model/pretrain_output/MLM_output/LayerNorm_cloze/beta": (64,),
    "bert_model/pretrain_output/SCP_output/sc_transform/w": (64, 1),
    "bert_model/pretrain_output/SCP_output/sc_transform/bias": (1,),
    "bert_model/pretrain_output/CLS_output/cls_transform/w": (64, 3),
    "bert_model/pretrain_output/CLS_output/cls_transform/bias": (3,),
    "bert_model/transformers/layer_0/intermediate/proj_m1/w/adam_m": (64, 128),
    "bert_model/transformers/layer_0/intermediate/proj_m1/w/adam_v": (64, 128),
}


@pytest.fixture(scope="module")
def variables():
    return random_sibert_variables(SETTINGS)


@pytest.fixture(scope="module")
def sibert_dir(tmp_path_factory, variables):
    """A siBert pretraining output directory: model.ckpt-N, setting.txt, and (the bundled) vocab.txt."""
    extras = {name: np.full(shape, 7.0, np.float32) for name, shape in PRETRAINING_EXTRAS.items()}
    return write_tf_checkpoint(tmp_path_factory.mktemp("sibert") / "SiBertV0", {**variables, **extras},
                               sibert_setting_txt(SETTINGS), "model.ckpt-5000", "setting.txt")


def sibert_forward(v, input_ids, attention_mask, token_type_ids):
    """siBert's encoder and [CLS] pooler in float64, step by step as models/SiBert.py computes them."""
    v = {name: np.asarray(value, np.float64) for name, value in v.items()}
    heads = SETTINGS["n_head"]

    def layer_norm(x, module):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * v[f"{module}/gamma"] + v[f"{module}/beta"]

    def conv1d(x, module):
        return x @ v[f"{module}/w"] + v[f"{module}/bias"]

    def split_heads(x):  # [B, S, H] -> [B, heads, S, H / heads]
        return x.reshape(*x.shape[:2], heads, -1).transpose(0, 2, 1, 3)

    seq_len = input_ids.shape[1]
    x = (v["bert_model/embedding/word_embedding"][input_ids] + v["bert_model/embedding/position_embedding"][:seq_len]
         + v["bert_model/embedding/token_type_embedding"][token_type_ids])
    x = layer_norm(x, "bert_model/embedding/LayerNorm_emb")
    masks = attention_mask[:, None, None, :].astype(np.float64)
    for index in range(SETTINGS["n_layer"]):
        layer = f"bert_model/transformers/layer_{index}/"
        q, k, values = (split_heads(conv1d(x, f"{layer}self_attention/proj_{p}")) for p in "qkv")
        scores = (q @ k.transpose(0, 1, 3, 2) + -10000.0 * (1 - masks)) / np.sqrt(q.shape[-1])  # bs.softmax scale
        probabilities = np.exp(scores - scores.max(-1, keepdims=True))
        probabilities /= probabilities.sum(-1, keepdims=True)
        attended = (probabilities @ values).transpose(0, 2, 1, 3).reshape(x.shape)
        x1 = layer_norm(conv1d(attended, f"{layer}attention_output/proj_a") + x,
                        f"{layer}attention_output/LayerNorm_att")
        inner = conv1d(x1, f"{layer}intermediate/proj_m1")
        inner = inner / (1 + np.exp(-1.702 * inner))  # blocksparse fast_gelu: x·σ(1.702x)
        x = layer_norm(conv1d(inner, f"{layer}output/proj_m2") + x1, f"{layer}output/LayerNorm_output")
    pooled = np.tanh(conv1d(x[:, 0], "bert_model/pooler/cls_pooler_dense"))
    return x, pooled


# ---- setting.txt ----------------------------------------------------------------------------------

def test_setting_txt_is_read_as_the_bert_config_it_describes(sibert_dir, tmp_path):
    assert read_config(sibert_dir / "setting.txt") == CONFIG
    # an empty string argument is written as "name: "; values may hold colons
    text = sibert_setting_txt({**SETTINGS, "train_dir": "", "checkpoint_dir": "D:/runs/SiBertV0/"})
    assert "\ntrain_dir: \n" in text
    (tmp_path / "setting.txt").write_text(text)
    assert read_config(tmp_path / "setting.txt") == CONFIG
    assert config_from_dict(SETTINGS) == CONFIG  # the same keys in a JSON config
    without_dropout = {k: v for k, v in SETTINGS.items() if k != "dropout"}
    assert config_from_dict(without_dropout).hidden_dropout_prob == 0.1  # pretrain.py's default
    with pytest.raises(ConfigError, match="siBert's keys"):
        BertConfig.from_dict(SETTINGS)  # never read as BERT keys with the rest defaulted


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace("n_head: 4\n", ""), r"setting.txt: siBert settings lack n_head"),
    (lambda text: text.replace("n_layer: 2", "n_layer: two"), r"siBert setting n_layer must be an integer, got 'two'"),
    (lambda text: text.replace("dropout: 0.0", "dropout: much"), r"siBert setting dropout must be a number"),
    (lambda text: text.replace("lr: 0.0001", "lr=0.0001"), r"setting.txt: line 4: expected \"name: value\""),
    (lambda text: text + "n_layer: 3\n", r"setting.txt: line 31: n_layer is set twice"),
])
def test_bad_setting_files_name_the_file_and_the_problem(tmp_path, edit, message):
    path = tmp_path / "setting.txt"
    path.write_text(edit(sibert_setting_txt(SETTINGS)))
    with pytest.raises(ConfigError, match=message):
        read_config(path)


# ---- the layout -----------------------------------------------------------------------------------

def test_every_encoder_weight_maps_and_pretraining_heads_are_skipped(variables):
    extras = {name: np.zeros(shape, np.float32) for name, shape in PRETRAINING_EXTRAS.items()}
    conversion = sibert_to_hf({**variables, **extras, "global_step": np.int64(5000)})
    assert conversion.skipped == sorted([*PRETRAINING_EXTRAS, "global_step"])
    assert {n: a.shape for n, a in conversion.weights.items()} == bert_parameter_shapes(CONFIG)
    # conv1d weights are [in, out]: a torch Linear holds the transpose
    np.testing.assert_array_equal(conversion.weights["encoder.layer.1.intermediate.dense.weight"],
                                  variables["bert_model/transformers/layer_1/intermediate/proj_m1/w"].T)
    np.testing.assert_array_equal(conversion.weights["encoder.layer.0.attention.self.key.bias"],
                                  variables["bert_model/transformers/layer_0/self_attention/proj_k/bias"])


def test_layer_norms_named_gain_and_bias_load_the_same(variables):
    renamed = random_sibert_variables(SETTINGS, norm_names=("gain", "bias"))
    assert sibert_to_hf(renamed).weights.keys() == sibert_to_hf(variables).weights.keys()
    np.testing.assert_array_equal(sibert_to_hf(renamed).weights["encoder.layer.0.output.LayerNorm.weight"],
                                  renamed["bert_model/transformers/layer_0/output/LayerNorm_output/gain"])


def test_variables_outside_the_layout_or_named_twice_are_refused(variables):
    head = "bert_model/finetune_mrc/start_dense/w"
    with pytest.raises(CheckpointError, match=f"not siBert encoder weights: \\['{head}'\\]"):
        sibert_to_hf({**variables, head: np.zeros((64, 1), np.float32)})
    module = "bert_model/transformers/layer_1/attention_output/LayerNorm_att"
    with pytest.raises(CheckpointError, match=f"{module}/gain and {module}/gamma both hold "
                                              r"encoder.layer.1.attention.output.LayerNorm.weight"):
        sibert_to_hf({**variables, f"{module}/gain": np.ones(64, np.float32)})


# ---- the models ---------------------------------------------------------------------------------

@pytest.mark.parametrize("attention", ["eager", "sdpa", "fused"])
def test_pytorch_encoder_matches_the_float64_sibert_forward(sibert_dir, variables, attention):
    model, report = from_pretrained(BertModel, sibert_dir, attention=attention)
    assert report.initialised == [] and report.ignored == []
    assert model.config == CONFIG.replace(attention=attention)
    batch = padded_arrays(seq_length=20)
    with torch.no_grad():
        out = model.eval()(*(torch.from_numpy(a) for a in batch))
    sequence, pooled = sibert_forward(variables, *batch)
    real = batch[1].astype(bool)
    np.testing.assert_allclose(out.sequence_output.numpy()[real], sequence[real], atol=PARITY_TOLERANCE, rtol=0)
    np.testing.assert_allclose(out.pooled_output.numpy(), pooled, atol=PARITY_TOLERANCE, rtol=0)


def test_tensorflow_encoder_matches_the_float64_sibert_forward(sibert_dir, variables):
    import cnbert.tf as ctf
    from cnbert.checkpoints import read_pretrained_config

    model = ctf.BertModel(read_pretrained_config(sibert_dir))
    report = ctf.load_pretrained(model, sibert_dir)
    assert report.initialised == []
    batch = padded_arrays(seq_length=20)
    out = model(*batch)
    sequence, pooled = sibert_forward(variables, *batch)
    real = batch[1].astype(bool)
    np.testing.assert_allclose(out["sequence_output"].numpy()[real], sequence[real], atol=PARITY_TOLERANCE, rtol=0)
    np.testing.assert_allclose(out["pooled_output"].numpy(), pooled, atol=PARITY_TOLERANCE, rtol=0)


def test_a_fine_tuned_sibert_model_loads_in_transformers_with_the_same_logits(sibert_dir, tmp_path):
    import transformers

    model, report = from_pretrained(BertForSpanExtraction, sibert_dir)
    assert report.initialised == ["qa_outputs.weight", "qa_outputs.bias"]
    save_pretrained(model, tmp_path / "best_model", sibert_dir / "vocab.txt")
    reference = transformers.BertForQuestionAnswering.from_pretrained(tmp_path / "best_model")
    assert (reference.config.hidden_act, reference.config.layer_norm_eps) == ("quick_gelu", 1e-5)
    batch = tuple(torch.from_numpy(a) for a in padded_arrays(seq_length=20))
    for got, expected in zip(our_logits(model, batch), hf_logits(reference, batch)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    reloaded, _ = load_for_task("cmrc2018", tmp_path / "best_model", allow_fresh_heads=False)
    assert reloaded.config.hidden_act == "quick_gelu"


# ---- a config and a checkpoint that do not belong together ----------------------------------------

def test_a_bert_config_beside_a_sibert_checkpoint_is_refused(sibert_dir, tmp_path):
    directory = tmp_path / "mixed"
    shutil.copytree(sibert_dir, directory)
    (directory / "setting.txt").unlink()
    (directory / "bert_config.json").write_text(__import__("json").dumps(google_config(CONFIG.replace(
        hidden_act="gelu"))))
    assert is_sibert_checkpoint(directory)
    with pytest.raises(CheckpointError, match="model.ckpt-5000 is a siBert checkpoint, which computes hidden_act "
                                              "'quick_gelu' .* but this config says 'gelu' and 1e-12"):
        from_pretrained(BertModel, directory)


def test_sibert_settings_beside_a_google_checkpoint_are_refused(variables, tmp_path):
    google = hf_to_google(sibert_to_hf(variables).weights)
    directory = write_tf_checkpoint(tmp_path / "google", google, sibert_setting_txt(SETTINGS), "bert_model.ckpt",
                                    "setting.txt")
    assert not is_sibert_checkpoint(directory)
    with pytest.raises(CheckpointError, match="setting.txt: siBert settings, but bert_model.ckpt is not a siBert "
                                              "checkpoint"):
        from_pretrained(BertModel, directory)


def test_a_pretraining_directory_with_several_checkpoints_loads_the_prefix_named(sibert_dir, variables, tmp_path):
    """siBert's pretraining keeps up to ten checkpoints beside one setting.txt: the directory alone is
    ambiguous and refused, naming what to pass; a checkpoint prefix loads that checkpoint with the
    directory's config."""
    directory = tmp_path / "SiBertV0"
    shutil.copytree(sibert_dir, directory)
    later = random_sibert_variables(SETTINGS, seed=1)
    write_tf_checkpoint(directory, later, sibert_setting_txt(SETTINGS), "model.ckpt-6000", "setting.txt")
    with pytest.raises(CheckpointError, match=r"found \['model.ckpt-5000.index', 'model.ckpt-6000.index'\]: pass "
                                              r"the prefix of the one to load"):
        from_pretrained(BertModel, directory)
    import cnbert.tf as ctf
    from cnbert.tf import backend as tf_backend

    for prefix, expected in (("model.ckpt-5000", variables), ("model.ckpt-6000", later)):
        model, _ = from_pretrained(BertModel, directory / prefix)
        assert model.config == CONFIG
        np.testing.assert_array_equal(model.embeddings.word_embeddings.weight.detach().numpy(),
                                      expected["bert_model/embedding/word_embedding"])
    tf_model, _ = tf_backend.create_model("cmrc2018", CONFIG, directory / "model.ckpt-6000", directory / "vocab.txt")
    np.testing.assert_array_equal(ctf.canonical_weights(tf_model)["bert.embeddings.word_embeddings.weight"],
                                  later["bert_model/embedding/word_embedding"])


def test_the_vocabulary_beside_a_checkpoint_prefix_is_checked_in_both_frameworks(sibert_dir, tmp_path):
    """A prefix's config and vocabulary are its directory's: a vocab.txt one entry short of the
    config's vocab_size is refused whether the directory or the prefix is passed."""
    from cnbert.tf import BertModel as TFBertModel
    from cnbert.tf import load_pretrained as tf_load_pretrained

    directory = tmp_path / "SiBertV0"
    shutil.copytree(sibert_dir, directory)
    lines = (directory / "vocab.txt").read_text(encoding="utf-8").split("\n")
    (directory / "vocab.txt").write_text("\n".join(lines[:VOCAB_SIZE - 1]) + "\n", encoding="utf-8")
    message = (f"{directory / 'vocab.txt'}: the vocabulary has {VOCAB_SIZE - 1} entries but the model config says "
               f"vocab_size={VOCAB_SIZE}")
    for source in (directory, directory / "model.ckpt-5000"):
        with pytest.raises(CheckpointError, match=message):
            from_pretrained(BertModel, source)
        with pytest.raises(CheckpointError, match=message):
            tf_load_pretrained(TFBertModel(CONFIG), source)


def test_errors_about_a_tf_checkpoint_name_its_variables_and_their_stored_shapes(variables, tmp_path):
    """A mis-shaped kernel is reported under its converted name and transposed shape, with the TF
    variable and shape that tf.train.list_variables shows; a missing one says how it is named."""
    from cnbert.tf import BertModel as TFBertModel
    from cnbert.tf import load_pretrained as tf_load_pretrained

    kernel = "bert_model/transformers/layer_0/intermediate/proj_m1/w"
    broken = {name: value for name, value in variables.items()
              if name != "bert_model/transformers/layer_1/output/LayerNorm_output/beta"}
    broken[kernel] = np.zeros((64, 100), np.float32)
    directory = write_tf_checkpoint(tmp_path / "SiBertV0", broken, sibert_setting_txt(SETTINGS), "model.ckpt-5000",
                                    "setting.txt")
    message = (r"missing weights \[encoder\.layer\.1\.output\.LayerNorm\.bias\] \(named as transformers names the "
               r"converted TF variables\); encoder\.layer\.0\.intermediate\.dense\.weight: the checkpoint has shape "
               rf"\(100, 64\) but the model expects \(128, 64\) \(TF variable {kernel}, stored as \[64, 100\]\)")
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(BertModel, directory)
    with pytest.raises(CheckpointError, match=message):
        tf_load_pretrained(TFBertModel(CONFIG), directory)
    # a task model holds the encoder under "bert.": its names are found all the same
    with pytest.raises(CheckpointError, match=rf"bert\.encoder\.layer\.0\.intermediate\.dense\.weight: .* \(TF "
                                              rf"variable {kernel}, stored as \[64, 100\]\)"):
        from_pretrained(BertForSpanExtraction, directory)
