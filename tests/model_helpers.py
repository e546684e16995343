"""What the model tests (PyTorch, TensorFlow, transformers parity) share: tiny sizes, random weights,
padded batches, and model directories that carry the bundled vocabulary."""
import json
import shutil

import numpy as np
import torch

from cnbert.tokenization import bundled_vocab_path
from cnbert.torch import span_loss

VOCAB_SIZE = 21128  # the bundled vocabulary, so model directories carry a real vocab.txt
TINY_BERT = dict(vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128, max_position_embeddings=48)


def randomise(model, seed=0):
    """Every parameter random (LayerNorm included), so a swapped or unloaded tensor changes the outputs.
    seed=None draws from the torch generator as the caller left it."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model.eval()


def random_transformers_model(class_name, attention="eager", seed=0, **config):
    """transformers.<class_name> built from `config` by its own config class, randomised (seed as in
    randomise), in eval mode."""
    import transformers  # optional: only the parity tests need it, and they skip without it

    model_class = getattr(transformers, class_name)
    model = model_class._from_config(model_class.config_class(**config), attn_implementation=attention)
    return randomise(model, seed)


def padded_arrays(vocab_size=VOCAB_SIZE, seed=1, lengths=(20, 13, 6), seq_length=20, segment_b_start=8):
    """input_ids, attention_mask, token_type_ids (int64 numpy): row i holds lengths[i] random ids from 1
    up, then padding (id 0, mask 0); positions from segment_b_start on are the second segment."""
    input_ids = np.random.default_rng(seed).integers(1, vocab_size, (len(lengths), seq_length))
    attention_mask = (np.arange(seq_length) < np.asarray(lengths)[:, None]).astype(np.int64)
    input_ids[attention_mask == 0] = 0
    token_type_ids = np.zeros_like(input_ids)
    token_type_ids[:, segment_b_start:] = 1
    return input_ids, attention_mask, token_type_ids


def padded_batch(**kwargs):
    """padded_arrays(**kwargs) as torch tensors."""
    return tuple(torch.from_numpy(array) for array in padded_arrays(**kwargs))


def fixed_batch_losses(model, steps=30):
    """span_loss of a span model (vocab_size 200) over `steps` AdamW steps (lr 1e-3) on one padded batch."""
    input_ids, attention_mask, token_type_ids = padded_batch()
    input_ids = input_ids % 200
    starts, ends = torch.tensor([9, 10, 2]), torch.tensor([11, 12, 4])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = span_loss(model(input_ids, attention_mask, token_type_ids), starts, ends)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def our_logits(model, batch=None):
    """(start, end) logits of a cnbert model on `batch` (default: padded_batch()), in eval mode."""
    with torch.no_grad():
        out = model.eval()(*(padded_batch() if batch is None else batch))
    return out["start_logits"], out["end_logits"]


def hf_logits(model, batch=None):
    """(start, end) logits of a transformers question-answering model, as our_logits."""
    input_ids, attention_mask, token_type_ids = padded_batch() if batch is None else batch
    with torch.no_grad():
        out = model.eval()(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    return out.start_logits, out.end_logits


def assert_same_logits(got, expected, atol):
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=atol, rtol=0)


def copy_bundled_vocab(directory):
    shutil.copyfile(bundled_vocab_path(), directory / "vocab.txt")
    return directory


def save_hf(model, directory):
    """A Hugging Face model directory (transformers' save_pretrained) with the bundled vocab."""
    model.save_pretrained(directory)
    return copy_bundled_vocab(directory)


def google_config(config):
    """The bert_config.json of Google's releases: cnbert's config without the keys they lack."""
    return {k: v for k, v in config.to_dict().items() if k not in ("model_type", "layer_norm_eps", "attention")}


def write_tf_checkpoint(directory, variables, config, prefix, config_name):
    """A TF1 checkpoint (tf.compat.v1 Saver with a global_step, as Google, brightmart and siBert wrote
    theirs), its config (a dict written as JSON, or the text of a file such as siBert's setting.txt)
    and the bundled vocab."""
    import tensorflow as tf

    directory.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        for name, value in variables.items():
            tf.compat.v1.get_variable(name, initializer=value)
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(directory / prefix))
    (directory / config_name).write_text(config if isinstance(config, str) else json.dumps(config))
    return copy_bundled_vocab(directory)


