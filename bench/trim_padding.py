"""Time cnbert's PyTorch trainer on real classification features with and without trimming each
micro-batch to its longest row (cnbert.training.trim_padding), in one run on one machine.

    CNBERT_DATA=../shared/data python bench/trim_padding.py --task=lcqmc --steps=12

The features are the task's training file (XNLI: dev, the only split here) at --max_seq_length,
padded to the set's longest row as the runners build them; the model is a randomly initialised
BERT of the given size without dropout (timing does not depend on the weights). Each setting trains
the same --steps optimizer steps on the same shuffled batches after one untimed warm-up step, and
their losses are compared: they must agree, as trimming cuts only columns every row masks. Prints a
table; --json writes it as well.
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
from cnbert.training import TrainingConfig

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


def time_setting(arrays, config, args, trim: bool) -> dict:
    torch.manual_seed(0)
    model, _ = backend.create_model(args.task, config)
    training = TrainingConfig(learning_rate=2e-5, num_train_epochs=1, train_batch_size=args.batch_size,
                              warmup_proportion=0.0, seed=1)
    trainer = backend.Trainer(model, training, args.task, ctx=DistContext(device=torch.device(args.device)),
                              show_progress=False)
    trainer.trim_padding = trim
    # a fixed random sample, as the shuffled batches of a real epoch draw them
    order = np.random.default_rng(0).permutation(len(arrays["labels"]))[:args.batch_size * (args.steps + 1)]
    warm_up = {name: array[order[:args.batch_size]] for name, array in arrays.items()}
    timed = {name: array[order[args.batch_size:]] for name, array in arrays.items()}
    trainer.fit(warm_up)  # allocator, kernels, threads
    widths = []
    model.register_forward_pre_hook(lambda module, a, kwargs: widths.append(kwargs["input_ids"].shape[1]),
                                    with_kwargs=True)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    result = trainer.fit(timed)
    sync()
    seconds = time.perf_counter() - start
    return {"trim": trim, "ms_per_step": 1000 * seconds / len(result.losses), "mean_width": float(np.mean(widths)),
            "losses": [loss for _, loss in result.losses]}


def main():
    args = parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    task = tasks.get_task(args.task)
    examples = task.read(Path(args.data) / FILES[args.task])
    features = build_classification_features(examples, ChineseBertTokenizer(), args.max_seq_length, task.labels)
    arrays = features.model_arrays()
    lengths = arrays["attention_mask"].sum(1)
    if len(lengths) < args.batch_size * (args.steps + 1):
        raise SystemExit(f"{FILES[args.task]} has {len(lengths)} examples, fewer than {args.batch_size * (args.steps + 1)}")
    config = BertConfig(vocab_size=21128, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden,
                        max_position_embeddings=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                        attention="sdpa")
    full, trimmed = (time_setting(arrays, config, args, trim) for trim in (False, True))
    worst = float(np.max(np.abs(np.subtract(full["losses"], trimmed["losses"]))))
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.processor() or 'CPU'}, " \
                                                                          f"{torch.get_num_threads()} threads"
    print(f"{args.task} {FILES[args.task]}: {len(lengths)} examples padded to {arrays['input_ids'].shape[1]} columns "
          f"(token count: median {np.median(lengths):.0f}, max {lengths.max()}); BERT {args.layers} layers x "
          f"{args.hidden}, batch {args.batch_size}, {args.steps} steps, fp32, torch {torch.__version__}, {device}")
    print(f"{'setting':<28}{'mean columns':>14}{'ms / step':>12}")
    for name, row in (("full width (baseline)", full), ("trimmed to the longest row", trimmed)):
        print(f"{name:<28}{row['mean_width']:>14.1f}{row['ms_per_step']:>12.1f}")
    print(f"speed-up {full['ms_per_step'] / trimmed['ms_per_step']:.2f}x; largest loss difference {worst:.1e}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "device": device,
                                         "full": full, "trimmed": trimmed, "max_loss_difference": worst}, indent=1))


if __name__ == "__main__":
    main()
