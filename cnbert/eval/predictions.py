"""Reading the JSON files the scorers take: predictions files and SQuAD-style gold files.

Every problem is a `DataError` naming the file and the entry, raised before any scoring starts.
"""
from dataclasses import dataclass

from cnbert.errors import DataError
from cnbert.io_utils import read_json_file


def load_predictions(path, allow_list=False):
    """Read a predictions file as {question id: answer text}.

    The file is a JSON object mapping ids to answer strings. With `allow_list`, the official CJRC
    form `[{"id": ..., "answer": ...}, ...]` is accepted too.
    """
    data = read_json_file(path, key_name="id")
    if isinstance(data, dict):
        for question_id, answer in data.items():
            if not isinstance(answer, str):
                raise DataError(path, f"id {question_id!r}",
                                f"answer must be a string, got {type(answer).__name__}")
        return data
    if allow_list and isinstance(data, list):
        return _predictions_from_list(path, data)
    expected = "a JSON object {id: answer}" + (
        ' or a list [{"id": ..., "answer": ...}]' if allow_list else "")
    raise DataError(path, None, f"expected {expected}, got a JSON {type(data).__name__}")


def _predictions_from_list(path, entries):
    predictions = {}
    for index, entry in enumerate(entries):
        where = f"entry {index}"
        if not isinstance(entry, dict):
            raise DataError(path, where, f'expected {{"id": ..., "answer": ...}}, got {type(entry).__name__}')
        for field in ("id", "answer"):
            if field not in entry:
                raise DataError(path, where, f"missing field {field!r}")
        qas_id, answer = question_id(entry["id"]), entry["answer"]
        if qas_id is None:
            raise DataError(path, where, f"id must be a string or an integer, got {type(entry['id']).__name__}")
        where = f"entry {index} (id {qas_id!r})"
        if not isinstance(answer, str):
            raise DataError(path, where, f"answer must be a string, got {type(answer).__name__}")
        if qas_id in predictions:
            raise DataError(path, where, "id appears twice")
        predictions[qas_id] = answer
    return predictions


@dataclass(frozen=True)
class GoldQuestion:
    """One question of a SQuAD-style gold file, as the scorers need it."""

    id: str
    answers: tuple[str, ...]  # the `text` of each gold answer, in file order
    domain: object  # `domain` of the enclosing top-level data item (CJRC), unchecked; None if absent


def read_gold_questions(gold_data, source):
    """Walk `data[].paragraphs[].qas[]` of a SQuAD-style gold file, checking every field used.

    `source` names the file in errors. Question ids must be unique: both official scorers would
    silently double-count or overwrite a repeated id.
    """
    if not isinstance(gold_data, dict) or not isinstance(gold_data.get("data"), list):
        raise DataError(source, None, 'expected a JSON object with a "data" list (SQuAD style)')
    questions = []
    seen = set()
    for i, item in enumerate(gold_data["data"]):
        paragraphs = item.get("paragraphs") if isinstance(item, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(source, f"data[{i}]", 'missing "paragraphs" list')
        for j, paragraph in enumerate(paragraphs):
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(qas, list):
                raise DataError(source, f"data[{i}].paragraphs[{j}]", 'missing "qas" list')
            for k, qa in enumerate(qas):
                question = _read_gold_question(qa, item.get("domain"), source,
                                               f"data[{i}].paragraphs[{j}].qas[{k}]")
                if question.id in seen:
                    raise DataError(source, f"question {question.id!r}", "id appears twice")
                seen.add(question.id)
                questions.append(question)
    return questions


def question_id(value) -> str | None:
    """A question id as cnbert keys it: a string, or an integer id written as a string (the MRC
    readers accept both, and prediction files are keyed by strings); None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _read_gold_question(qa, domain, source, position):
    qas_id = question_id(qa.get("id")) if isinstance(qa, dict) else None
    if qas_id is None:
        raise DataError(source, position, 'missing "id" (a string or an integer)')
    where = f"question {qas_id!r}"
    answers = qa.get("answers")
    if not isinstance(answers, list):
        raise DataError(source, where, 'missing "answers" list')
    texts = []
    for n, answer in enumerate(answers):
        text = answer.get("text") if isinstance(answer, dict) else None
        if not isinstance(text, str):
            raise DataError(source, where, f'answers[{n}] has no string "text"')
        texts.append(text)
    return GoldQuestion(qas_id, tuple(texts), domain)