def assert_padding_does_not_leak(model, batch=None):
    """Changing padded tokens leaves the real tokens' start logits alone (within 1e-6), and
    dropping the mask does not: the mask is what keeps them equal."""
    input_ids, attention_mask, token_type_ids = batch if batch is not None else padded_batch()
    changed = input_ids.clone()
    changed[attention_mask == 0] = 777
    with torch.no_grad():
        before = model(input_ids, attention_mask, token_type_ids)["start_logits"]
        after = model(changed, attention_mask, token_type_ids)["start_logits"]
        unmasked = model(changed, None, token_type_ids)["start_logits"]
    real = attention_mask.bool()
    torch.testing.assert_close(after[real], before[real], atol=1e-6, rtol=0)
    assert (unmasked[real] - before[real]).abs().max() > 1e-3


def count_kernel_calls(monkeypatch, names=("scaled_masked_softmax", "bias_gelu")):
    """{name: 0} for each cnbert.kernels op in `names`, counting that op's calls from now on."""
    import cnbert.kernels as kernels

    calls = dict.fromkeys(names, 0)
    for name in names:
        def counting(*args, _original=getattr(kernels, name), _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernels, name, counting)
    return calls


def assert_fused_matches_eager(eager, fused):
    """Span-extraction models with the same weights, one forward and backward each on padded_batch():
    both logits within 1e-5 and every parameter gradient within 1e-5 + 1e-4 relative (fp32; the
    kernels accumulate in fp32 like torch, only the summation order differs)."""
    input_ids, attention_mask, token_type_ids = padded_batch()
    starts, ends = torch.tensor([9, 10, 2]), torch.tensor([11, 12, 4])
    outputs = {}
    for name, model in (("eager", eager), ("fused", fused)):
        outputs[name] = model(input_ids, attention_mask, token_type_ids)
        span_loss(outputs[name], starts, ends).backward()
    for key in ("start_logits", "end_logits"):
        torch.testing.assert_close(outputs["fused"][key], outputs["eager"][key], atol=1e-5, rtol=0)
    for (name, p_eager), (_, p_fused) in zip(eager.named_parameters(), fused.named_parameters()):
        torch.testing.assert_close(p_fused.grad, p_eager.grad, atol=1e-5, rtol=1e-4, msg=name)


def sibert_setting_txt(settings):
    """siBert's setting.txt as its check_args writes it: every pretrain.py argument, one "name: str(value)"
    line each in argparse order, between two dashed lines; `settings` replaces the model arguments."""
    arguments = {"train_steps": 1000000, "n_batch": 32, "lr": 0.0001, "dropout": 0.1, "clip_norm": 1.0,
                 "loss_scale": 32768.0, "warmup_iters": 10000, "beta1": 0.9, "beta2": 0.98, "loss_count": 1000,
                 "seed": 556, "float16": True, "log_interval": 100, "save_interval": 50000, "show_eval": True,
                 "hidden_size": 768, "n_head": 12, "n_layer": 12, "n_timesteps": 512, "n_mask": 80,
                 "max_position_embeddings": 512, "vocab_size": 20879, "type_vocab_size": 2, "mlp_ratio": 4,
                 "train_dir": "preprocessed_data/scp_cls_data_0826/tfrecords", "checkpoint_dir": "check_points/SiBertV0/",
                 "setting_file": "check_points/SiBertV0/setting.txt", "log_file": "check_points/SiBertV0/log.txt"}
    lines = [f"{name}: {value}" for name, value in {**arguments, **settings}.items()]
    return "\n".join(["------------ Options -------------", *lines, "-------------- End ----------------"]) + "\n"


