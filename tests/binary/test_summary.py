"""Model summary: binary vs float parameters and the bytes a deployed model needs."""

from __future__ import annotations

from torch import nn

from hybnn.binary.layers import BinaryLinear
from hybnn.binary.summary import LayerSummary, deployed_bytes, model_summary, summary_table
from hybnn.models import BNNHead


def test_paper_head_counts_25856_binary_and_260_float_parameters():
    rows = model_summary(BNNHead())
    assert sum(r.binary_params for r in rows) == 200 * 128 + 128 * 2 == 25_856
    # batch-norm affines only (weight + bias of 128 and of 2); running stats are buffers
    assert sum(r.float_params for r in rows) == 2 * 128 + 2 * 2 == 260


def test_paper_head_rows_per_layer():
    rows = model_summary(BNNHead())
    assert rows == [
        LayerSummary("net.0", "BinaryLinear", 25_600, 0),
        LayerSummary("net.1", "BatchNorm1d", 0, 256),
        LayerSummary("net.2", "BinaryLinear", 256, 0),
        LayerSummary("net.3", "BatchNorm1d", 0, 4),
    ]


def test_deployed_bytes_is_one_bit_per_binary_and_four_bytes_per_float():
    assert deployed_bytes(BNNHead()) == 25_856 // 8 + 4 * 260 == 4272
    assert LayerSummary("l", "BinaryLinear", 9, 0).deployed_bytes == 2  # bits round up per layer
    assert LayerSummary("l", "Linear", 0, 3).deployed_bytes == 12


def test_learned_scales_and_biases_count_as_float():
    rows = model_summary(BinaryLinear(10, 4, bias=True, scaling="learned"))
    assert rows == [LayerSummary("<root>", "BinaryLinear", 40, 4 + 4)]


def test_float_layers_have_no_binary_parameters():
    rows = model_summary(nn.Sequential(nn.Linear(3, 2), nn.ReLU()))
    assert rows == [LayerSummary("0", "Linear", 0, 8)]


def test_summary_table_totals_and_ratio():
    table = summary_table(BNNHead())
    lines = table.splitlines()
    assert lines[0].split() == ["layer", "type", "binary", "float", "bytes"]
    assert lines[-2].split() == ["total", "25856", "260", "4272"]
    fp32 = 4 * (25_856 + 260)
    assert lines[-1] == f"deployed: 4272 B vs {fp32} B as float32 ({fp32 / 4272:.1f}x smaller)"
