"""The round ledger: typed rows in, federation.json's rounds out."""

from __future__ import annotations

from hybnn.federated.ledger import Ledger


def test_rows_sum_bytes_and_leave_out_what_was_never_measured():
    ledger = Ledger({7: 0, 8: 1}.get)
    ledger[1].start()
    for nid in (7, 8):
        client = ledger.client(1, nid)
        client.sampled("train")
        client.count("train", "down", 100)
    ok = ledger.client(1, 7)
    ok.set("train", "ok")
    ok.count("train", "up", 40)
    ok.trained({"local-acc": 0.75, "train-loss": 0.5}, num_examples=30)
    ledger.client(1, 8).set("train", "rejected", "num-examples = 10^9 > 1000")
    ledger.client(1, 9)  # known to the server, never sampled: not a row
    ledger[1].finish_training(valid_updates=1)
    (row,) = ledger.rows(lambda r: {"global_acc": 0.5})
    assert (row["round"], row["global_acc"], row["bytes_down"], row["bytes_up"]) == (
        1, 0.5, 200, 40)
    assert row["sampled"] == 2 and row["valid_updates"] == 1 and row["seconds"] >= 0
    assert "reason" not in row and row["aggregated"] is False
    first, second = row["clients"]
    assert first == {"node_id": 7, "partition": 0, "status": "ok", "status_eval": "not sampled",
                     "train_bytes_down": 100, "train_bytes_up": 40, "num_examples": 30,
                     "local_acc": 0.75, "train_loss": 0.5}
    assert second["status"] == "rejected" and "10^9" in second["reason"]
    assert "train_bytes_up" not in second


def test_secagg_stages_add_up_their_messages():
    ledger = Ledger(lambda nid: None)
    client = ledger.client(2, 5)
    for size in (10, 20, 30):
        client.count("train", "up", size, add=True)
    client.set("eval", "missing", "no reply in evaluation within 5 s")
    assert client.train_bytes_up == 60 and client.to_json()["reason_eval"].startswith("no reply")
