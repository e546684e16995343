"""The TF trainer against the PyTorch trainer (same batch plan, optimizer, schedule, clipping and
accumulation give the same losses and weights), under MirroredStrategy with two logical CPUs,
with mixed precision, and its guards."""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tensorflow as tf
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
import cnbert.tf as ctf

from cnbert.config import BertConfig  # noqa: E402
from cnbert.tf import backend  # noqa: E402
from cnbert.tf.optim import build_optimizer  # noqa: E402
from cnbert.training import TrainingConfig, global_batches  # noqa: E402
import cnbert.torch as cnbert_torch  # noqa: E402
from cnbert.torch.trainer import Trainer as TorchTrainer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
CONFIG = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                    attention="eager")
LOSS_TOLERANCE = 1e-5    # per-step mean loss, absolute (measured: <= 1e-6 over 6 steps)
WEIGHT_TOLERANCE = 2e-4  # after 6 AdamW steps of lr 2e-3, absolute (measured: 3e-5 to 4e-5)


def features(n=22, seq=16, seed=0, cjrc=True):
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(1, 100, (n, seq))
    attention_mask = np.ones_like(input_ids)
    attention_mask[::3, 10:] = 0
    input_ids[attention_mask == 0] = 0
    start = rng.integers(0, 10, n)
    start[::5] = -100
    arrays = dict(input_ids=input_ids, token_type_ids=np.zeros_like(input_ids), attention_mask=attention_mask,
                  start_positions=start, end_positions=rng.integers(0, 10, n))
    if cjrc:
        answer_class = rng.integers(0, 4, n)
        answer_class[::4] = -100
        arrays["answer_class"] = answer_class
    return arrays


def test_fp16_loss_scaling_starts_and_grows_as_torch_grad_scaler_does():
    optimizer = build_optimizer(TrainingConfig(precision="fp16"), [tf.Variable(np.zeros(3, np.float32))], 1e-3)
    scaler = torch.amp.GradScaler("cpu")
    assert float(optimizer.dynamic_scale.numpy()) == scaler.get_scale() == 2.0**16
    assert optimizer.dynamic_growth_steps == scaler.get_growth_interval() == 2000


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_weight_decay_applies_under_every_precision(precision):
    # The original list's fp16 path applied no weight decay (REFERENCE.md section 5): a zero gradient,
    # unscaled or not, still decays the matrix by lr * decay, and not the bias.
    variables = [tf.Variable(np.ones((4, 3), np.float32)), tf.Variable(np.ones(3, np.float32))]
    optimizer = build_optimizer(TrainingConfig(precision=precision, weight_decay=0.5), variables, 0.1)
    optimizer.apply([tf.zeros_like(v) for v in variables])
    np.testing.assert_allclose(variables[0].numpy(), 1 - 0.1 * 0.5, rtol=1e-6)
    np.testing.assert_array_equal(variables[1].numpy(), 1.0)


