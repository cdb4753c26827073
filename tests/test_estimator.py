"""The object API on real arrays (scikit-learn's digits): pretrain, encode, fit, predict,
evaluate, save/load, export; and every misuse one HybnnError, never a raw Python error."""

from __future__ import annotations

import numpy as np
import pytest

import hybnn
from hybnn.errors import DataError, FingerprintMismatch, HybnnError

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def arrays():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x.reshape(-1, 8, 8) * 255 / 16).round().astype(np.uint8)  # uint8 pixels, (N, H, W)
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="module")
def encoder(arrays, tmp_path_factory):
    return hybnn.Encoder.pretrain(arrays[0], tmp_path_factory.mktemp("enc") / "encoder",
                                  epochs=4, seed=0)


@pytest.fixture(scope="module")
def head(arrays, encoder):
    xtr, ytr = arrays[0], arrays[1]
    return hybnn.Head(epochs=20, seed=0).fit(encoder.encode(xtr), ytr, names=DIGIT_NAMES,
                                             encoder=encoder)


def test_arrays_in_labels_and_names_out(arrays, encoder, head):
    _, _, xte, yte = arrays
    assert encoder.kind == "encoder" and encoder.input_shape == (1, 8, 8)
    codes = encoder.encode(xte)
    assert codes.dtype == np.bool_ and codes.shape == (len(xte), 200)
    np.testing.assert_array_equal(encoder.encode(xte.astype(np.float32) / 255), codes)
    np.testing.assert_array_equal(encoder.encode(xte[:, None]), codes)  # (N, C, H, W) too
    assert head.hidden is None and head.model.config["hidden"] == [512]  # 10 classes
    pred = hybnn.Model(encoder, head).predict(xte)
    assert len(pred) == len(xte) and pred.probabilities.shape == (len(xte), 10)
    np.testing.assert_array_equal(pred.labels, head.predict(codes))
    assert pred.names == [DIGIT_NAMES[v] for v in pred.labels]
    accuracy = float(np.mean(pred.labels == yte))
    assert accuracy > 0.8, accuracy  # real digits, a real encoder: far above chance (0.1)
    report = head.evaluate(codes, yte)
    assert report.accuracy == pytest.approx(accuracy)
    assert report.confusion.sum() == len(yte) and np.trace(report.confusion) == round(
        accuracy * len(yte))
    assert [r["name"] for r in report.per_class] == DIGIT_NAMES
    assert "accuracy" in str(report) and "confusion" in str(report)


def test_string_labels_and_a_subset_of_classes(arrays, encoder):
    xtr, ytr, xte, yte = arrays
    keep, keep_te = np.isin(ytr, [0, 2, 7]), np.isin(yte, [0, 2, 7])
    words = np.array(DIGIT_NAMES)
    head = hybnn.Head(epochs=15, seed=0).fit(encoder.encode(xtr[keep]), words[ytr[keep]],
                                             encoder=encoder)
    assert head.model.config["hidden"] == [512] and head.label_space.names == (
        "seven", "two", "zero")
    pred = head.predict(encoder.encode(xte[keep_te]))
    assert pred.dtype.kind == "U" and set(pred) <= {"zero", "two", "seven"}
    assert np.mean(pred == words[yte[keep_te]]) > 0.9
    pair = hybnn.Head(epochs=5).fit(encoder.encode(xtr[:50]), ytr[:50] % 2, encoder=encoder,
                                    validation=(encoder.encode(xte[:40]), yte[:40] % 2))
    assert pair.model.config["hidden"] == [128]  # two classes
    assert len(pair.history.series("test_acc")) == 5  # the validation set, every epoch
    with pytest.raises(DataError, match="not one of this head's classes"):
        hybnn.Head(epochs=1).fit(encoder.encode(xtr[:50]), ytr[:50] % 2,
                                 validation=(encoder.encode(xte[:5]), yte[:5] + 7))


