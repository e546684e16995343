"""Evaluated examples that are training examples word for word: counted per split, noted by the
runners and recorded in the report (test_classify_runner has the run)."""
import pytest

from cnbert.data import ClassificationExample as Example
from cnbert.data import read_cmrc2018
from cnbert.report import describe_seen, format_markdown, summarize_seeds
from cnbert.runners.training_run import seen_in_training
from cnbert.tasks import classification, ner
from conftest import data_file


def pair(example):
    return example.text_a, example.text_b


@pytest.mark.data
@pytest.mark.parametrize("task, files, expected", [
    # a quarter of ChnSentiCorp's dev and test reviews are in its training file (labels agree on nearly all)
    ("chnsenticorp", ("chnsenticorp/train.tsv", "chnsenticorp/dev.tsv", "chnsenticorp/test.tsv"),
     {"dev": {"seen": 338, "of": 1200}, "test": {"seen": 331, "of": 1200}}),
    ("lcqmc", ("lcqmc/lcqmc_train.tsv", "lcqmc/lcqmc_dev.tsv", "lcqmc/lcqmc_test.tsv"),
     {"dev": {"seen": 162, "of": 8802}, "test": {"seen": 30, "of": 12500}}),
])
def test_the_standard_classification_splits_overlap_their_training_files(task, files, expected):
    reader = classification.get_task(task)
    examples = {name: reader.read(data_file(path)) for name, path in zip(("train", "dev", "test"), files)}
    assert seen_in_training(examples, pair) == expected


@pytest.mark.data
def test_msra_test_sentences_are_none_of_its_training_ones():
    task = ner.get_task("msra_ner")
    examples = {"train": task.read(data_file("msra_ner/msra_train_bio")),
                "test": task.read(data_file("msra_ner/msra_test_bio.txt"))}
    assert seen_in_training(examples, lambda sentence: sentence.chars) == {"test": {"seen": 0, "of": 3442}}


@pytest.mark.data
def test_cmrc2018_dev_passages_are_none_of_its_training_ones():
    examples = {name: read_cmrc2018(data_file(f"cmrc2018/cmrc2018_{name}.json")).examples for name in ("train", "dev")}
    passages = seen_in_training(examples, lambda example: example.context_text)
    assert passages == {"dev": {"seen": 0, "of": 3219}}  # so no question (the runner's key) is either


def test_only_what_the_model_reads_counts_not_the_label():
    train = [Example("t:2", "好", None, "1"), Example("t:3", "差", None, "0"), Example("t:4", "问", "答", "1")]
    dev = [Example("d:2", "好", None, "0"), Example("d:3", "问", None, "1"), Example("d:4", "问", "答", "0"),
           Example("d:5", "答", "问", "1")]
    assert seen_in_training({"train": train, "dev": dev}, pair) == {"dev": {"seen": 2, "of": 4}}


def test_the_report_says_how_many_evaluated_examples_were_trained_on():
    summary = summarize_seeds({1: {"accuracy": 95.0}}, ["accuracy"])
    summary["seen_in_training"] = {"dev": {"seen": 338, "of": 1200}, "test": {"seen": 0, "of": 1200}}
    markdown = format_markdown(summary, "ChnSentiCorp dev")
    assert "\n338 of the 1200 dev examples (28.2 %) are training examples word for word.\n" in markdown
    assert "test examples" not in markdown  # none of them
    assert describe_seen("test", 331, 1200) == \
        "331 of the 1200 test examples (27.6 %) are training examples word for word"