def test_adamw_with_clipping_and_decay_takes_torch_adamw_steps():
    rng = np.random.default_rng(0)
    matrix, bias = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    grads = [[rng.normal(0, s, size=(4, 3)).astype(np.float32), rng.normal(0, s, size=3).astype(np.float32)]
             for s in (1e-4, 3.0, 1e-3, 0.5)]  # tiny gradients show the epsilon placement, big ones the clipping
    config = TrainingConfig(learning_rate=1e-2, weight_decay=0.1, max_grad_norm=1.0, adam_epsilon=1e-6)

    variables = [tf.Variable(matrix), tf.Variable(bias)]
    optimizer = build_optimizer(config, variables, config.learning_rate)
    torch_params = [torch.nn.Parameter(torch.from_numpy(matrix.copy())), torch.nn.Parameter(torch.from_numpy(bias.copy()))]
    torch_optimizer = torch.optim.AdamW([{"params": torch_params[:1], "weight_decay": 0.1},
                                         {"params": torch_params[1:], "weight_decay": 0.0}],
                                        lr=1e-2, betas=(0.9, 0.999), eps=1e-6)
    for step_grads in grads:
        optimizer.apply([tf.constant(g) for g in step_grads])
        for p, g in zip(torch_params, step_grads):
            p.grad = torch.from_numpy(g)
        torch.nn.utils.clip_grad_norm_(torch_params, 1.0)
        torch_optimizer.step()
        for v, p in zip(variables, torch_params):
            np.testing.assert_allclose(v.numpy(), p.detach().numpy(), rtol=0, atol=2e-6)
    assert np.abs(variables[0].numpy() - matrix).max() > 0.02  # the steps were not vanishingly small


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_fit_reproduces_the_pytorch_trainer_step_for_step(tmp_path, schedule):
    """Identical weights and features, dropout off: the same batch plan (3 global batches of
    8, 8, 6 per epoch, 2 accumulation micro-steps), warm-up, schedule, clipping and weight decay give
    the same per-step losses, evaluations and final weights. The TF side runs XLA-compiled. (The two
    schedules' final weights differ by far more than WEIGHT_TOLERANCE, so a schedule the TF trainer
    dropped would fail here.)"""
    arrays = features()
    training = TrainingConfig(learning_rate=2e-3, num_train_epochs=2, train_batch_size=8, gradient_accumulation_steps=2,
                              eval_batch_size=8, max_grad_norm=1.0, warmup_proportion=0.2, lr_schedule=schedule,
                              weight_decay=0.1, eval_every=2, logging_steps=1)
    torch.manual_seed(0)
    reference = cnbert_torch.BertForCJRC(CONFIG)
    model, _ = backend.create_model("cjrc", CONFIG, None)
    ctf.load_canonical_weights(model, {k: v.numpy() for k, v in reference.state_dict().items()}, allow_fresh_heads=False)

    def torch_loss(outputs, batch):
        return cnbert_torch.cjrc_loss(outputs, batch["start_positions"], batch["end_positions"], batch["answer_class"],
                                      reduction="none")

    torch_trainer = TorchTrainer(reference, training, loss_fn=torch_loss, show_progress=False)
    torch_arrays = {k: v.astype(np.int64) for k, v in arrays.items()}
    want = torch_trainer.fit(torch_arrays, criterion=lambda m: m["s"],
                             evaluate=lambda: {"s": float(torch_trainer.predict(torch_arrays)["start_logits"].sum())})

    trainer = backend.Trainer(model, training, "cjrc", log_dir=tmp_path / "logs", show_progress=False)
    assert trainer.jit_compile
    best_seen = []
    got = trainer.fit(arrays, evaluate=lambda: {"s": float(trainer.predict(arrays)["start_logits"].sum())},
                      criterion=lambda m: m["s"],
                      on_new_best=lambda m: best_seen.append((m["step"], ctf.canonical_weights(model))))

    assert [s for s, _ in got.losses] == list(range(1, 7))
    np.testing.assert_allclose([l for _, l in got.losses], [l for _, l in want.losses], rtol=0, atol=LOSS_TOLERANCE)
    assert [e["step"] for e in got.evaluations] == [2, 4, 6] and got.best_step == want.best_step
    np.testing.assert_allclose([e["s"] for e in got.evaluations], [e["s"] for e in want.evaluations], rtol=0, atol=0.05)
    final = ctf.canonical_weights(model)
    for name, tensor in reference.state_dict().items():
        np.testing.assert_allclose(final[name], tensor.numpy(), rtol=0, atol=WEIGHT_TOLERANCE, err_msg=name)
    torch_predictions, predictions = torch_trainer.predict(torch_arrays), trainer.predict(arrays)
    for key in ("start_logits", "end_logits", "class_logits"):
        assert predictions[key].dtype == np.float32
        np.testing.assert_allclose(predictions[key], torch_predictions[key], rtol=0, atol=WEIGHT_TOLERANCE)
    # on_new_best ran at each evaluation that beat all earlier ones, with the weights of that moment
    record, new_bests = -math.inf, []
    for evaluation in got.evaluations:
        if evaluation["s"] > record:
            record = evaluation["s"]
            new_bests.append(evaluation["step"])
    assert [step for step, _ in best_seen] == new_bests and new_bests[-1] == got.best_step
    assert np.abs(best_seen[0][1]["qa_outputs.weight"] - final["qa_outputs.weight"]).max() > 1e-3

    events = EventAccumulator(str(tmp_path / "logs"))
    events.Reload()
    assert {"train/loss", "train/learning_rate", "eval/s"} <= set(events.Tags()["scalars"])
    logged_lr = {event.step: event.value for event in events.Scalars("train/learning_rate")}
    # the rate each step used: 0 at the first (warm-up starts there), the peak right after warm-up
    total = max(logged_lr)
    assert sorted(logged_lr) == list(range(1, total + 1))
    assert logged_lr[1] == 0.0
    assert logged_lr[training.warmup_steps(total) + 1] == pytest.approx(2e-3)
    assert logged_lr[total] == pytest.approx(2e-3 if schedule == "constant" else 2e-3 / (total - 1))


