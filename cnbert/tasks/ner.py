"""Named-entity recognition tasks (MSRA NER): the tag set (its order fixes the classifier's output
indices), reading, scoring by entity-level F1, and the predictions file.

The best evaluation of a run is the one with the highest entity F1 (ties keep the earlier).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

from cnbert.data.ner import NerSentence, entity_scores, read_bio
from cnbert.io_utils import write_text


@dataclasses.dataclass(frozen=True)
class NerTask:
    name: str
    title: str
    labels: tuple[str, ...]
    metric_names: tuple[str, ...] = ("F1", "precision", "recall")

    def read(self, path, tagged: bool = True) -> list[NerSentence]:
        return read_bio(path, self.labels, tagged=tagged)

    def criterion(self, metrics: Mapping) -> float:
        """The one number that ranks evaluations: entity F1."""
        return float(metrics["F1"])


TASKS = {
    # MSRA (SIGHAN 2006) in its BIO release: persons, organisations, locations
    "msra_ner": NerTask("msra_ner", "MSRA NER", ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")),
}


def get_task(name: str) -> NerTask:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown NER task {name!r}; expected one of {sorted(TASKS)}") from None


def seen_key(sentence: NerSentence) -> tuple[str, ...]:
    """What makes an evaluated sentence a training one (runners' seen_in_training): its characters,
    whatever its tags."""
    return sentence.chars


def score(sentences: Sequence[NerSentence], predicted: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision / recall / F1 (×100) of predicted tags against the sentences' tags."""
    untagged = next((s.guid for s in sentences if s.tags is None), None)
    if untagged is not None:
        raise ValueError(f"sentence {untagged} has no tags to score against")
    return entity_scores([s.tags for s in sentences], predicted)


PREDICTIONS_FILE = "predictions.txt"


@dataclasses.dataclass
class NerPredictions:
    sentences: Sequence[NerSentence]
    predicted: Sequence[Sequence[str]]

    def write(self, directory) -> Path:
        """predictions.txt in `directory`, atomically: `character gold predicted` per line, tab-separated
        (`character predicted` for untagged sentences), a blank line after each sentence; conlleval
        reads it with `-d '\t'`."""
        lines = []
        for sentence, tags in zip(self.sentences, self.predicted):
            gold = sentence.tags if sentence.tags is not None else [None] * len(tags)
            lines += ["\t".join(field for field in (char, want, got) if field is not None)
                      for char, want, got in zip(sentence.chars, gold, tags)]
            lines.append("")
        path = Path(directory) / PREDICTIONS_FILE
        write_text(path, "\n".join(lines) + "\n")
        return path
