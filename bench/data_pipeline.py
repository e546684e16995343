"""Time cnbert's feature building against Hugging Face's usual preprocessing of the same examples,
in one run on one machine (CPU only: both are tokenisation and numpy).

    CNBERT_DATA=../shared/data python bench/data_pipeline.py
    CNBERT_DATA=../shared/data python bench/data_pipeline.py --tasks=cmrc2018 --limit=2000 --json=out.json

For each task the training file is read once with cnbert's reader (its time is reported apart);
then the same examples become model inputs twice:
- cnbert: the runner's feature builder (cnbert.data.*), at the runner's defaults;
- baseline: transformers' BertTokenizerFast on the same vocabulary, as Hugging Face's example
  scripts preprocess (run_qa's prepare_train_features, run_ner's word_ids label alignment,
  run_glue's pair encoding), padded to the same length, outputs turned into numpy arrays.
They are not the same computation, and the table says how their outputs differ in size:
- MRC: cnbert limits the question to --max_query_length and starts windows doc_stride pieces
  apart (google-research/bert); run_qa keeps the whole question, and its `stride` is the overlap
  between windows, here set so that a window of a question of median length advances doc_stride
  pieces. Labels: the answer's first and last piece, or [CLS] when outside the window, in both.
- NER: both put one token per character; cnbert windows a sentence longer than the length,
  run_ner truncates it.
- Classification: both encode [CLS] a [SEP] b [SEP] truncated to the length (longest first) and
  pad to the set's longest row.
Each side runs --repeats times; the table shows the fastest. Prints a table; --json writes it too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from cnbert.data.classification import build_classification_features
from cnbert.data.mrc_features import FeatureConfig, build_features
from cnbert.data.ner import build_ner_features
from cnbert.tasks import classification, mrc, ner
from cnbert.tokenization import ChineseBertTokenizer, bundled_vocab_path

FILES = {"cmrc2018": "cmrc2018/cmrc2018_train.json", "msra_ner": "msra_ner/msra_train_bio",
         "lcqmc": "lcqmc/lcqmc_train.tsv"}
# the runners' defaults (README): MRC 512 / 64 / 128, NER 128, classification 128
MRC_SIZES = FeatureConfig(max_seq_length=512, max_query_length=64, doc_stride=128)
NER_LENGTH = CLASSIFICATION_LENGTH = 128


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(FILES), help=f"comma-separated, of {', '.join(FILES)}")
    parser.add_argument("--data", default=os.environ.get("CNBERT_DATA"), help="the shared data folder")
    parser.add_argument("--limit", type=int, default=None, help="use the first N examples of each file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not args.data:
        parser.error("--data or CNBERT_DATA must name the shared data folder")
    args.tasks = args.tasks.split(",")
    unknown = sorted(set(args.tasks) - set(FILES))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(FILES)}")
    return args


def fastest(function, repeats: int) -> tuple[float, object]:
    """The shortest of `repeats` timed calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


# ---- the baselines: Hugging Face's example scripts' preprocessing ------------------------------

