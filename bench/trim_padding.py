"""Time cnbert's PyTorch trainer on real classification features with and without trimming each
micro-batch to its longest row (cnbert.training.trim_padding), in one run on one machine.

    CNBERT_DATA=../shared/data python bench/trim_padding.py --task=lcqmc --steps=12

The features are the task's training file (XNLI: dev, the only split here) at --max_seq_length,
padded to the set's longest row as the runners build them; the model is a randomly initialised
BERT of the given size without dropout (timing does not depend on the weights). Each setting
trains --steps + 1 optimizer steps and times the last --steps (the first warms up). Full width and
trimmed train on the same shuffled batches, and their losses are compared: they must agree, as trimming cuts only columns every
row masks. A third setting trims batches grouped by length (--group_by_length), drawn from 50
batches' worth of examples, so it trains on other batches. Prints a table; --json writes it too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cnbert.config import BertConfig
from cnbert.data.classification import build_classification_features
from cnbert.tasks import classification as tasks
from cnbert.tokenization import ChineseBertTokenizer
from cnbert.torch import backend
from cnbert.torch.distributed import DistContext
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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not args.data:
        parser.error("--data or CNBERT_DATA must name the shared data folder")
    return args


def time_setting(arrays, config, args, trim: bool, group_by_length: bool = False) -> dict:
    """Train --steps + 1 steps; the first warms up (allocator, kernels, threads; grouped by length it is
    the batch holding the longest example, as in every epoch) and the other --steps are timed."""
    torch.manual_seed(0)
    model, _ = backend.create_model(args.task, config)
    steps = args.steps + 1
    # grouped by length, the sample is one run of GROUP_BATCHES batches sorted by length, of which the
    # first `steps` of the shuffled order are trained on
    batches = max(steps, GROUP_BATCHES) if group_by_length else steps
    training = TrainingConfig(learning_rate=2e-5, num_train_epochs=steps / batches, train_batch_size=args.batch_size,
                              warmup_proportion=0.0, seed=1, group_by_length=group_by_length)
    trainer = backend.Trainer(model, training, args.task, ctx=DistContext(device=torch.device(args.device)),
                              show_progress=False)
    trainer.trim_padding = trim
    # a fixed random sample, as the shuffled batches of a real epoch draw them
    order = np.random.default_rng(0).permutation(len(arrays["labels"]))[:args.batch_size * batches]
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    starts, widths = [], []

    def step_started(module, positional, kwargs):
        sync()
        starts.append(time.perf_counter())
        widths.append(kwargs["input_ids"].shape[1])

    model.register_forward_pre_hook(step_started, with_kwargs=True)
    result = trainer.fit({name: array[order] for name, array in arrays.items()})
    sync()
    seconds = time.perf_counter() - starts[1]
    return {"trim": trim, "group_by_length": group_by_length, "ms_per_step": 1000 * seconds / (len(starts) - 1),
            "mean_width": float(np.mean(widths[1:])), "losses": [loss for _, loss in result.losses]}


def main():
    args = parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
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
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'CPU'}, " \
                                                                          f"{torch.get_num_threads()} threads"
    print(f"{args.task} {FILES[args.task]}: {len(lengths)} examples padded to {arrays['input_ids'].shape[1]} columns "
          f"(token count: median {np.median(lengths):.0f}, max {lengths.max()}); BERT {args.layers} layers x "
          f"{args.hidden}, batch {args.batch_size}, {args.steps} steps, fp32, torch {torch.__version__}, {device}")
    print(f"{'setting':<44}{'mean columns':>14}{'ms / step':>12}{'speed-up':>10}")
    for name, row in (("full width (baseline)", full), ("trimmed to the longest row", trimmed),
                      ("trimmed, batches grouped by length", grouped)):
        print(f"{name:<44}{row['mean_width']:>14.1f}{row['ms_per_step']:>12.1f}"
              f"{full['ms_per_step'] / row['ms_per_step']:>9.2f}x")
    print(f"full width and trimmed train on the same batches: largest loss difference {worst:.1e}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "device": device,
                                         "full": full, "trimmed": trimmed, "grouped": grouped,
                                         "max_loss_difference": worst}, indent=1))


if __name__ == "__main__":
    main()
