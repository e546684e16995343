"""Time cnbert's trainer (PyTorch or TensorFlow) on real classification features with and without
trimming padding columns, in one run on one machine.

    CNBERT_DATA=../shared/data python bench/trim_padding.py --task=lcqmc --steps=12
    CNBERT_DATA=../shared/data python bench/trim_padding.py --task=lcqmc --steps=12 --framework=tf

The features are the task's training file (XNLI: dev, the only split here) at --max_seq_length,
padded to the set's longest row as the runners build them; the model is a randomly initialised
BERT of the given size without dropout (timing does not depend on the weights). PyTorch trims each
micro-batch to its longest row rounded up to 8 columns (cnbert.training.trim_padding); TensorFlow
trims each step to a power-of-two width (cnbert.training.bucket_width), which XLA compiles once.
Each setting trains --steps + 1 optimizer steps. Per-step times leave out the first step (warm-up)
and, with TensorFlow, every step that compiled a new width; compilation shows in the total time
(use enough --steps that every width recurs).
Full width and trimmed train on the same shuffled batches, and their losses are compared: they must
agree, as trimming cuts only columns every row masks. A third setting trims batches grouped by
length (--group_by_length), drawn from 50 batches' worth of examples, so it trains on other
batches. Prints a table; --json writes it too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from cnbert.config import BertConfig
from cnbert.data.classification import build_classification_features
from cnbert.tasks import classification as tasks
from cnbert.tokenization import ChineseBertTokenizer
from cnbert.training import GROUP_BATCHES, TrainingConfig

# the training file where $CNBERT_DATA has one (XNLI's is not there)
FILES = {"lcqmc": "lcqmc/lcqmc_train.tsv", "chnsenticorp": "chnsenticorp/train.tsv", "xnli": "xnli_zh/dev.tsv"}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(FILES), default="lcqmc")
    parser.add_argument("--data", default=os.environ.get("CNBERT_DATA"), help="the shared data folder")
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--framework", choices=["torch", "tf"], default="torch")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="torch: where to run (default: cuda when torch sees a GPU); TensorFlow places ops itself")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not args.data:
        parser.error("--data or CNBERT_DATA must name the shared data folder")
    return args


def time_setting(arrays, config, args, trim: bool, group_by_length: bool = False) -> dict:
    """Train --steps + 1 steps and time each from its start to the next step's (the last to the end)."""
    steps = args.steps + 1
    # grouped by length, the sample is one run of GROUP_BATCHES batches sorted by length, of which the
    # first `steps` of the shuffled order are trained on
    batches = max(steps, GROUP_BATCHES) if group_by_length else steps
    training = TrainingConfig(learning_rate=2e-5, num_train_epochs=steps / batches, train_batch_size=args.batch_size,
                              warmup_proportion=0.0, seed=1, group_by_length=group_by_length)
    # a fixed random sample, as the shuffled batches of a real epoch draw them
    order = np.random.default_rng(0).permutation(len(arrays["labels"]))[:args.batch_size * batches]
    train = {name: array[order] for name, array in arrays.items()}
    fit, starts, widths, sync = (fit_torch if args.framework == "torch" else fit_tf)(config, training, args, trim)
    began = time.perf_counter()
    result = fit(train)
    sync()
    ends = starts[1:] + [time.perf_counter()]
    # timed: every step after the first; with TF, only those whose width an earlier step ran (XLA compiles each new one)
    timed = [end - start for i, (start, end, width) in enumerate(zip(starts, ends, widths))
             if i > 0 and (args.framework == "torch" or width in widths[:i])]
    return {"trim": trim, "group_by_length": group_by_length, "ms_per_step": 1000 * float(np.mean(timed)),
            "timed_steps": len(timed), "total_s": time.perf_counter() - began, "widths": sorted(set(widths)),
            "mean_width": float(np.mean(widths[1:])), "losses": [loss for _, loss in result.losses]}