def first_step_gradients(monkeypatch, model, **settings):
    """The summed gradient the first optimizer step of a drcd run on `model` receives, as one flat
    vector: the trainer's gradient step is wrapped to record what it hands to the optimizer."""
    recorded = []
    compile_train_step = ctf.Trainer._compile_train_step

    def recording_compile(self, optimizer, accum):
        grad_step, apply_step = compile_train_step(self, optimizer, accum)

        def recording_grad_step(*args):
            loss_sum, grads = grad_step(*args)
            recorded.append(np.concatenate([g.numpy().ravel() for g in grads]))
            return loss_sum, grads

        return recording_grad_step, apply_step

    training = TrainingConfig(learning_rate=1e-3, num_train_epochs=1, train_batch_size=8, **settings)
    with monkeypatch.context() as patch:
        patch.setattr(ctf.Trainer, "_compile_train_step", recording_compile)
        backend.Trainer(model, training, "drcd", show_progress=False, jit_compile=False).fit(features(n=8, cjrc=False))
    return recorded[0]


def test_gradient_accumulation_hands_the_optimizer_the_one_big_batch_gradient(monkeypatch):
    """The step-for-step test above cannot see the gradient's scale (AdamW is nearly scale-invariant,
    clipping hides the rest). With clipping off, the summed gradient of step 1 (same weights, same
    global batch of 8) must be the global-batch mean however it is split: 2 micro-batches of 4, each
    divided by its own size instead of 8, would double it."""
    model, _ = backend.create_model("drcd", CONFIG, None)
    initial = [w.copy() for w in model.get_weights()]
    one = first_step_gradients(monkeypatch, model, max_grad_norm=0.0)
    model.set_weights(initial)
    accumulated = first_step_gradients(monkeypatch, model, max_grad_norm=0.0, gradient_accumulation_steps=2)
    assert np.abs(one).max() > 1e-3  # a real gradient, not zeros
    np.testing.assert_allclose(accumulated, one, rtol=1e-5, atol=1e-7)


