"""Tasks (pair and all), deterministic stratified splits, and input preparation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybnn.data import (
    PAPER_TASKS,
    Dataset,
    prepare,
    select_task,
    stratified_split,
    task_classes,
    train_test,
)
from hybnn.errors import DataError


def toy(n_per_class=(10, 20, 30, 40), mask=False) -> Dataset:
    """Labels 0..3 interleaved; pixel (0, 0) encodes the sample index to track rows."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    y = np.random.default_rng(1).permutation(y)
    x = np.zeros((len(y), 1, 2, 2), np.float32)
    x[:, 0, 0, 0] = np.arange(len(y)) / len(y)
    test_mask = (np.arange(len(y)) % 5 == 0) if mask else None
    return Dataset("toy", x, y, 4, test_mask)


def row_ids(data: Dataset) -> np.ndarray:
    n = len(toy())
    return np.rint(data.x[:, 0, 0, 0] * n).astype(int)


# ------------------------------------------------------------------------------------- tasks


def test_paper_tasks_are_the_five_digit_pairs():
    assert PAPER_TASKS == ("0v1", "2v3", "4v5", "6v7", "8v9")


def test_pair_task_keeps_only_its_classes_relabelled_0_and_1():
    data = toy()
    sub = select_task(data, "1v3")
    ids = row_ids(sub)
    assert sub.num_classes == 2
    assert len(sub) == 20 + 40
    assert set(data.y[ids]) == {1, 3}
    np.testing.assert_array_equal(sub.y, (data.y[ids] == 3).astype(np.int64))
    assert (np.diff(ids) > 0).all()  # original order kept


def test_pair_order_decides_the_new_labels():
    data = toy()
    sub = select_task(data, "3v1")
    np.testing.assert_array_equal(sub.y, (data.y[row_ids(sub)] == 1).astype(np.int64))
    assert task_classes("3v1", 4) == [3, 1]


def test_task_all_keeps_everything():
    data = toy()
    sub = select_task(data, "all")
    assert len(sub) == len(data) and sub.num_classes == 4
    np.testing.assert_array_equal(sub.y, data.y)
    np.testing.assert_array_equal(sub.x, data.x)


def test_task_keeps_official_test_mask_with_its_rows():
    data = toy(mask=True)
    sub = select_task(data, "0v2")
    np.testing.assert_array_equal(sub.test_mask, data.test_mask[row_ids(sub)])


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("0v0", "two different classes"),
        ("0v4", "below 4"),
        ("12v1", "below 4"),
        ("", "unknown task"),
        ("0-1", "unknown task"),
        ("0v1v2", "unknown task"),
        ("ALL", "unknown task"),
        ("a v b", "unknown task"),
        ("0v1 ", "unknown task"),
    ],
)
def test_bad_task_strings_are_data_errors(task, message):
    with pytest.raises(DataError, match=message):
        select_task(toy(), task)


def test_task_without_samples_is_a_data_error():
    data = Dataset("only-twos", np.zeros((2, 2, 2), np.uint8), np.array([2, 2]), 3)
    with pytest.raises(DataError, match="no samples for task '0v1'"):
        select_task(data, "0v1")


# ------------------------------------------------------------------------------------ splits


def test_stratified_split_is_a_partition():
    y = toy().y
    tr, te = stratified_split(y, 0.25, seed=3)
    assert np.intersect1d(tr, te).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(len(y)))
    assert (np.diff(tr) > 0).all() and (np.diff(te) > 0).all()  # sorted indices


def test_stratified_split_keeps_class_proportions():
    y = toy().y
    _, te = stratified_split(y, 0.25, seed=3)
    assert np.bincount(y[te], minlength=4).tolist() == [round(n * 0.25) for n in (10, 20, 30, 40)]