def fit_torch(config, training, args, trim):
    """(fit, step start times, step widths, sync): a forward pre-hook records each micro-batch."""
    import torch

    from cnbert.torch import backend
    from cnbert.torch.distributed import DistContext

    torch.manual_seed(0)
    model, _ = backend.create_model(args.task, config)
    trainer = backend.Trainer(model, training, args.task, ctx=DistContext(device=torch.device(args.device)),
                              show_progress=False, trim_padding=trim)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    starts, widths = [], []

    def step_started(module, positional, kwargs):
        sync()
        starts.append(time.perf_counter())
        widths.append(kwargs["input_ids"].shape[1])

    model.register_forward_pre_hook(step_started, with_kwargs=True)
    return trainer.fit, starts, widths, sync


def fit_tf(config, training, args, trim):
    """(fit, step start times, step widths, sync): the trainer's per-step input builder is wrapped
    to record each step (it runs after the previous step's loss was read back, so that step is done)."""
    from cnbert.tf import backend

    backend.seed_everything(0)
    model, _ = backend.create_model(args.task, config)
    trainer = backend.Trainer(model, training, args.task, show_progress=False, trim_padding=trim)
    starts, widths = [], []
    replica_inputs = trainer._replica_inputs

    def recording(arrays, batch_index, step, micro_size):
        starts.append(time.perf_counter())
        inputs = replica_inputs(arrays, batch_index, step, micro_size)
        widths.append(inputs[0]["input_ids"].shape[-1])
        return inputs

    trainer._replica_inputs = recording
    return trainer.fit, starts, widths, lambda: None


def main():
    args = parse_args()
    if args.framework == "torch":
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        framework = f"torch {torch.__version__}"
        device = torch.cuda.get_device_name() if args.device == "cuda" else \
            f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    else:
        if args.device:
            raise SystemExit("--device is for --framework=torch: TensorFlow places ops itself")
        import tensorflow as tf

        framework = f"TensorFlow {tf.__version__}, XLA"
        gpus = tf.config.list_physical_devices("GPU")
        device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else \
            f"{platform.processor() or 'CPU'}, {os.cpu_count()} cores"
    task = tasks.get_task(args.task)
    examples = task.read(Path(args.data) / FILES[args.task])
    features = build_classification_features(examples, ChineseBertTokenizer(), args.max_seq_length, task.labels)
    arrays = features.model_arrays()
    lengths = arrays["attention_mask"].sum(1)
    needed = args.batch_size * max(args.steps + 1, GROUP_BATCHES)
    if len(lengths) < needed:
        raise SystemExit(f"{FILES[args.task]} has {len(lengths)} examples, fewer than the {needed} needed")
    config = BertConfig(vocab_size=21128, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden,
                        max_position_embeddings=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        attention="sdpa")
    full, trimmed, grouped = (time_setting(arrays, config, args, trim, group) for trim, group in
                              ((False, False), (True, False), (True, True)))
    worst = float(np.max(np.abs(np.subtract(full["losses"], trimmed["losses"]))))
    print(f"{args.task} {FILES[args.task]}: {len(lengths)} examples padded to {arrays['input_ids'].shape[1]} columns "
          f"(token count: median {np.median(lengths):.0f}, max {lengths.max()}); BERT {args.layers} layers x "
          f"{args.hidden}, batch {args.batch_size}, {args.steps} steps, fp32, {framework}, {device}")
    print(f"{'setting':<44}{'mean columns':>14}{'widths run':>14}{'ms / step':>12}{'speed-up':>10}{'total s':>10}")
    for name, row in (("full width (baseline)", full), ("trimmed", trimmed),
                      ("trimmed, batches grouped by length", grouped)):
        print(f"{name:<44}{row['mean_width']:>14.1f}{len(row['widths']):>14}{row['ms_per_step']:>12.1f}"
              f"{full['ms_per_step'] / row['ms_per_step']:>9.2f}x{row['total_s']:>10.1f}")
    which = "steps after the first" + (" that ran a width an earlier step ran" if args.framework == "tf" else "")
    print(f"ms / step: mean over the {full['timed_steps']}, {trimmed['timed_steps']} and {grouped['timed_steps']} "
          f"{which}; total s: the whole fit, compilation included")
    print(f"full width and trimmed train on the same batches: largest loss difference {worst:.1e}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "device": device,
                                         "framework": framework,
                                         "full": full, "trimmed": trimmed, "grouped": grouped,
                                         "max_loss_difference": worst}, indent=1))


if __name__ == "__main__":
    main()