def random_sibert_variables(settings, seed=0, norm_names=("gamma", "beta")):
    """Random float32 variables of siBert's encoder (models/SiBert.py names, conv1d weights `w` [in, out])
    for `settings` (siBert's keys); norm_names: the LayerNorm scale and shift names."""
    rng = np.random.default_rng(seed)
    hidden, inner = settings["hidden_size"], settings["hidden_size"] * settings["mlp_ratio"]

    def normal(*shape, mean=0.0):
        return rng.normal(mean, 0.2, shape).astype(np.float32)

    variables = {
        "bert_model/embedding/word_embedding": normal(settings["vocab_size"], hidden),
        "bert_model/embedding/position_embedding": normal(settings["max_position_embeddings"], hidden),
        "bert_model/embedding/token_type_embedding": normal(settings["type_vocab_size"], hidden),
    }

    def layer_norm(module):
        variables[f"{module}/{norm_names[0]}"] = normal(hidden, mean=1.0)
        variables[f"{module}/{norm_names[1]}"] = normal(hidden)

    def conv1d(module, n_in, n_out):
        variables[f"{module}/w"] = normal(n_in, n_out)
        variables[f"{module}/bias"] = normal(n_out)

    layer_norm("bert_model/embedding/LayerNorm_emb")
    for index in range(settings["n_layer"]):
        layer = f"bert_model/transformers/layer_{index}/"
        for projection in ("q", "k", "v"):
            conv1d(f"{layer}self_attention/proj_{projection}", hidden, hidden)
        conv1d(f"{layer}attention_output/proj_a", hidden, hidden)
        layer_norm(f"{layer}attention_output/LayerNorm_att")
        conv1d(f"{layer}intermediate/proj_m1", hidden, inner)
        conv1d(f"{layer}output/proj_m2", inner, hidden)
        layer_norm(f"{layer}output/LayerNorm_output")
    conv1d("bert_model/pooler/cls_pooler_dense", hidden, hidden)
    return variables


def train_in_both_frameworks(task, arrays, num_labels, config=None, **training_overrides):
    """Fit `config` (default: TINY_BERT; dropout off, eager attention) for one epoch of batches of 8 on
    `arrays` with the PyTorch and the TensorFlow trainers from the same initial weights; assert that
    they take the same steps (per-step losses within 1e-5) and end with the same logits (2e-4), and
    that the first loss is that of a fresh `num_labels`-way classifier (ln num_labels ± 0.5).
    training_overrides: other TrainingConfig settings. Returns the TF trainer."""
    from cnbert.config import BertConfig
    import cnbert.tf as ctf
    from cnbert.tf import backend as tf_backend
    from cnbert.torch import backend as torch_backend
    from cnbert.training import TrainingConfig

    config = BertConfig(**TINY_BERT) if config is None else config
    config = config.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
                            attention="eager")
    training = TrainingConfig(**{"learning_rate": 2e-3, "num_train_epochs": 1, "train_batch_size": 8,
                                 "eval_batch_size": 8, "warmup_proportion": 0.2, **training_overrides})
    torch.manual_seed(0)
    reference, _ = torch_backend.create_model(task, config)
    model, _ = tf_backend.create_model(task, config)
    ctf.load_canonical_weights(model, {k: v.numpy() for k, v in reference.state_dict().items()},
                               allow_fresh_heads=False)
    torch_trainer = torch_backend.Trainer(reference, training, task, show_progress=False)
    want = torch_trainer.fit(arrays)
    trainer = tf_backend.Trainer(model, training, task, show_progress=False)
    got = trainer.fit(arrays)
    assert len(got.losses) == len(want.losses) >= 3
    np.testing.assert_allclose([l for _, l in got.losses], [l for _, l in want.losses], atol=1e-5, rtol=0)
    assert abs(want.losses[0][1] - np.log(num_labels)) < 0.5
    np.testing.assert_allclose(trainer.predict(arrays)["logits"], torch_trainer.predict(arrays)["logits"],
                               atol=2e-4, rtol=0)
    return trainer
