import pandas as pd
import pytest

from gendiag.data.corpus import CORPUS_COLUMNS, IngestError, ingest, load_raw
from gendiag.data.splits import compose_recipe, dedup_key, split_corpus, stratified_sample


def test_synthetic_ingest_fills_the_corpus_contract(vocab):
    from conftest import VOCABULARY

    spec = {"loader": "synthetic", "style": "corporate", "n_messages": 50, "seed": 1}
    raw, notes = load_raw("corp", spec, VOCABULARY)
    kept, quarantined, report = ingest(raw, "corp", notes["origin"])
    assert list(kept.columns[: len(CORPUS_COLUMNS)]) == CORPUS_COLUMNS
    assert (kept["corpus"] == "corp").all() and kept["uid"].is_unique
    assert report["rows_read"] == 50 == report["rows_kept"] + report["rows_quarantined"]
    assert len(quarantined) == 0
    assert (kept["raw_text"] == kept["text"]).all() and (kept["source_name"] == "synthetic").all()


def test_ingest_quarantines_with_reasons_and_never_drops_silently():
    raw = pd.DataFrame({"uid": ["a", "b", "b", "c"], "text": ["hello", "x", "y", "   "], "label": [0, 1, 1, 0]})
    kept, quarantined, report = ingest(raw, "t", "test.csv")
    assert list(kept["uid"]) == ["a", "b"]
    assert sorted(quarantined["reason"]) == ["duplicate uid", "empty text"]
    assert report["rows_read"] == report["rows_kept"] + report["rows_quarantined"] == 4
    assert report["quarantine_reasons"] == {"duplicate uid": 1, "empty text": 1}


def test_empty_corpus_stops_with_the_origin():
    with pytest.raises(IngestError, match="empty.csv holds no messages"):
        ingest(pd.DataFrame({"text": [], "label": []}), "t", "empty.csv")


def test_ingest_quarantines_loader_problems_with_their_reason():
    raw = pd.DataFrame({"uid": ["a", "b"], "text": ["fine", "\ufffd\ufffd"], "label": [0, 1],
                        "problem": ["", "undecodable bytes: 100% of the body is U+FFFD"]})
    kept, quarantined, report = ingest(raw, "t", "x.tar")
    assert list(kept["uid"]) == ["a"] and quarantined["reason"].iloc[0].startswith("undecodable bytes")
    assert report["quarantine_reasons"] == {"undecodable bytes": 1}


def test_dedup_key_ignores_case_digits_and_punctuation():
    assert dedup_key("Meeting at 10am, Room 4!") == dedup_key("meeting at  11AM room 5")
    assert dedup_key("meeting at 10am") != dedup_key("meeting at noon")


def test_split_removes_duplicates_before_splitting_and_stratifies(small_corpus):
    frame = small_corpus.copy()
    copies = frame.head(20).assign(uid=lambda f: f["uid"] + "-copy", text=lambda f: f["text"].str.upper())
    frame = pd.concat([frame, copies], ignore_index=True)
    splits, report = split_corpus(frame, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    assert report["duplicates_removed"] >= 20
    assert not splits["uid"].str.endswith("-copy").any()
    keys = splits["text"].map(dedup_key)
    assert keys.is_unique
    for split in ("train", "val", "test"):
        share = splits.loc[splits["split"] == split, "label"].mean()
        assert share == pytest.approx(splits["label"].mean(), abs=0.05)
    with pytest.raises(ValueError, match="must sum to 1"):
        split_corpus(frame, {"train": 0.6, "val": 0.2, "test": 0.3}, seed=0)


def test_split_does_not_depend_on_key_order_or_run(small_corpus):
    a, _ = split_corpus(small_corpus, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    b, _ = split_corpus(small_corpus, {"test": 0.2, "val": 0.2, "train": 0.6}, seed=3)
    pd.testing.assert_frame_equal(a, b)


def test_recipe_mixes_corpora_in_equal_shares(small_corpus):
    splits = {}
    for corpus, group in small_corpus.assign(corpus=small_corpus["style"]).groupby("corpus"):
        splits[corpus], _ = split_corpus(group.reset_index(drop=True), {"train": 0.7, "val": 0.15, "test": 0.15}, 0)
    train, val, report = compose_recipe(splits, train_size=100, val_size=20, seed=0)
    assert len(train) == 100 and len(val) == 20
    assert report["train"]["by_corpus"] == {"corporate": 50, "credential_phish": 50}
    assert set(train["split"]) == {"train"} and set(val["split"]) == {"val"}


def test_stratified_sample_keeps_label_shares():
    frame = pd.DataFrame({"label": [0] * 80 + [1] * 20, "x": range(100)})
    sample = stratified_sample(frame, 10, seed=0, by=["label"])
    assert sample["label"].tolist().count(1) == 2


def test_split_removes_near_duplicates_so_none_crosses_train_and_test(small_corpus):
    from gendiag.data.dedup import cross_matches

    frame = small_corpus.copy()
    variants = frame.head(30).assign(
        uid=lambda f: f["uid"] + "-variant", text=lambda f: f["text"].str.replace(" the ", " teh ", n=1) + " ok"
    )
    frame = pd.concat([frame, variants], ignore_index=True)
    exact_only, _ = split_corpus(frame, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    assert exact_only["uid"].str.endswith("-variant").sum() == 30
    splits, report = split_corpus(frame, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0, near_duplicate_threshold=0.8)
    assert not splits["uid"].str.endswith("-variant").any()
    assert report["near_duplicates_removed"] >= 30
    assert {r["kind"] for r in report["removed"]} <= {"exact", "near"}
    train, test = (splits.loc[splits["split"] == s, "text"].tolist() for s in ("train", "test"))
    assert cross_matches(train, test, threshold=0.8) == []