def test_stratified_split_is_deterministic_per_seed():
    y = toy().y
    a, b = stratified_split(y, 0.2, seed=7), stratified_split(y, 0.2, seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = stratified_split(y, 0.2, seed=8)
    assert not np.array_equal(a[1], c[1])


def test_stratified_split_known_values_are_pinned():
    # numpy's default_rng (PCG64) is specified, so this split is the same on every machine;
    # a change to the splitting code would silently change every reported number.
    tr, te = stratified_split(np.array([0, 1] * 5), 0.4, seed=0)
    assert (tr.tolist(), te.tolist()) == ([0, 1, 2, 5, 6, 7], [3, 4, 8, 9])


def test_every_class_keeps_a_train_and_a_test_sample():
    y = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2])
    tr, te = stratified_split(y, 0.1, seed=0)
    assert set(y[te]) == {0, 1}  # class 0 (2 samples): 1 test; round(0.2) would give 0
    assert set(y[tr]) == {0, 1, 2}  # a class with one sample stays in train


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_test_fraction(fraction):
    with pytest.raises(DataError, match="test fraction"):
        stratified_split(np.array([0, 1, 0, 1]), fraction)


def test_train_test_draws_a_seeded_split_without_official_test_set():
    data = toy()
    train, test = train_test(data, 0.25, seed=3)
    tr, te = stratified_split(data.y, 0.25, seed=3)
    np.testing.assert_array_equal(row_ids(train), tr)
    np.testing.assert_array_equal(row_ids(test), te)
    assert train.num_classes == test.num_classes == 4


def test_train_test_uses_the_official_split_when_there_is_one():
    data = toy(mask=True)
    train, test = train_test(data, 0.5, seed=99)
    np.testing.assert_array_equal(row_ids(test), np.flatnonzero(data.test_mask))
    np.testing.assert_array_equal(row_ids(train), np.flatnonzero(~data.test_mask))
    assert test.test_mask.all() and not train.test_mask.any()


def test_test_mask_must_match_the_samples():
    with pytest.raises(DataError, match="test mask"):
        Dataset("m", np.zeros((3, 2, 2), np.uint8), np.array([0, 1, 0]),
                test_mask=np.zeros(2, bool))


# ------------------------------------------------------------------------------ preparation


def test_prep_unit_is_the_stored_pixels():
    x = np.random.default_rng(0).random((2, 1, 3, 3), dtype=np.float32)
    assert prepare(x, "unit") is x


def test_prep_centered_is_x_minus_half_in_float32():
    x = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
    out = prepare(x, "centered")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [-0.5, -0.25, 0.0, 0.5])
    np.testing.assert_array_equal(x, [0.0, 0.25, 0.5, 1.0])  # input untouched


def test_prep_unknown_is_a_value_error():
    with pytest.raises(ValueError, match="unit, centered"):
        prepare(np.zeros(1, np.float32), "standardize")


def test_a_task_of_several_classes_by_number_or_name(digits):
    from hybnn.data import load_source, select_task

    sub = select_task(digits, "7,0,2")
    assert sub.num_classes == 3 and sub.label_space.labels == (7, 0, 2)
    assert set(np.unique(sub.y)) == {0, 1, 2}
    np.testing.assert_array_equal(np.asarray(digits.y)[np.isin(digits.y, [7, 0, 2])] == 7,
                                  sub.y == 0)
    fashion = load_source("fashion-mnist") if Path("/usr/share/datasets/fashion-mnist").is_dir() \
        else None
    if fashion is not None:
        named = select_task(fashion, "Pullover,Coat,Shirt")
        assert named.label_space.names == ("Pullover", "Coat", "Shirt")
        assert named.label_space.labels == (2, 4, 6) and len(named) == 21_000


@pytest.mark.parametrize(("task", "match"), [
    ("0,0", "names a class twice"), ("0,10", "not a class of this data"),
    ("0,Pullover", "not a class of this data"), ("0;2", "unknown task")])
def test_a_wrong_class_list_is_one_clear_error(digits, task, match):
    from hybnn.data import select_task

    with pytest.raises(DataError, match=match):
        select_task(digits, task)
