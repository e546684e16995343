"""Official reading-comprehension scorers (CMRC 2018 / DRCD and CJRC), framework-neutral."""
from cnbert.eval.cjrc_metric import (cjrc_char_f1, cjrc_exact, cjrc_normalize, cjrc_question_scores,
                                     evaluate_cjrc, format_cjrc_scores)
from cnbert.eval.cmrc_metric import (SP_CHAR, cmrc_em, cmrc_f1, cmrc_remove_punctuation, cmrc_segments,
                                     evaluate_cmrc, format_cmrc_scores, longest_common_run)
from cnbert.eval.predictions import GoldQuestion, load_predictions, read_gold_questions

__all__ = [
    "SP_CHAR", "GoldQuestion", "cjrc_char_f1", "cjrc_exact", "cjrc_normalize", "cjrc_question_scores",
    "cmrc_em", "cmrc_f1", "cmrc_remove_punctuation", "cmrc_segments", "evaluate_cjrc", "evaluate_cmrc",
    "format_cjrc_scores", "format_cmrc_scores", "load_predictions", "longest_common_run",
    "read_gold_questions",
]
