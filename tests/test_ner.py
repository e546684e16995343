"""MSRA NER: the BIO reader on the real files, one token per character (against Google BERT's
tokenizer), windows and tags decoded back, conlleval's entity reading and scores, the taggers
against transformers' BertForTokenClassification / AlbertForTokenClassification, the loss, and the
two trainers taking the same steps on real sentences."""
import re
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn.functional as F
from conftest import data_file
from model_helpers import (TINY_BERT, VOCAB_SIZE, padded_batch, random_transformers_model, save_hf,
                           train_in_both_frameworks)
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

import cnbert.tf as ctf
from cnbert.data.ner import (IGNORE_INDEX, NerSentence, build_ner_features, decode_tags, entities, entity_scores,
                             read_bio)
from cnbert.errors import DataError
from cnbert.tasks import ner as tasks
from cnbert.tokenization import ChineseBertTokenizer, bundled_vocab_path
from cnbert.torch import (AlbertForTokenClassification, BertForTokenClassification, load_for_task,
                          token_classification_loss)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = tasks.get_task("msra_ner")
TAGS = {i: tag for i, tag in enumerate(TASK.labels)}


def independent_sentences(path):
    """(characters, tags) per sentence, parsed with a regular expression over the blank-line blocks."""
    blocks = re.split(r"\n\s*\n", path.read_text(encoding="utf-8").strip("\n"))
    return [tuple(zip(*(line.split("\t") for line in block.split("\n")))) for block in blocks]


@pytest.mark.parametrize("relative, count", [("msra_ner/msra_train_bio", 45000), ("msra_ner/msra_test_bio.txt", 3442)])
def test_real_files_read_as_an_independent_parse_does(relative, count):
    path = data_file(relative)
    sentences = TASK.read(path)
    want = independent_sentences(path)
    assert len(sentences) == len(want) == count
    assert [(s.chars, s.tags) for s in sentences] == want
    assert sentences[1].guid == f"{path.name}:{len(want[0][0]) + 2}"  # the line of its first character


def test_real_tag_counts():
    # counted with awk over the test file
    tags = Counter(tag for s in TASK.read(data_file("msra_ner/msra_test_bio.txt")) for tag in s.tags)
    assert tags == {"O": 152509, "B-LOC": 2886, "I-LOC": 4405, "B-ORG": 1331, "I-ORG": 5646, "B-PER": 1973,
                    "I-PER": 3851}


@pytest.mark.parametrize("text, where, problem", [
    ("中\tO\n国\n", "line 2", "1 tab-separated field(s)"),
    ("中\tO\t多\n", "line 1", "3 tab-separated field(s)"),
    ("中国\tB-LOC\n", "line 1", "'中国' is not one character"),
    ("中\tB-GPE\n", "line 1", "tag 'B-GPE' is not one of this task's tags"),
    ("\n\n", None, "no sentences"),
])
def test_bad_lines_are_named(tmp_path, text, where, problem):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(problem)) as error:
        read_bio(path, TASK.labels)
    assert error.value.where == where


