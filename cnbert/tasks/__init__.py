"""Task definitions that tie readers, features, post-processing and the official scorers together
(framework-neutral)."""
from cnbert.tasks import classification, ner


def output_labels(task: str) -> tuple[str, ...] | None:
    """The labels a task's classifier outputs, in order: a classification or NER task's; None for
    reading comprehension (whose heads output spans)."""
    if task in classification.TASKS:
        return classification.TASKS[task].labels
    if task in ner.TASKS:
        return ner.TASKS[task].labels
    return None
