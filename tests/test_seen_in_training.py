"""Evaluated examples that are training examples (each task module's seen_key): counted per split,
noted by the runners and recorded in the report (test_classify_runner has the run)."""
import pytest

from cnbert.data import ClassificationExample as Example
from cnbert.data import MrcAnswer, MrcExample, NerSentence, read_cmrc2018
from cnbert.report import describe_seen, format_markdown, summarize_seeds
from cnbert.runners.training_run import examples_digest, seen_in_training, with_unseen_scores
from cnbert.tasks import classification, mrc, ner
from conftest import data_file


@pytest.mark.data
@pytest.mark.parametrize("task, files, expected", [
    # 28 % of ChnSentiCorp's dev and test reviews are in its training file (labels agree on nearly all)
    ("chnsenticorp", ("chnsenticorp/train.tsv", "chnsenticorp/dev.tsv", "chnsenticorp/test.tsv"),
     {"dev": {"seen": 338, "of": 1200}, "test": {"seen": 331, "of": 1200}}),
    # about half of these LCQMC pairs are in the training file with their two questions swapped
    ("lcqmc", ("lcqmc/lcqmc_train.tsv", "lcqmc/lcqmc_dev.tsv", "lcqmc/lcqmc_test.tsv"),
     {"dev": {"seen": 323, "of": 8802}, "test": {"seen": 84, "of": 12500}}),
])
def test_the_standard_classification_splits_overlap_their_training_files(task, files, expected):
    reader = classification.get_task(task)
    examples = {name: reader.read(data_file(path)) for name, path in zip(("train", "dev", "test"), files)}
    assert seen_in_training(examples, classification.seen_key) == expected


@pytest.mark.data
def test_msra_test_sentences_are_none_of_its_training_ones():
    task = ner.get_task("msra_ner")
    examples = {"train": task.read(data_file("msra_ner/msra_train_bio")),
                "test": task.read(data_file("msra_ner/msra_test_bio.txt"))}
    assert seen_in_training(examples, ner.seen_key) == {"test": {"seen": 0, "of": 3442}}


@pytest.mark.data
def test_cmrc2018_dev_passages_are_none_of_its_training_ones():
    examples = {name: read_cmrc2018(data_file(f"cmrc2018/cmrc2018_{name}.json")).examples for name in ("train", "dev")}
    passages = seen_in_training(examples, lambda example: mrc.passage_key(example.context_text))
    assert passages == {"dev": {"seen": 0, "of": 3219}}  # so no question on one (mrc.seen_key) is either
    assert seen_in_training(examples, mrc.seen_key) == {"dev": {"seen": 0, "of": 3219}}


def test_a_classification_example_is_its_texts_in_either_order_whatever_its_label():
    train = [Example("t:2", "好", None, "1"), Example("t:3", "差", None, "0"), Example("t:4", "问", "答", "1")]
    dev = [Example("d:2", "好", None, "0"),  # the same text, another label: seen
           Example("d:3", "问", None, "1"),  # one text of a training pair: not seen
           Example("d:4", "答", "问", "0"),  # a training pair swapped: seen
           Example("d:5", "问", "答案", "1")]  # a training pair's first text with another second: not seen
    assert seen_in_training({"train": train, "dev": dev}, classification.seen_key) == {"dev": {"seen": 2, "of": 4}}


def test_a_question_is_seen_on_a_copy_of_its_passage_not_on_another_question():
    def question(qid, text, context):
        return MrcExample(qid, text, context, (MrcAnswer("", None),))

    train = [question("t1", "谁是原告？", "原告主张……被告辩称")]
    dev = [question("d1", "谁是原告？", "原告主张&hellip;&hellip;被告辩称"),  # a copy of the passage: seen
           question("d2", "谁是被告？", "原告主张……被告辩称")]  # another question on it: not seen
    assert seen_in_training({"train": train, "dev": dev}, mrc.seen_key) == {"dev": {"seen": 1, "of": 2}}


def test_a_sentence_is_seen_by_its_characters_whatever_its_tags_or_line():
    train = [NerSentence("train.txt:1", tuple("王小明在北京"), ("B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC"))]
    dev = [NerSentence("dev.txt:9", tuple("王小明在北京"), ("O",) * 6),
           NerSentence("dev.txt:1", tuple("王小明在上海"), None)]
    assert seen_in_training({"train": train, "dev": dev}, ner.seen_key) == {"dev": {"seen": 1, "of": 2}}


def test_the_examples_digest_changes_with_any_field_or_the_order():
    examples = [Example("t:2", "好", None, "1"), Example("t:3", "差", None, "0")]
    digest = examples_digest(examples)
    assert len(digest) == 64 and examples_digest(list(examples)) == digest
    assert examples_digest(examples[::-1]) != digest
    assert examples_digest([examples[0], Example("t:3", "差", None, "1")]) != digest  # a label
    assert examples_digest([examples[0], Example("t:4", "差", None, "0")]) != digest  # where it is in its file


def test_the_report_says_how_many_evaluated_examples_were_trained_on():
    summary = summarize_seeds({1: {"accuracy": 95.0}}, ["accuracy"])
    summary["seen_in_training"] = {"dev": {"seen": 338, "of": 1200}, "test": {"seen": 0, "of": 1200}}
    markdown = format_markdown(summary, "ChnSentiCorp dev")
    assert "\n338 of the 1200 dev examples (28.2 %) are training examples word for word.\n" in markdown
    assert "test examples" not in markdown  # none of them
    assert describe_seen("test", 1, 12500) == \
        "1 of the 12500 test examples (under 0.1 %) are training examples word for word"


def test_unseen_scores_are_the_same_scores_over_the_examples_not_trained_on():
    def score(rows):
        return {"accuracy": 100.0 * len(rows) / 4}

    assert with_unseen_scores({"accuracy": 75.0}, [0, 2], score) == \
        {"accuracy": 75.0, "unseen": {"examples": 2, "accuracy": 50.0}}
    assert with_unseen_scores({"accuracy": 75.0}, None, score) == {"accuracy": 75.0}  # none or all seen
    assert with_unseen_scores(None, [0], score) is None  # an unlabelled split has no scores


def test_the_report_gives_the_unseen_examples_scores_over_seeds():
    summary = summarize_seeds({1: {"accuracy": 95.0}, 2: {"accuracy": 96.0}}, ["accuracy"])
    summary["unseen"] = {"examples": 862, **summarize_seeds({1: {"accuracy": 93.0}, 2: {"accuracy": 93.5}},
                                                            ["accuracy"])}
    assert "\nOn the 862 dev examples not trained on alone, mean (max): accuracy 93.250 (93.500).\n" in \
        format_markdown(summary, "ChnSentiCorp dev")
    # a continued run whose kept seed an older cnbert trained: the seeds the scores are over are named
    summary["unseen"] = {"examples": 862, "seeds_without": [2], **summarize_seeds({1: {"accuracy": 93.0}},
                                                                                  ["accuracy"])}
    assert ("\nOn the 862 dev examples not trained on alone, mean (max) over seeds 1 (2: none recorded): accuracy "
            "93.000 (93.000).\n") in format_markdown(summary, "ChnSentiCorp dev")
