"""Reading-comprehension examples read from CMRC 2018 and DRCD (SQuAD layout) and CJRC (CAIL2019).

Every reader validates while it reads and raises `DataError` naming the file and the question id
(or the paragraph) on malformed JSON, a missing or mistyped field, an empty context or question,
an `answer_start` too far outside the context to be repaired, or a question id seen twice.

Answer offsets in the public files are not always right (CMRC 2018 train: 21 of 10142 answers have
an `answer_start` 1–2 characters past where the answer really starts). Each span answer is checked against its context; a wrong offset is repaired
to the nearest occurrence of the answer text within ±`MAX_OFFSET_REPAIR` characters, and an answer
whose text is not found there keeps `answer_start=None`. Nothing is dropped: every repair and every
unlocatable answer is listed in the `ReadReport` returned with the examples, and logged.

`answer_start == -1` is the files' own marker for "no offset": YES / NO / unknown answers in CJRC,
and some extra reference answers in CMRC 2018 dev (which is scored on text). Such answers get
`answer_start=None` and are counted in `ReadReport.without_offset` when they are span answers.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
from pathlib import Path
from typing import NamedTuple

from cnbert.data.chinese_convert import TraditionalToSimplified
from cnbert.errors import DataError
from cnbert.eval.cjrc_metric import DOMAINS
from cnbert.io_utils import read_json_file

logger = logging.getLogger(__name__)

MAX_OFFSET_REPAIR = 5
NO_OFFSET = -1


class AnswerKind(enum.IntEnum):
    """Kinds of answer; the values are the CJRC class labels (ANSWER_CLASSES order of the model)."""

    SPAN = 0
    YES = 1
    NO = 2
    UNKNOWN = 3


# The CJRC answer-class head's outputs, in order.
ANSWER_CLASSES = tuple(kind.name.lower() for kind in AnswerKind)


@dataclasses.dataclass(frozen=True)
class MrcAnswer:
    """One reference answer.

    text: as in the file ("YES" / "NO" / "" for CJRC's non-span kinds).
    answer_start: character offset of `text` in the example's `context_text`, checked (repaired if
        the file's offset was a few characters off); None when the file gives no offset (-1) or
        the text is not found near the given offset.
    """

    text: str
    answer_start: int | None
    kind: AnswerKind = AnswerKind.SPAN

    @property
    def answer_end(self) -> int | None:
        return None if self.answer_start is None else self.answer_start + len(self.text)


@dataclasses.dataclass(frozen=True)
class MrcExample:
    """One question on one passage (google-research/bert's SquadExample, with character offsets).

    context_text / question_text are the file's text; predictions are sliced from context_text.
    model_context / model_question are what the model reads (DRCD: simplified Chinese; otherwise the
    same strings). model_context always has the length of context_text and its character i stands
    for character i of context_text, so character offsets are shared between the two.
    answers: every reference answer, in file order; the first one is the training target.
    domain, is_impossible: CJRC fields ("" / False elsewhere). is_impossible is the file's flag;
        the class used for training is the first reference's kind (see `answer_kind`).
    """

    qas_id: str
    question_text: str
    context_text: str
    answers: tuple[MrcAnswer, ...]
    title: str = ""
    domain: str = ""
    is_impossible: bool = False
    model_question: str = ""
    model_context: str = ""

    def __post_init__(self):
        if not self.model_question:
            object.__setattr__(self, "model_question", self.question_text)
        if not self.model_context:
            object.__setattr__(self, "model_context", self.context_text)
        if len(self.model_context) != len(self.context_text):
            raise ValueError(f"question {self.qas_id}: model_context has {len(self.model_context)} characters, "
                             f"context_text {len(self.context_text)}; they must be aligned character for character")

    @property
    def training_answer(self) -> MrcAnswer | None:
        """The reference a training feature is labelled with: the first one (None if there is none)."""
        return self.answers[0] if self.answers else None

    @property
    def answer_kind(self) -> AnswerKind:
        """Kind of the training answer; a question without references is UNKNOWN."""
        return self.answers[0].kind if self.answers else AnswerKind.UNKNOWN

    @property
    def gold_texts(self) -> list[str]:
        return [a.text for a in self.answers]


@dataclasses.dataclass(frozen=True)
class OffsetRepair:
    qas_id: str
    answer_index: int
    given_start: int
    repaired_start: int


@dataclasses.dataclass(frozen=True)
class InconsistentAnswer:
    """A span answer whose text is not within ±MAX_OFFSET_REPAIR characters of its answer_start."""

    qas_id: str
    answer_index: int
    given_start: int
    text: str


@dataclasses.dataclass(frozen=True)
class ReadReport:
    """What reading a file found and changed.

    span_answers: answers with a text to locate (all answers of CMRC/DRCD; CJRC's non-YES/NO/"").
    repaired / inconsistent: see the module docstring; without_offset: span answers given -1.
    conversion_fallbacks: texts (passages and questions) that the traditional → simplified
        conversion had to convert character by character (DRCD only).
    empty_questions: ids of questions whose text is empty or blank (kept, not an error).
    """

    path: str
    questions: int
    span_answers: int
    repaired: tuple[OffsetRepair, ...]
    inconsistent: tuple[InconsistentAnswer, ...]
    without_offset: int
    conversion_fallbacks: int = 0
    empty_questions: tuple[str, ...] = ()

    def summary(self) -> str:
        return (f"{self.path}: {self.questions} questions, {self.span_answers} span answers; "
                f"{len(self.repaired)} answer_start repaired (within ±{MAX_OFFSET_REPAIR}), "
                f"{len(self.inconsistent)} inconsistent (text not found there), "
                f"{self.without_offset} without an offset, "
                f"{self.conversion_fallbacks} converted character by character, "
                f"{len(self.empty_questions)} empty questions")


class ReadResult(NamedTuple):
    examples: list[MrcExample]
    report: ReadReport


def locate_answer_start(context: str, text: str, given_start: int, max_shift: int = MAX_OFFSET_REPAIR) -> int | None:
    """`given_start` if `text` is there, else the nearest start within ±max_shift where it is
    (the earlier one on a tie), else None."""
    for shift in range(max_shift + 1):
        for start in ((given_start,) if shift == 0 else (given_start - shift, given_start + shift)):
            if start >= 0 and context.startswith(text, start):
                return start
    return None


def read_cmrc2018(path, labelled: bool = True) -> ReadResult:
    """CMRC 2018 (SQuAD layout, simplified Chinese). labelled=False: questions to answer, whose
    `answers` may be missing or empty (prediction)."""
    return _read(path, cjrc=False, labelled=labelled)


def read_drcd(path, converter: TraditionalToSimplified | None = None, labelled: bool = True) -> ReadResult:
    """DRCD (SQuAD layout v1.3, traditional Chinese). The model reads passages and questions
    converted by `converter` (default OpenCC t2s); answers and offsets stay in the original text."""
    return _read(path, cjrc=False, converter=converter or TraditionalToSimplified(), labelled=labelled)


def question_example(question: str, context: str, qas_id: str = "question",
                     converter: TraditionalToSimplified | None = None) -> MrcExample:
    """One question to answer on one passage (no answers), built as the readers build a file's:
    with `converter` (DRCD's), the model reads the question and passage converted, and answers are
    still sliced from the passage as given."""
    model_question, model_context = ((question, context) if converter is None else
                                     (converter.convert(question)[0], converter.convert(context)[0]))
    return MrcExample(qas_id=qas_id, question_text=question, context_text=context, answers=(),
                      model_question=model_question, model_context=model_context)


def read_cjrc(path, labelled: bool = True) -> ReadResult:
    """CJRC / CAIL2019 reading comprehension (labelled=False: questions to answer; see read_cmrc2018).

    Layout: {"data": [{"caseid", "domain", "paragraphs": [{"context", "casename", "qas": [{"id",
    "question", "is_impossible": "true"/"false", "answers": [{"text", "answer_start"}, ...]}]}]}]}.
    An answer {"text": "YES"|"NO", "answer_start": -1} is a YES / NO answer, {"text": "", ...} an
    unknown one; the dev file has three references per question, of mixed kinds at times.
    """
    return _read(path, cjrc=True, labelled=labelled)


# ---------------------------------------------------------------------------------------------
# The walker shared by both layouts. CJRC differs from SQuAD in: a `domain` per data item, an
# `is_impossible` per question, YES / NO / "" answers with answer_start -1, and questions that may
# have no answers at all.

def _read(path, cjrc: bool, converter: TraditionalToSimplified | None = None, labelled: bool = True) -> ReadResult:
    path = Path(path)
    reader = _Reader(path, cjrc, converter, labelled)
    examples = reader.read(read_json_file(path))
    if not examples:
        raise DataError(path, None, "no questions")
    report = ReadReport(str(path), len(examples), reader.span_answers, tuple(reader.repaired),
                        tuple(reader.inconsistent), reader.without_offset, reader.conversion_fallbacks,
                        tuple(reader.empty_questions))
    logger.info("%s", report.summary())
    if report.empty_questions:
        logger.warning("%s: questions with empty text: %s", path, ", ".join(report.empty_questions))
    if report.inconsistent:
        logger.warning("%s: answers not found within ±%d characters of their answer_start: %s", path,
                       MAX_OFFSET_REPAIR, ", ".join(f"{a.qas_id}#{a.answer_index}" for a in report.inconsistent))
    return ReadResult(examples, report)


def _optional_text(record, key) -> str:
    value = record.get(key, "") if isinstance(record, dict) else ""
    return value if isinstance(value, str) else ""


_JSON_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object",
                    float: "a number", type(None): "null"}


def _json_type(value) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


class _Reader:
    def __init__(self, path: Path, cjrc: bool, converter: TraditionalToSimplified | None, labelled: bool):
        self.path = path
        self.cjrc = cjrc
        self.labelled = labelled
        self.converter = converter
        self.seen_ids: set[str] = set()
        self.span_answers = 0
        self.without_offset = 0
        self.conversion_fallbacks = 0
        self.repaired: list[OffsetRepair] = []
        self.inconsistent: list[InconsistentAnswer] = []
        self.empty_questions: list[str] = []

    def fail(self, where, problem):
        raise DataError(self.path, where, problem)

    def field(self, record, key, kinds, where):
        if not isinstance(record, dict):
            self.fail(where, f"expected a JSON object, got {_json_type(record)}")
        if key not in record:
            self.fail(where, f"missing field {key!r}")
        value = record[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        # bool is an int subclass in Python; an answer_start of `true` is still wrong.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(_JSON_TYPE_NAMES[k] for k in kinds)
            self.fail(where, f"field {key!r} must be {expected}, got {_json_type(value)}")
        return value

    def text_field(self, record, key, where, allow_empty=False):
        value = self.field(record, key, str, where)
        if not allow_empty and not value.strip():
            self.fail(where, f"field {key!r} is empty")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.fail(where, f"field {key!r} is not valid Unicode text (it holds a lone surrogate)")
        return value

    def to_model_text(self, text: str) -> str:
        if self.converter is None:
            return text
        converted, fell_back = self.converter.convert(text)
        self.conversion_fallbacks += fell_back
        return converted

    def read(self, root) -> list[MrcExample]:
        data = self.field(root, "data", list, "top level")
        examples = []
        for article_index, article in enumerate(data):
            where = f"data[{article_index}]"
            paragraphs = self.field(article, "paragraphs", list, where)
            # a file of questions to answer needs no domain: the scorer alone reports by it
            wants_domain = self.cjrc and (self.labelled or "domain" in article)
            domain = self.read_domain(article, where) if wants_domain else ""
            for paragraph_index, paragraph in enumerate(paragraphs):
                where_p = f"{where}.paragraphs[{paragraph_index}]"
                if isinstance(paragraph, dict) and isinstance(paragraph.get("id"), str):
                    where_p += f" (id {paragraph['id']})"
                title = _optional_text(article, "title") or _optional_text(paragraph, "casename")
                examples.extend(self.read_paragraph(paragraph, where_p, title, domain))
        return examples

    def read_paragraph(self, paragraph, where, title, domain) -> list[MrcExample]:
        qas = self.field(paragraph, "qas", list, where)
        context = self.text_field(paragraph, "context", where)
        model_context = self.to_model_text(context)
        examples = []
        for question_index, qa in enumerate(qas):
            qas_id = self.question_id(qa, f"{where}.qas[{question_index}]")
            where_q = f"question {qas_id}"
            # Not an error: CMRC 2018 trial has two questions with empty text; they are kept (the
            # model then reads the passage alone) and listed in the report.
            question = self.text_field(qa, "question", where_q, allow_empty=True)
            if not question.strip():
                self.empty_questions.append(qas_id)
            if self.labelled or (isinstance(qa, dict) and "answers" in qa):
                answer_list = self.field(qa, "answers", list, where_q)
            else:
                answer_list = []
            answers = tuple(self.read_answer(answer, context, qas_id, answer_index)
                            for answer_index, answer in enumerate(answer_list))
            if not answers and not self.cjrc and self.labelled:
                self.fail(where_q, "no answers")
            labelled_cjrc = self.cjrc and (self.labelled or "is_impossible" in qa)
            is_impossible = self.read_is_impossible(qa, where_q) if labelled_cjrc else False
            examples.append(MrcExample(qas_id, question, context, answers, title=title, domain=domain,
                                       is_impossible=is_impossible, model_question=self.to_model_text(question),
                                       model_context=model_context))
        return examples

    def question_id(self, qa, where) -> str:
        qas_id = str(self.field(qa, "id", (str, int), where))
        if not self.cjrc and qas_id != qas_id.strip():
            # The official CMRC 2018 / DRCD scorer looks predictions up by the stripped id, so a
            # prediction keyed by this id would never be found.
            self.fail(f"question {qas_id!r}", "id has surrounding whitespace, which the official scorer strips")
        if qas_id in self.seen_ids:
            self.fail(f"question {qas_id}", "question id seen twice")
        self.seen_ids.add(qas_id)
        return qas_id

    def read_domain(self, article, where) -> str:
        domain = self.text_field(article, "domain", where)
        # The scorer reports by domain and knows these two; a labelled file is refused at once
        # rather than at the first evaluation, after training.
        if self.labelled and domain not in DOMAINS:
            self.fail(where, f"domain {domain!r} is not one of {', '.join(DOMAINS)}")
        return domain

    def read_is_impossible(self, qa, where) -> bool:
        value = self.field(qa, "is_impossible", (str, bool), where)
        if isinstance(value, bool):
            return value
        if value.lower() not in ("true", "false"):
            self.fail(where, f"is_impossible must be 'true' or 'false', got {value!r}")
        return value.lower() == "true"

    def read_answer(self, answer, context, qas_id, answer_index) -> MrcAnswer:
        where = f"question {qas_id} answers[{answer_index}]"
        text = self.text_field(answer, "text", where, allow_empty=self.cjrc)
        start = self.field(answer, "answer_start", int, where)
        # A start up to MAX_OFFSET_REPAIR characters past the end can still be a repairable offset
        # (an answer that ends its passage, recorded too late), so only farther ones are refused.
        if start != NO_OFFSET and not 0 <= start < len(context) + MAX_OFFSET_REPAIR:
            self.fail(where, f"answer_start {start} is outside the context ({len(context)} characters)")
        if self.cjrc and start == NO_OFFSET and text in ("YES", "NO", ""):
            return MrcAnswer(text, None, {"YES": AnswerKind.YES, "NO": AnswerKind.NO, "": AnswerKind.UNKNOWN}[text])
        if not text.strip():
            self.fail(where, "empty answer text with an answer_start")
        self.span_answers += 1
        if start == NO_OFFSET:
            self.without_offset += 1
            return MrcAnswer(text, None)
        located = locate_answer_start(context, text, start)
        if located is None:
            self.inconsistent.append(InconsistentAnswer(qas_id, answer_index, start, text))
        elif located != start:
            self.repaired.append(OffsetRepair(qas_id, answer_index, start, located))
        return MrcAnswer(text, located)