DISTRIBUTED_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    # Two logical CPU devices must exist before TensorFlow initialises its devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import cnbert.tf as ctf
    from cnbert.config import BertConfig
    from cnbert.training import TrainingConfig

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    rng = np.random.default_rng(0)
    input_ids = rng.integers(1, 100, (26, 16))
    attention_mask = np.ones_like(input_ids)
    attention_mask[::3, 10:] = 0
    arrays = dict(input_ids=input_ids * attention_mask, token_type_ids=np.zeros_like(input_ids),
                  attention_mask=attention_mask, start_positions=rng.integers(0, 10, 26),
                  end_positions=rng.integers(0, 10, 26))
    # 26 = 10 + 10 + 6 features: the last global batch splits unevenly over replicas and micro-steps
    training = TrainingConfig(learning_rate=1e-3, num_train_epochs=1, train_batch_size=10,
                              gradient_accumulation_steps=2, eval_batch_size=4, max_grad_norm=0.5)
    # AdamW hardly sees a gradient's scale (nor does a clipped one): without clipping and with an
    # epsilon this large, a replica sum taken as a mean (or summed twice) moves the weights elsewhere
    scale_sensitive = TrainingConfig(learning_rate=0.1, num_train_epochs=1, train_batch_size=10,
                                     gradient_accumulation_steps=2, max_grad_norm=0.0, adam_epsilon=1.0,
                                     warmup_proportion=0.0)
    WATCHED = "bert.embeddings.LayerNorm.bias"  # starts at zero
    results = {"torch_imported": "torch" in sys.modules}
    for strategy in sys.argv[2:]:
        keras.utils.set_random_seed(0)
        model = ctf.BertForSpanExtraction(config)
        trainer = ctf.Trainer(model, training, "drcd", strategy_name=strategy, show_progress=False,
                              jit_compile=False)
        seen = []
        fit = trainer.fit(arrays, evaluate=lambda: {"s": float(trainer.predict(arrays)["start_logits"].sum())},
                          criterion=lambda m: m["s"],
                          on_new_best=lambda m: seen.append(ctf.canonical_weights(model)[WATCHED].tolist()))
        predictions = trainer.predict(arrays)
        results[strategy] = {
            "replicas": trainer.replicas, "chief": trainer.is_chief,
            "losses": [loss for _, loss in fit.losses], "evaluations": fit.evaluations,
            "start_logits": predictions["start_logits"].tolist(),
            "watched": ctf.canonical_weights(model)[WATCHED].tolist(), "seen": seen,
        }
        keras.utils.set_random_seed(0)
        model = ctf.BertForSpanExtraction(config)
        ctf.Trainer(model, scale_sensitive, "drcd", strategy_name=strategy, show_progress=False,
                    jit_compile=False).fit(arrays)
        results[strategy]["scale_sensitive"] = np.concatenate([w.ravel() for w in model.get_weights()]).tolist()
    json.dump(results, open(sys.argv[1], "w"))