def hf_mrc(examples, tokenizer) -> dict[str, np.ndarray]:
    """run_qa's prepare_train_features: overflowing windows with offsets, answers mapped to pieces."""
    questions = [example.model_question for example in examples]
    median_question = int(statistics.median(len(ids) for ids in tokenizer(questions)["input_ids"]))
    window = MRC_SIZES.max_seq_length - median_question - 1  # the passage pieces beside a median question
    encoded = tokenizer(questions, [example.model_context for example in examples], truncation="only_second",
                        max_length=MRC_SIZES.max_seq_length, stride=max(window - MRC_SIZES.doc_stride, 0),
                        return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    starts, ends = [], []
    for i, offsets in enumerate(encoded["offset_mapping"]):
        example = examples[encoded["overflow_to_sample_mapping"][i]]
        answer = example.answers[0]
        sequence_ids = encoded.sequence_ids(i)
        context = [k for k, s in enumerate(sequence_ids) if s == 1]
        first, last = context[0], context[-1]
        char_start, char_end = answer.answer_start, answer.answer_start + len(answer.text)
        if not (offsets[first][0] <= char_start and offsets[last][1] >= char_end):
            starts.append(0), ends.append(0)
            continue
        start = first
        while start <= last and offsets[start][0] <= char_start:
            start += 1
        end = last
        while end >= first and offsets[end][1] >= char_end:
            end -= 1
        starts.append(start - 1), ends.append(end + 1)
    arrays = {name: np.asarray(encoded[name], np.int32) for name in ("input_ids", "token_type_ids", "attention_mask")}
    return {**arrays, "start_positions": np.asarray(starts, np.int32), "end_positions": np.asarray(ends, np.int32)}


def hf_ner(sentences, tokenizer, labels) -> dict[str, np.ndarray]:
    """run_ner's tokenize_and_align_labels: words are characters here; -100 off the first piece."""
    label_ids = {label: i for i, label in enumerate(labels)}
    encoded = tokenizer([list(sentence.chars) for sentence in sentences], is_split_into_words=True,
                        truncation=True, max_length=NER_LENGTH, padding="max_length")
    tagged = []
    for i, sentence in enumerate(sentences):
        previous, row = None, []
        for word in encoded.word_ids(i):
            row.append(-100 if word is None or word == previous else label_ids[sentence.tags[word]])
            previous = word
        tagged.append(row)
    arrays = {name: np.asarray(encoded[name], np.int32) for name in ("input_ids", "token_type_ids", "attention_mask")}
    return {**arrays, "labels": np.asarray(tagged, np.int32)}


def hf_classification(examples, tokenizer, labels) -> dict[str, np.ndarray]:
    """run_glue's preprocess_function for a pair task."""
    label_ids = {label: i for i, label in enumerate(labels)}
    encoded = tokenizer([e.text_a for e in examples], [e.text_b for e in examples], truncation=True,
                        max_length=CLASSIFICATION_LENGTH, padding="longest")  # as cnbert pads: to the set's longest
    arrays = {name: np.asarray(encoded[name], np.int32) for name in ("input_ids", "token_type_ids", "attention_mask")}
    return {**arrays, "labels": np.asarray([label_ids[e.label] for e in examples], np.int32)}


# ---- one task ----------------------------------------------------------------------------------

def run_task(name: str, path: Path, args, ours: ChineseBertTokenizer, theirs) -> dict:
    start = time.perf_counter()
    if name == "cmrc2018":
        examples = mrc.get_task(name).read(str(path)).examples
        examples = [e for e in examples if e.answers and e.answers[0].answer_start is not None][:args.limit]
        cnbert = lambda: build_features(examples, ours, MRC_SIZES, training=True).model_arrays()  # noqa: E731
        baseline = lambda: hf_mrc(examples, theirs)  # noqa: E731
    elif name == "msra_ner":
        task = ner.get_task(name)
        examples = task.read(path)[:args.limit]
        cnbert = lambda: build_ner_features(examples, ours, NER_LENGTH, task.labels).model_arrays()  # noqa: E731
        baseline = lambda: hf_ner(examples, theirs, task.labels)  # noqa: E731
    else:
        task = classification.get_task(name)
        examples = task.read(path)[:args.limit]
        cnbert = lambda: build_classification_features(  # noqa: E731
            examples, ours, CLASSIFICATION_LENGTH, task.labels).model_arrays()
        baseline = lambda: hf_classification(examples, theirs, task.labels)  # noqa: E731
    read_seconds = time.perf_counter() - start
    cnbert_seconds, cnbert_arrays = fastest(cnbert, args.repeats)
    baseline_seconds, baseline_arrays = fastest(baseline, args.repeats)
    return {"task": name, "file": str(path), "examples": len(examples), "read_seconds": read_seconds,
            "cnbert": {"seconds": cnbert_seconds, "rows": len(cnbert_arrays["input_ids"]),
                       "width": int(cnbert_arrays["input_ids"].shape[1])},
            "baseline": {"seconds": baseline_seconds, "rows": len(baseline_arrays["input_ids"]),
                         "width": int(baseline_arrays["input_ids"].shape[1])},
            "speedup": baseline_seconds / cnbert_seconds}


def table(results: list[dict]) -> str:
    lines = ["| task | examples | read (s) | cnbert (s) | rows x width | HF baseline (s) | rows x width | baseline / cnbert |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ours, theirs = r["cnbert"], r["baseline"]
        lines.append(f"| {r['task']} | {r['examples']} | {r['read_seconds']:.2f} | {ours['seconds']:.2f} | "
                     f"{ours['rows']} x {ours['width']} | {theirs['seconds']:.2f} | {theirs['rows']} x "
                     f"{theirs['width']} | {r['speedup']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    import transformers

    args = parse_args()
    vocab = bundled_vocab_path()
    ours = ChineseBertTokenizer(vocab)
    theirs = transformers.BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True, tokenize_chinese_chars=True)
    results = [run_task(name, Path(args.data) / FILES[name], args, ours, theirs) for name in args.tasks]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"
    print(f"# feature building, fastest of {args.repeats} ({machine}; transformers {transformers.__version__})")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "repeats": args.repeats, "results": results}, indent=2))


if __name__ == "__main__":
    main()
