"""Client partitions: deterministic from the seed, disjoint, and shaped as asked."""

from __future__ import annotations

import numpy as np
import pytest

from hybnn.errors import DataError
from hybnn.federated.partition import class_shares, partition

LABELS = np.repeat(np.arange(4), 100)  # 4 classes x 100 samples
TEST_LABELS = np.repeat(np.arange(4), 20)


def _split(scheme, **kw):
    return partition(LABELS, TEST_LABELS, 4, 3, scheme, seed=kw.pop("seed", 0), **kw)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "classes"])
def test_partition_is_a_deterministic_disjoint_cover(scheme):
    train, test = _split(scheme, classes_per_client=2)
    again, _ = _split(scheme, classes_per_client=2)
    assert all(np.array_equal(a, b) for a, b in zip(train, again, strict=True))
    flat = np.concatenate(train)
    assert len(flat) == len(np.unique(flat))  # disjoint
    if scheme != "classes":
        assert sorted(flat.tolist()) == list(range(len(LABELS)))  # every sample used once
    assert all(len(p) >= 2 for p in train)
    assert len(test) == 3


def test_other_seed_gives_another_partition():
    a, _ = _split("iid", seed=0)
    b, _ = _split("iid", seed=1)
    assert not np.array_equal(a[0], b[0])


def test_iid_gives_every_client_every_class_evenly():
    train, test = _split("iid")
    for part in train:
        counts = np.bincount(LABELS[part], minlength=4)
        assert counts.min() >= 33 and counts.max() <= 34
    assert sorted(len(t) for t in test) == [26, 27, 27]


def test_dirichlet_skews_class_mixes_and_small_alpha_skews_more():
    def skew(alpha):
        train, _ = _split("dirichlet", alpha=alpha)
        mixes = np.array([np.bincount(LABELS[p], minlength=4) / len(p) for p in train])
        return float(np.abs(mixes - 0.25).mean())

    assert skew(0.1) > skew(100.0)
    assert skew(100.0) < 0.05


def test_dirichlet_test_split_follows_the_clients_training_mix():
    train, test = _split("dirichlet", alpha=0.3)
    for tr, te in zip(train, test, strict=True):
        mix_tr = np.bincount(LABELS[tr], minlength=4) / len(tr)
        mix_te = np.bincount(TEST_LABELS[te], minlength=4) / max(len(te), 1)
        assert np.abs(mix_tr - mix_te).max() < 0.1


def test_classes_per_client_holds_exactly_k_classes_and_covers_all():
    train, _ = _split("classes", classes_per_client=2)
    held = [set(np.unique(LABELS[p]).tolist()) for p in train]
    assert all(len(h) == 2 for h in held)
    assert set().union(*held) == {0, 1, 2, 3}


def test_class_shares_rows_sum_to_one():
    for scheme in ("iid", "dirichlet", "classes"):
        s = class_shares(10, 3, scheme, alpha=0.5, classes_per_client=4, seed=3)
        assert np.allclose(s.sum(axis=1), 1.0)


def test_impossible_partitions_fail_clearly():
    with pytest.raises(DataError, match="training samples"):
        partition(LABELS[:5], TEST_LABELS, 4, 3, "iid")
    with pytest.raises(DataError, match="unknown partition"):
        _split("pathological")
    with pytest.raises(DataError, match="alpha"):
        _split("dirichlet", alpha=0.0)
    with pytest.raises(DataError, match="classes per client"):
        _split("classes", classes_per_client=5)