""")


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_matches_one_device(tmp_path):
    """Two child processes (started together to overlap TensorFlow's start-up): one trains with
    one_device then mirrored, the other with multi_worker_mirrored (a single local worker; its
    collectives cannot share a process with the mirrored strategy's)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    runs = {}
    for name, strategies in (("local", ["one_device", "mirrored"]), ("multi_worker", ["multi_worker_mirrored"])):
        out = tmp_path / f"{name}.json"
        runs[name] = (out, subprocess.Popen([sys.executable, "-c", DISTRIBUTED_CHILD, str(out), *strategies], env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = {}
    for out, child in runs.values():
        _, stderr = child.communicate(timeout=400)
        assert child.returncode == 0, stderr[-4000:]
        results.update(json.loads(out.read_text()))
    assert results["torch_imported"] is False  # the TF path never imports torch
    one, mirrored, multi_worker = results["one_device"], results["mirrored"], results["multi_worker_mirrored"]
    assert (one["replicas"], mirrored["replicas"], multi_worker["replicas"]) == (1, 2, 1)
    assert one["chief"] and mirrored["chief"] and multi_worker["chief"]
    for other in (mirrored, multi_worker):
        assert len(other["losses"]) == len(one["losses"]) == 3
        np.testing.assert_allclose(other["losses"], one["losses"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(other["start_logits"], one["start_logits"], rtol=0, atol=1e-4)
        np.testing.assert_allclose(other["watched"], one["watched"], rtol=0, atol=1e-5)
        # the caller's model held the trained weights when on_new_best ran (the end of training here)
        assert len(other["seen"]) == 1
        np.testing.assert_allclose(other["seen"][0], other["watched"], rtol=0, atol=0)
    assert np.abs(np.array(one["watched"])).max() > 1e-3  # trained away from its zero start
    for other in (mirrored, multi_worker):
        np.testing.assert_allclose(other["scale_sensitive"], one["scale_sensitive"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_with_gradient_checkpointing(precision):
    """The first step's loss (initial weights, first global batch of the plan) is the fp32 loss
    within half-precision rounding: 1 % (bf16 keeps 8 mantissa bits, LayerNorm/softmax/loss run in fp32)."""
    arrays = features(n=12, cjrc=False)
    model, _ = backend.create_model("drcd", CONFIG.replace(initializer_range=0.2), None)
    rows = global_batches(12, 4, seed=5, epoch=0)[0]
    outputs = model(arrays["input_ids"][rows], attention_mask=arrays["attention_mask"][rows])
    fp32_loss = float(ctf.span_loss(outputs, arrays["start_positions"][rows], arrays["end_positions"][rows],
                                    reduction="none").numpy().mean())
    training = TrainingConfig(learning_rate=1e-3, num_train_epochs=1, train_batch_size=4, precision=precision,
                              gradient_checkpointing=True, seed=5)
    trainer = backend.Trainer(model, training, "drcd", show_progress=False, jit_compile=False)
    query = next(layer for layer in model._flatten_layers() if layer.name == "query")
    assert query.compute_dtype == {"bf16": "bfloat16", "fp16": "float16"}[precision]
    assert model.qa_outputs.compute_dtype == "float32"  # the head stays float32
    assert model.bert.encoder.gradient_checkpointing
    losses = [loss for _, loss in trainer.fit(arrays).losses]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert losses[0] == pytest.approx(fp32_loss, rel=1e-2) and losses[0] != fp32_loss
    predictions = trainer.predict(arrays)
    assert predictions["start_logits"].dtype == np.float32 and predictions["start_logits"].shape == (12, 16)


def test_a_loss_that_stays_non_finite_stops_training_without_touching_the_weights():
    arrays = features(n=12, cjrc=False)
    model, _ = backend.create_model("drcd", CONFIG, None)
    model.qa_outputs.bias.assign([np.nan, 0.0])
    before = ctf.canonical_weights(model)
    training = TrainingConfig(num_train_epochs=3, train_batch_size=4, max_consecutive_nonfinite=2)
    trainer = backend.Trainer(model, training, "drcd", show_progress=False, jit_compile=False)
    with pytest.raises(ctf.NonFiniteLossError, match="NaN/inf for 2 consecutive steps \\(last at step 2\\)") as info:
        trainer.fit(arrays)
    assert [step for step, _ in info.value.result.losses] == [1, 2]  # the stopping step is logged too
    after = ctf.canonical_weights(model)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


def test_bad_features_are_rejected_before_anything_is_compiled():
    model, _ = backend.create_model("cjrc", CONFIG, None)
    trainer = backend.Trainer(model, TrainingConfig(train_batch_size=4), "cjrc", show_progress=False)
    arrays = features(n=8)
    with pytest.raises(ValueError, match=r"end_positions holds \[16\] \(rows \[3\]\)"):
        trainer.fit(dict(arrays, end_positions=np.where(np.arange(8) == 3, 16, arrays["end_positions"])))
    with pytest.raises(ValueError, match=r"answer_class holds \[4, 4, 4"):
        trainer.fit(dict(arrays, answer_class=np.full(8, 4)))
    with pytest.raises(ValueError, match=r"feature arrays lack \['answer_class'\]"):
        trainer.fit({k: v for k, v in arrays.items() if k != "answer_class"})
    with pytest.raises(ValueError, match=r"attention_mask has shape \(8, 15\), expected \(8, 16\)"):
        trainer.predict(dict(arrays, attention_mask=arrays["attention_mask"][:, 1:]))
    with pytest.raises(ValueError, match="cannot fill 2 processes|smaller than processes"):
        backend.Trainer(model, TrainingConfig(train_batch_size=1, gradient_accumulation_steps=2), "cjrc",
                        show_progress=False).fit(arrays)
    with pytest.raises(TypeError, match="task 'drcd' needs a BertForSpanExtraction, got BertForCJRC"):
        backend.Trainer(model, TrainingConfig(), "drcd")
    with pytest.raises(ValueError, match="unknown distribution strategy 'tpu'"):
        ctf.Trainer(model, TrainingConfig(), "cjrc", strategy_name="tpu")


def varied_length_features(task, n=30, seq=80, seed=3):
    """Rows of 3 to `seq` tokens (most under 32) with a classifier's labels or a tagger's tags."""
    rng = np.random.default_rng(seed)
    lengths = np.where(rng.random(n) < 0.7, rng.integers(3, 33, n), rng.integers(33, seq + 1, n))
    attention_mask = (np.arange(seq) < lengths[:, None]).astype(np.int64)
    arrays = dict(input_ids=rng.integers(1, 100, (n, seq)) * attention_mask,
                  token_type_ids=np.zeros((n, seq), np.int64), attention_mask=attention_mask)
    if task == "msra_ner":
        arrays["tags"] = np.where(attention_mask == 1, rng.integers(0, 7, (n, seq)), -100)
    else:
        arrays["labels"] = rng.integers(0, 3, n)
    return arrays


@pytest.mark.parametrize("task", ["xnli", "msra_ner"])
def test_trimmed_steps_run_at_bucket_widths_and_train_as_full_width_does(task, monkeypatch):
    """A classifier's or tagger's steps run at the power-of-two width of their longest row (at most
    the arrays' 80 columns), so XLA compiles 32, 64 and 80 only; losses and weights are those of
    full-width steps (padding is masked), up to float rounding."""
    arrays = varied_length_features(task)
    config = CONFIG.replace(max_position_embeddings=80, hidden_dropout_prob=0.0)
    training = TrainingConfig(learning_rate=2e-3, num_train_epochs=2, train_batch_size=6, gradient_accumulation_steps=2,
                              warmup_proportion=0.0)
    widths = []
    replica_inputs = ctf.Trainer._replica_inputs

    def recording(self, arrays, batch_index, step, micro_size):
        batch, weights, seeds = replica_inputs(self, arrays, batch_index, step, micro_size)
        widths.append((batch["input_ids"].shape[-1], int(arrays["attention_mask"][batch_index].sum(axis=1).max())))
        return batch, weights, seeds

    monkeypatch.setattr(ctf.Trainer, "_replica_inputs", recording)
    runs, initial = {}, None
    for trim in (False, True):
        model, _ = backend.create_model(task, config, None)
        if initial is None:
            initial = ctf.canonical_weights(model)
        ctf.load_canonical_weights(model, initial, allow_fresh_heads=False)
        # trimming is the default for classifiers and taggers
        trainer = backend.Trainer(model, training, task, show_progress=False, trim_padding=None if trim else False)
        assert trainer.trim_padding is trim
        widths.clear()
        losses = [loss for _, loss in trainer.fit(arrays).losses]
        runs[trim] = losses, ctf.canonical_weights(model), trainer.predict(arrays)["logits"], list(widths)
    assert {width for width, _ in runs[False][3]} == {80}
    trimmed_widths = runs[True][3]
    assert all(width == min(80, max(32, 1 << (longest - 1).bit_length())) for width, longest in trimmed_widths)
    assert {width for width, _ in trimmed_widths} == {32, 64, 80}  # every bucket is used by this data
    np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=0, atol=1e-5)
    for name, value in runs[False][1].items():
        np.testing.assert_allclose(runs[True][1][name], value, rtol=0, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(runs[True][2], runs[False][2], rtol=0, atol=1e-4)  # predictions back in row order
    if task == "msra_ner":
        assert np.all(runs[True][2][arrays["attention_mask"] == 0] == 0)


def test_span_models_keep_the_full_width():
    model, _ = backend.create_model("drcd", CONFIG, None)
    assert not backend.Trainer(model, TrainingConfig(), "drcd", show_progress=False).trim_padding
    with pytest.raises(ValueError, match="trim_padding would change the loss of a span model"):
        backend.Trainer(model, TrainingConfig(), "drcd", trim_padding=True)


def test_only_the_chief_writes_when_the_cluster_has_one():
    from types import SimpleNamespace

    from cnbert.tf.distribute import is_chief

    def strategy(spec, task_type, task_id):
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(spec), task_type=task_type, task_id=task_id)
        return SimpleNamespace(cluster_resolver=resolver)

    with_chief = {"chief": ["localhost:1"], "worker": ["localhost:2", "localhost:3"]}
    assert is_chief(strategy(with_chief, "chief", 0))
    assert not is_chief(strategy(with_chief, "worker", 0)) and not is_chief(strategy(with_chief, "worker", 1))
    workers = {"worker": ["localhost:2", "localhost:3"]}  # no chief: worker 0 writes
    assert is_chief(strategy(workers, "worker", 0)) and not is_chief(strategy(workers, "worker", 1))
