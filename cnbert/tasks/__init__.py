"""Task definitions that tie readers, features, post-processing and the official scorers together
(framework-neutral)."""
from cnbert.tasks import classification, ner

# Tasks by the head their models need (the task names of cnbert.tasks.mrc.TASKS,
# classification.TASKS and ner.TASKS); each framework maps a head to its model classes.
TASK_HEADS = {"cmrc2018": "span", "drcd": "span", "cjrc": "cjrc",
              **{name: "classification" for name in classification.TASKS},
              **{name: "tagging" for name in ner.TASKS}}

# The label arrays (of the features' model_arrays) each head's loss reads, in the loss's argument order.
HEAD_LABELS = {"span": ("start_positions", "end_positions"),
               "cjrc": ("start_positions", "end_positions", "answer_class"),
               "classification": ("labels",), "tagging": ("tags",)}


def ignores_padding(task: str) -> bool:
    """Whether a task's loss and outputs read no padding position, so that a trainer may cut the
    padding columns every row masks: classifiers and taggers. Not the span models, whose softmax
    over positions covers the whole window, padding included, as Google's and transformers' do."""
    return TASK_HEADS.get(task) in ("classification", "tagging")


def trims_padding(task: str, trim_padding: bool | None = None) -> bool:
    """Whether a trainer of `task` trims the padding columns: `trim_padding`, by default (None)
    ignores_padding(task); ValueError where trimming would change the task's loss."""
    if trim_padding is None:
        return ignores_padding(task)
    if trim_padding and not ignores_padding(task):
        raise ValueError(f"trim_padding would change the loss of a {TASK_HEADS.get(task)} model (task {task!r})")
    return trim_padding


def output_labels(task: str) -> tuple[str, ...] | None:
    """The labels a task's classifier outputs, in order: a classification or NER task's; None for
    reading comprehension (whose heads output spans)."""
    if task in classification.TASKS:
        return classification.TASKS[task].labels
    if task in ner.TASKS:
        return ner.TASKS[task].labels
    return None
