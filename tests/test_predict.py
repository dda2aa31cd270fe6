import numpy as np
import pandas as pd
import torch

from gendiag.evaluate.predict import load_for_prediction, predict_log_odds, prediction_table
from gendiag.models.inputs import answer_logits, collate_left, encode_prompts
from gendiag.models.loading import load_tokenizer
from gendiag.prompts import PromptFormat

CPU = torch.device("cpu")


def test_prediction_is_the_label_word_log_odds_at_the_answer_position(micro_bases, small_corpus):
    base = micro_bases["gemma2"]
    tokenizer = load_tokenizer(base)
    prompt = PromptFormat()
    model = load_for_prediction(base, "gemma2", None, {"load_in_4bit": True}, CPU, torch.float32)
    texts = small_corpus["text"].head(10).tolist()
    scores = predict_log_odds(model, tokenizer, texts, prompt, max_length=128, batch_size=4)
    legit, malicious = prompt.label_token_ids(tokenizer)
    for i in (0, 7):
        [ids] = encode_prompts([texts[i]], tokenizer, prompt, 128)
        with torch.no_grad():
            logits = answer_logits(model, collate_left([ids], tokenizer.pad_token_id))[0]
        assert abs(scores[i] - float(logits[malicious] - logits[legit])) < 1e-4


def test_prediction_table_columns_and_threshold():
    testset = pd.DataFrame({"uid": ["a", "b", "c"], "label": [0, 1, 1]})
    table = prediction_table(testset, np.array([-2.0, 0.0, 3.0]), threshold=0.5)
    assert list(table.columns) == ["uid", "label", "log_odds", "p_malicious", "pred"]
    assert list(table["pred"]) == [0, 1, 1]
    assert table["p_malicious"].between(0, 1).all()