def test_save_load_and_the_commands_read_it(arrays, encoder, head, tmp_path):
    from hybnn import api

    xte = arrays[2]
    head.save(tmp_path / "head")
    again = hybnn.Head.load(tmp_path / "head")
    codes = encoder.encode(xte)
    np.testing.assert_array_equal(again.predict(codes), head.predict(codes))
    assert again.label_space == head.label_space
    np.save(tmp_path / "x.npy", xte[:5])
    rows = api.predict(api.PredictOptions(model=str(tmp_path / "head"),
                                          encoder=str(encoder.directory),
                                          inputs=[str(tmp_path / "x.npy")]))
    assert [r["name"] for r in rows] == hybnn.Model(encoder, head).predict(xte[:5]).names


def test_export_to_a_bundle_runs_without_torch_and_agrees(arrays, encoder, head, tmp_path):
    pytest.importorskip("onnxscript")
    from hybnn import runtime

    _, _, xte, _ = arrays
    hybnn.Model(encoder, head).export(tmp_path / "digits.hybnn")
    deployed = runtime.load(tmp_path / "digits.hybnn")
    same = deployed.predict(xte) == hybnn.Model(encoder, head).predict(xte).indices
    assert same.mean() >= 0.99  # fp32 ONNX vs torch: a bit may flip at logit 0


def test_misuse_is_one_clear_error(arrays, encoder, head, tmp_path):
    xtr, ytr, xte, _ = arrays
    codes = encoder.encode(xte)
    cases = [
        (lambda: hybnn.Head(epochs="5"), "epochs"),
        (lambda: hybnn.Head(epoch=5), "unknown training setting"),
        (lambda: hybnn.Head(lr=float("nan")), "lr"),
        (lambda: hybnn.Head().predict(codes), "not fitted"),
        (lambda: hybnn.Head(epochs=1).fit(codes, ytr), "shape"),
        (lambda: hybnn.Head(epochs=1).fit(codes.astype(np.float32), np.zeros(len(codes))),
         "bools or 0/1"),
        (lambda: hybnn.Head(epochs=1).fit(codes, np.arange(len(codes)) % 3, names=["a"]),
         "names= has 1 names for 3 labels"),
        (lambda: hybnn.Head(epochs=1).fit(codes, -np.ones(len(codes), int)), "negative"),
        (lambda: hybnn.Head(hidden=[0]), None),
        (lambda: head.predict(codes[:, :100]), r"shape \(N, 200\)"),
        (lambda: head.evaluate(codes, np.full(len(codes), 42)), "not one of this head"),
        (lambda: encoder.encode(xte[:, :4]), "must have shape"),
        (lambda: encoder.encode(xte.astype(np.float32)), r"\[0, 1\]"),
        (lambda: hybnn.Encoder.pretrain(xtr, tmp_path / "e", epochz=1), "unknown pretrain"),
        (lambda: hybnn.Encoder.load(tmp_path / "nothing"), "not found|no such|does not exist"),
        (lambda: hybnn.Model(encoder, hybnn.Head(epochs=1).fit(codes, np.arange(len(codes)) % 2)),
         "does not record its encoder"),
    ]
    for call, match in cases:
        if match is None:  # refused at fit: hidden widths are checked with the data's size
            with pytest.raises(HybnnError):
                call().fit(codes, np.arange(len(codes)) % 2)
            continue
        with pytest.raises(HybnnError, match=match):
            call()


def test_a_head_meets_only_its_encoder(arrays, encoder, head, tmp_path):
    other = hybnn.Encoder.pretrain(arrays[0][:300], tmp_path / "other", epochs=1, seed=1)
    with pytest.raises(FingerprintMismatch, match="trained on codes of encoder"):
        hybnn.Model(other, head)
    assert isinstance(FingerprintMismatch("x"), HybnnError) and issubclass(DataError, HybnnError)