def test_untagged_files_and_mixed_sentences(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("北\n京\n \n上\n\u3000\n海\n", encoding="utf-8")  # a blank line of a space; an ideographic space
    sentences = read_bio(path, TASK.labels, tagged=False)
    assert sentences == [NerSentence("text.txt:1", ("北", "京"), None),
                         NerSentence("text.txt:4", ("上", "\u3000", "海"), None)]
    path.write_text("北\n京\n\n上\tB-LOC\n海\tI-LOC\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 4: this sentence is tagged, unlike the first"):
        read_bio(path, TASK.labels, tagged=False)
    path.write_text("北\tB-LOC\n京\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1: the sentence starting here tags some characters and not others"):
        read_bio(path, TASK.labels, tagged=False)


def test_one_token_per_character_as_google_bert_tokenizes_each_character():
    reference = BertTokenizerLegacy(str(bundled_vocab_path()), do_lower_case=True)
    tokenizer = ChineseBertTokenizer()
    sentences = TASK.read(data_file("msra_ner/msra_test_bio.txt"))[:300]
    chars = [c for s in sentences for c in s.chars] + list("Ａé \u200b\x00ﬁ")
    want = [reference.convert_tokens_to_ids((reference.tokenize(c) or ["[UNK]"])[0]) for c in chars]
    assert tokenizer.character_ids(chars) == want
    # each distinct character is looked up once, then answered from what the tokenizer learnt
    assert tokenizer.character_ids(chars[::-1]) == want[::-1]
    assert len(tokenizer._character_ids[False]) == len(set(chars))
    tokenizer.fullwidth_to_halfwidth = True  # read at call time: the lookups so far do not apply
    assert tokenizer.character_ids(["Ａ"]) == [reference.convert_tokens_to_ids("a")]


@pytest.mark.parametrize("doc_stride", [None, 38, 7])
def test_windows_carry_the_tags_and_decode_back(doc_stride):
    sentences = TASK.read(data_file("msra_ner/msra_test_bio.txt"))[:60]
    tokenizer = ChineseBertTokenizer()
    features = build_ner_features(sentences, tokenizer, 40, TASK.labels, doc_stride)
    lengths = [len(s.chars) for s in sentences]
    stride = doc_stride or 19  # None: half a window of 38 characters; 38: consecutive windows
    # a sentence of n > 38 characters takes windows starting 0, stride, ..., the last ending at n
    assert len(features) == sum(1 + max(0, -(-(n - 38) // stride)) for n in lengths) > len(sentences)
    chosen = [np.zeros(n, int) for n in lengths]  # times each character is some window's max context
    for row in range(len(features)):
        start, count = features.char_start[row], features.attention_mask[row].sum() - 2
        chosen[features.sentence_index[row]][start:start + count] += features.token_is_max_context[row, 1:count + 1]
        assert not features.token_is_max_context[row, [0, *range(count + 1, features.tags.shape[1])]].any()
    assert all((times == 1).all() for times in chosen)
    for row in range(len(features)):
        sentence = sentences[features.sentence_index[row]]
        start, count = features.char_start[row], features.attention_mask[row].sum() - 2
        ids = tokenizer.character_ids(sentence.chars[start:start + count])
        assert features.input_ids[row, :count + 2].tolist() == [tokenizer.cls_id, *ids, tokenizer.sep_id]
        assert features.tags[row, 1:count + 1].tolist() == [TASK.labels.index(t) for t in sentence.tags[start:start + count]]
        assert (features.tags[row, [0, *range(count + 1, features.tags.shape[1])]] == IGNORE_INDEX).all()
        assert features.attention_mask[row].sum() == count + 2
    # logits that point at the gold tags decode to the gold tags, window joints included
    logits = np.eye(len(TASK.labels))[np.where(features.tags == IGNORE_INDEX, 0, features.tags)]
    assert decode_tags(sentences, features, logits, TASK.labels) == [list(s.tags) for s in sentences]
    assert TASK.criterion(tasks.score(sentences, [list(s.tags) for s in sentences])) == pytest.approx(100.0)


def test_each_character_is_predicted_from_the_window_where_it_has_the_most_context():
    labels = ("O", "B-PER", "I-PER")
    sentence = NerSentence("s:1", tuple("一二三四五六七八九十"), None)
    # windows of 6 characters starting 0, 2, 4; by hand, min(left, right) context is largest in
    # window 0 for characters 0-3, window 1 for 4-5, window 2 for 6-9 (ties go to the earlier window)
    features = build_ner_features([sentence], ChineseBertTokenizer(), 8, labels, doc_stride=2)
    assert features.char_start.tolist() == [0, 2, 4] and features.attention_mask.sum(1).tolist() == [8, 8, 8]
    logits = np.zeros((3, 8, 3))
    logits[np.arange(3), :, np.arange(3)] = 1.0  # window w says labels[w] everywhere
    assert decode_tags([sentence], features, logits, labels) == [["O"] * 4 + ["B-PER"] * 2 + ["I-PER"] * 4]
    for stride in (0, 7, 2.5):
        with pytest.raises(ValueError, match=f"doc_stride must be between 1 and max_seq_length - 2 = 6 .*got {stride}"):
            build_ner_features([sentence], ChineseBertTokenizer(), 8, labels, doc_stride=stride)


def test_entities_are_read_as_conlleval_reads_them():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == {(0, 2, "PER"), (3, 4, "LOC")}
    assert entities(["I-PER", "I-PER", "O"]) == {(0, 2, "PER")}            # I- without B- starts a chunk
    assert entities(["B-PER", "I-LOC", "I-LOC"]) == {(0, 1, "PER"), (1, 3, "LOC")}  # a type change ends it
    assert entities(["B-ORG", "B-ORG", "I-ORG"]) == {(0, 1, "ORG"), (1, 3, "ORG")}  # B- always starts one
    assert entities(["O", "O"]) == set()


def test_entity_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG"]]
    predicted = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "I-ORG", "O"]]
    scores = entity_scores(gold, predicted)
    # gold: PER, LOC, ORG; predicted: PER (right), ORG[0:2] (wrong end)
    assert (scores["gold"], scores["predicted"], scores["correct"]) == (3, 2, 1)
    assert scores["precision"] == pytest.approx(50.0) and scores["recall"] == pytest.approx(100 / 3)
    assert scores["F1"] == pytest.approx(40.0)
    assert scores["per_type"]["PER"]["F1"] == 100.0 and scores["per_type"]["LOC"]["recall"] == 0.0
    with pytest.raises(ValueError, match="sentence 1: 3 gold tags but 2 predicted"):
        entity_scores(gold, [predicted[0], predicted[1][:2]])


def test_tagger_is_transformers_bert_for_token_classification_in_float64(tmp_path):
    hf = random_transformers_model("BertForTokenClassification", id2label=TAGS, **TINY_BERT)
    ours, report = load_for_task("msra_ner", save_hf(hf, tmp_path / "hf"))
    assert isinstance(ours, BertForTokenClassification) and report.initialised == []
    input_ids, attention_mask, token_type_ids = batch = padded_batch()
    with torch.no_grad():
        got = ours.double().eval()(*batch)["logits"]
        want = hf.double()(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    tf_model = ctf.load_finetuned(tmp_path / "hf", "msra_ner")
    tf_logits = tf_model(input_ids.numpy(), attention_mask=attention_mask.numpy(), token_type_ids=token_type_ids.numpy())
    np.testing.assert_allclose(tf_logits["logits"].numpy(), want.numpy(), atol=1e-5, rtol=0)


def test_albert_tagger_is_transformers_albert_for_token_classification_in_float64(tmp_path):
    sizes = dict(vocab_size=VOCAB_SIZE, embedding_size=16, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                 intermediate_size=128, max_position_embeddings=48)
    hf = random_transformers_model("AlbertForTokenClassification", id2label=TAGS, **sizes)
    ours, _ = load_for_task("msra_ner", save_hf(hf, tmp_path / "hf"))
    assert isinstance(ours, AlbertForTokenClassification)
    input_ids, attention_mask, token_type_ids = batch = padded_batch()
    with torch.no_grad():
        got = ours.double().eval()(*batch)["logits"]
        want = hf.double()(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_token_loss_averages_each_examples_tagged_tokens():
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    tags = torch.tensor([[-100, 1, 2, 0, -100], [-100, 3, -100, -100, -100]])
    per_example = token_classification_loss({"logits": logits}, tags, reduction="none")
    first = F.cross_entropy(logits[0, 1:4], tags[0, 1:4])
    second = F.cross_entropy(logits[1, 1:2], tags[1, 1:2])
    torch.testing.assert_close(per_example, torch.stack([first, second]))
    keep = tags != -100
    torch.testing.assert_close(token_classification_loss({"logits": logits}, tags),
                               F.cross_entropy(logits[keep], tags[keep]))
    tf_logits = {"logits": tf.constant(logits.numpy())}
    tf_loss = ctf.token_classification_loss(tf_logits, tags.numpy(), reduction="none")
    np.testing.assert_allclose(tf_loss.numpy(), per_example.numpy(), atol=1e-6, rtol=0)
    # the mean weighs each of the 4 tagged tokens alike, not each sentence
    np.testing.assert_allclose(float(ctf.token_classification_loss(tf_logits, tags.numpy())),
                               float(F.cross_entropy(logits[keep], tags[keep])), rtol=1e-6)
    # a sentence with no tagged token adds 0, not NaN (0 / 0)
    untagged = torch.where(torch.arange(2)[:, None] == 1, -100, tags)
    torch.testing.assert_close(token_classification_loss({"logits": logits}, untagged, reduction="none"),
                               torch.stack([first, torch.tensor(0.0)]))
    np.testing.assert_allclose(ctf.token_classification_loss(tf_logits, untagged.numpy(), reduction="none").numpy(),
                               [first.item(), 0.0], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"tags holds \[7, 7, 7, 7\]"):
        token_classification_loss({"logits": logits}, torch.where(keep, 7, -100))


def test_both_trainers_take_the_same_steps_on_real_sentences():
    sentences = TASK.read(data_file("msra_ner/msra_test_bio.txt"))[:20]
    arrays = build_ner_features(sentences, ChineseBertTokenizer(), 32, TASK.labels).model_arrays()
    trainer = train_in_both_frameworks("msra_ner", arrays, num_labels=7)
    with pytest.raises(ValueError, match=r"tags holds \[9, 9, .*\] \(\(row, token\) \[\(\d+, \d+\), "):
        trainer.fit(dict(arrays, tags=np.where(arrays["tags"] == 1, 9, arrays["tags"])))


def test_an_entity_with_the_right_span_but_the_wrong_type_is_not_correct():
    scores = entity_scores([["B-PER", "I-PER", "O"]], [["B-LOC", "I-LOC", "O"]])
    assert (scores["gold"], scores["predicted"], scores["correct"], scores["F1"]) == (1, 1, 0, 0.0)


def test_a_bio_file_with_crlf_line_ends_reads_as_with_lf(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes("北\tB-LOC\r\n京\tI-LOC\r\n\r\n人\tO\r\n".encode("utf-8"))
    sentences = read_bio(path, ("O", "B-LOC", "I-LOC"))
    assert [(s.chars, s.tags) for s in sentences] == [(("北", "京"), ("B-LOC", "I-LOC")), (("人",), ("O",))]


def test_a_character_s_id_is_its_first_word_piece():
    tokenizer = ChineseBertTokenizer()
    # Google's BertTokenizer splits 한 into ᄒ ##ᅡ ##ᆫ; the character's tag goes on ᄒ
    assert tokenizer.character_ids(["한"]) == [tokenizer.token_to_id("ᄒ")]
