"""A bundle's encoder graph is data, not a program: forged graphs (with valid checksums) are
refused before ONNX Runtime sees them, and every run is bounded and checked."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hybnn.bundle import format as fmt
from hybnn.cli import main
from hybnn.engine import format as engine_fmt
from hybnn.errors import ArtifactError
from hybnn.onnxgraph import rules as graph_rules

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
oh = onnx.helper
TP = onnx.TensorProto
BITS = 200  # the tiny encoder's, as bundle_fp32 records it


@pytest.fixture(scope="module")
def parts(bundle_fp32):
    return fmt.read(bundle_fp32[0])


def forge(parts, onnx_bytes=None, edit=None):
    """Bundle bytes with a *valid* checksum around another graph or header."""
    header = copy.deepcopy(parts.header)
    if edit:
        edit(header)
    raw = np.frombuffer(parts.onnx if onnx_bytes is None else onnx_bytes, dtype=np.uint8)
    return engine_fmt.encode(header, {**parts.head_arrays, fmt.ONNX_ARRAY: raw}, fmt.DTYPES)


def weights(name, shape, value=0.01):
    return onnx.numpy_helper.from_array(np.full(shape, value, np.float32), name)


def shape_of(name, dims):
    return onnx.numpy_helper.from_array(np.array(dims, np.int64), name)


def graph(nodes, inits, functions=(), opset=18):
    """A model of ``nodes`` from ``images`` (batch, 1, 8, 8) to ``logits`` (batch, 200)."""
    g = oh.make_graph(nodes, "forged",
                      [oh.make_tensor_value_info("images", TP.FLOAT, ["batch", 1, 8, 8])],
                      [oh.make_tensor_value_info("logits", TP.FLOAT, ["batch", BITS])], inits)
    model = oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)],
                          functions=list(functions))
    model.ir_version = 10
    return model.SerializeToString()


def linear(flat="flat", rows=(-1, 64)):
    """images -> Reshape(rows) -> Gemm -> logits: a linear encoder of the allowed ops."""
    return ([oh.make_node("Reshape", ["images", "rows"], [flat]),
             oh.make_node("Gemm", [flat, "w"], ["logits"])],
            [shape_of("rows", rows), weights("w", (rows[1], BITS))])


def body():
    """A Loop's body: carries ``x`` unchanged, loops on."""
    return oh.make_graph([oh.make_node("Identity", ["cond"], ["cond_out"]),
                          oh.make_node("Identity", ["x"], ["x_out"])], "body",
                         [oh.make_tensor_value_info("i", TP.INT64, []),
                          oh.make_tensor_value_info("cond", TP.BOOL, []),
                          oh.make_tensor_value_info("x", TP.FLOAT, None)],
                         [oh.make_tensor_value_info("cond_out", TP.BOOL, []),
                          oh.make_tensor_value_info("x_out", TP.FLOAT, None)])


def branch(name):
    """An If branch: the images flattened."""
    return oh.make_graph([oh.make_node("Reshape", ["images", "rows"], [name])], name, [],
                         [oh.make_tensor_value_info(name, TP.FLOAT, None)])


def hostile_graphs():
    """(case, ONNX bytes, what the error says): each a real model of ONNX's protobuf."""
    nodes, inits = linear()
    twice = linear(rows=(-1, 32))  # 2N rows of 32 values: (2N, 200) logits
    slice_rows = [oh.make_node("Reshape", ["images", "rows"], ["flat"]),
                  oh.make_node("Slice", ["flat", "one", "end", "zero"], ["fewer"]),
                  oh.make_node("Gemm", ["fewer", "w"], ["logits"])]
    slice_inits = [*inits, shape_of("one", [1]), shape_of("end", [2**62]),
                   shape_of("zero", [0])]
    looped = [nodes[0], oh.make_node("Loop", ["trips", "", "flat"], ["looped"], body=body()),
              oh.make_node("Gemm", ["looped", "w"], ["logits"])]  # 10^12 steps, then Gemm
    if_nodes = [oh.make_node("Reshape", ["images", "rows"], ["flat"]),
                oh.make_node("ReduceMax", ["flat"], ["top"], keepdims=0),
                oh.make_node("Greater", ["top", "half"], ["cond"]),
                oh.make_node("If", ["cond"], ["chosen"], then_branch=branch("a"),
                             else_branch=branch("b")),
                oh.make_node("Gemm", ["chosen", "w"], ["logits"])]
    huge = oh.make_node("ConstantOfShape", ["huge_shape"], ["zeros"])
    gigabyte = TP()
    gigabyte.name, gigabyte.data_type = "w", TP.FLOAT
    gigabyte.dims.extend([1 << 18, 1 << 10])  # 1 GiB declared ...
    gigabyte.raw_data = b"\0" * 4  # ... in 4 bytes: refused by its dims, nothing allocated
    external = weights("w", (64, BITS))
    external.ClearField("raw_data")
    external.data_location = TP.EXTERNAL
    external.external_data.add(key="location", value="/etc/passwd")
    square = [oh.make_node("Reshape", ["images", "rows"], ["flat"]),
              oh.make_node("Gemm", ["flat", "flat"], ["gram"], transB=1)]  # (N, N)
    padded = [oh.make_node("Conv", ["images", "k"], ["map"], pads=[10**5] * 4),
              *nodes]
    function = oh.make_function("custom", "Evil", ["x"], ["y"],
                                [oh.make_node("Identity", ["x"], ["y"])],
                                [oh.make_opsetid("", 18)])
    return [
        ("2N rows", graph(*twice), r"output is float32 \(2, 200\) for one image"),
        ("N-1 rows", graph(slice_rows, slice_inits), "op 'Slice'"),
        ("Loop of 10^12 steps", graph(looped, [*inits, shape_of("trips", 10**12)]),
         "attribute 'body' holding a graph"),
        ("If", graph(if_nodes, [*inits, weights("half", (), 0.5)]), "holding a graph"),
        ("ConstantOfShape [2^20, 2^20]",
         graph([huge, *nodes], [*inits, shape_of("huge_shape", [1 << 20, 1 << 20])]),
         "op 'ConstantOfShape'"),
        ("1 GiB initializer in 4 bytes", graph(nodes, [inits[0], gigabyte]),
         "declares 1,073,741,824 bytes"),
        ("unknown op domain",
         graph([oh.make_node("Evil", ["images"], ["x"], domain="com.evil"), *nodes], inits),
         "domain 'com.evil'"),
        ("model function", graph(nodes, inits, functions=[function]), "model functions"),
        ("external data", graph(nodes, [inits[0], external]), "external data"),
        ("weight computed from the images", graph(square, inits), "is a weight but is computed"),
        ("Conv padded by 10^5", graph(padded, [*inits, weights("k", (1, 1, 1, 1))]),
         "one image takes .* bytes"),
        ("opset 7", graph(nodes, inits, opset=7), r"default ONNX opset \[7\]"),
        ("not protobuf", b"\xff" * 64, "not an ONNX model"),
    ]


HOSTILE = hostile_graphs() if onnx else []


@pytest.mark.parametrize(("case", "onnx_bytes", "message"), HOSTILE,
                         ids=[case for case, _, _ in HOSTILE])
def test_a_forged_graph_is_refused_at_load(tmp_path, parts, case, onnx_bytes, message):
    from hybnn import runtime

    path = tmp_path / "forged.bundle"
    path.write_bytes(forge(parts, onnx_bytes))
    with pytest.raises(ArtifactError, match=message):
        runtime.load(path)
    with pytest.raises(ArtifactError, match=message):  # before any session is made
        graph_rules.check_graph(onnx_bytes, "images", "logits", (1, 8, 8), BITS)


@pytest.mark.parametrize(("case", "onnx_bytes", "message"), HOSTILE,
                         ids=[case for case, _, _ in HOSTILE])
def test_the_cli_prints_one_error_line_for_a_forged_graph(tmp_path, capsys, parts, case,
                                                          onnx_bytes, message):
    path = tmp_path / "forged.bundle"
    path.write_bytes(forge(parts, onnx_bytes))
    np.save(tmp_path / "x.npy", np.full((2, 1, 8, 8), 0.5, np.float32))
    assert main(["predict", "--model", str(path), str(tmp_path / "x.npy")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybnn: error: ")
    assert "encoder" in lines[0]


def test_the_exported_graph_is_accepted_and_runs_as_checked(parts, bundle_fp32):
    import onnxruntime as ort

    checked = graph_rules.check_graph(parts.onnx, "images", "logits", (1, 8, 8), BITS)
    assert checked.batch == graph_rules.MAX_RUN_IMAGES
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    runs = [ort.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None,
                                                                          {"images": x})[0]
            for b in (parts.onnx, checked.onnx)]
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("code", ["latent", "conv2", "conv3"])
def test_every_encoder_hybnn_exports_is_accepted(code):
    """fp32 and int8 (hybnn's recipe and ONNX Runtime's plain one) of every code layer."""
    pytest.importorskip("onnxscript")
    from hybnn.bundle.onnx_export import INPUT_NAME, OUTPUT_NAME, encoder_onnx
    from hybnn.bundle.quantize import Recipe, quantize_int8
    from hybnn.models.vae import BinaryLatentVAE

    vae = BinaryLatentVAE((12, 12), 1, 24, code=code).eval()
    fp32 = encoder_onnx(vae)
    images = np.random.default_rng(0).random((64, 1, 12, 12), dtype=np.float32)
    for graph_bytes in (fp32, quantize_int8(fp32, INPUT_NAME, images),
                        quantize_int8(fp32, INPUT_NAME, images, Recipe("MinMax", ()))):
        checked = graph_rules.check_graph(graph_bytes, INPUT_NAME, OUTPUT_NAME, (1, 12, 12),
                                          vae.code_bits)
        assert checked.batch == graph_rules.MAX_RUN_IMAGES and checked.macs_per_image > 0


def test_the_schema_is_onnxs_own():
    """Field numbers and wire types of hybnn's ONNX schema equal ``onnx.onnx_ml_pb2``'s."""
    from google.protobuf.descriptor import FieldDescriptor as F

    from hybnn.onnxgraph.schema import SCHEMA, messages

    theirs = {"TensorType": onnx.TypeProto.Tensor,
              "Dimension": onnx.TensorShapeProto.Dimension}
    length_delimited = {F.TYPE_BYTES, F.TYPE_STRING, F.TYPE_MESSAGE}
    for name, cls in messages().items():
        their = getattr(onnx, name, None) or theirs[name]
        their_fields = their.DESCRIPTOR.fields_by_name
        assert set(cls.DESCRIPTOR.fields_by_name) == {f[0] for f in SCHEMA[name]}
        for field in cls.DESCRIPTOR.fields:
            other = their_fields[field.name]
            assert field.number == other.number, (name, field.name)
            assert (field.type == other.type or {field.type, other.type} <= length_delimited
                    or (field.type == F.TYPE_INT32 and other.type == F.TYPE_ENUM)), field.name
            assert repeated(field) == repeated(other), field.name


def repeated(field):
    return field.is_repeated if hasattr(field, "is_repeated") else field.label == 3


def test_the_runtime_checks_every_runs_output_against_its_input(tmp_path, capsys, parts,
                                                                monkeypatch):
    """Were a graph to get past the rules, a run returning N-1 or 2N rows for N images is
    one ArtifactError (it was a wrong answer from the API and a zip() traceback in the CLI)."""
    from hybnn import runtime
    from hybnn.onnxgraph import session as onnx_encoder

    def unchecked(onnx_bytes, *args, **kwargs):
        return graph_rules.CheckedGraph(onnx_bytes, 1, 1, 256)

    monkeypatch.setattr(fmt, "check_graph", unchecked)
    monkeypatch.setattr(onnx_encoder, "check_graph", unchecked)
    nodes, inits = linear()
    fewer = [nodes[0], oh.make_node("Slice", ["flat", "one", "end", "zero"], ["fewer"]),
             oh.make_node("Gemm", ["fewer", "w"], ["logits"])]
    more = [nodes[0], oh.make_node("Concat", ["flat", "flat"], ["more"], axis=0),
            oh.make_node("Gemm", ["more", "w"], ["logits"])]
    limits = [shape_of("one", [1]), shape_of("end", [2**62]), shape_of("zero", [0])]
    x = np.full((2, 1, 8, 8), 0.5, np.float32)
    np.save(tmp_path / "x.npy", x)
    for rows, nodes_ in ((1, fewer), (4, more)):
        path = tmp_path / f"rows{rows}.bundle"
        path.write_bytes(forge(parts, graph(nodes_, [*inits, *limits])))
        with pytest.raises(ArtifactError, match=rf"returned float32 \({rows}, 200\) for 2 "
                                                r"images, expected float32 \(2, 200\)"):
            runtime.load(path).predict(x)
        assert main(["predict", "--model", str(path), str(tmp_path / "x.npy")]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("hybnn: error: ")


def test_a_run_is_stopped_after_its_time_limit(tmp_path, capsys, parts, monkeypatch):
    """A graph of allowed ops that runs long (40 convolutions of 256 channels) is stopped
    between two of its nodes once RUN_SECONDS have passed."""
    from hybnn import runtime
    from hybnn.onnxgraph import session as onnx_encoder

    nodes = [oh.make_node("Conv", ["images", "w0"], ["h0"], pads=[1, 1, 1, 1])]
    for i in range(40):
        nodes.append(oh.make_node("Conv", [f"h{i}", "w"], [f"h{i + 1}"], pads=[1, 1, 1, 1]))
    nodes += [oh.make_node("Reshape", ["h40", "rows"], ["flat"]),
              oh.make_node("Gemm", ["flat", "out"], ["logits"])]
    inits = [weights("w0", (256, 1, 3, 3)), weights("w", (256, 256, 3, 3), 1e-4),
             shape_of("rows", (-1, 256 * 64)), weights("out", (256 * 64, BITS))]
    path = tmp_path / "slow.bundle"
    path.write_bytes(forge(parts, graph(nodes, inits)))
    model = runtime.load(path)
    assert model.encoder.batch < 64  # its multiply-adds bound the images a run takes
    monkeypatch.setattr(onnx_encoder, "RUN_SECONDS", 0.05)
    x = np.full((64, 1, 8, 8), 0.5, np.float32)
    with pytest.raises(ArtifactError, match=r"ran longer than 0.05 s on \d+ images"):
        model.predict(x)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", "--model", str(path), str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err  # ONNX Runtime's own log lines are silenced
    assert len(err.splitlines()) == 1 and "ran longer than 0.05 s" in err


def test_large_inputs_run_in_batches_the_graph_allows(bundle_fp32, test_split):
    from hybnn import runtime

    model = runtime.load(bundle_fp32[0])
    x = test_split.x[:10]
    whole = model.encoder_logits(x)
    model.encoder.batch = 3
    np.testing.assert_array_equal(model.encoder_logits(x), whole)


def test_onnx_runtimes_own_messages_are_one_escaped_line(tmp_path, capsys, parts, monkeypatch):
    """ONNX Runtime's messages quote the graph's names: a name holding a terminal escape is
    printed escaped (were such a graph to get past the rules and fail in a run)."""
    from hybnn.onnxgraph import session as onnx_encoder

    def unchecked(onnx_bytes, *args, **kwargs):
        return graph_rules.CheckedGraph(onnx_bytes, 1, 1, 256)

    monkeypatch.setattr(fmt, "check_graph", unchecked)
    monkeypatch.setattr(onnx_encoder, "check_graph", unchecked)
    nodes = [oh.make_node("Reshape", ["images", "rows"], ["flat"], name="\x1b[2J\nfake"),
             oh.make_node("Gemm", ["flat", "w"], ["logits"])]
    path = tmp_path / "named.bundle"
    path.write_bytes(forge(parts, graph(nodes, [shape_of("rows", (-1, 48)),
                                                weights("w", (48, BITS))])))
    np.save(tmp_path / "x.npy", np.full((2, 1, 8, 8), 0.5, np.float32))  # 128 = 2.67 x 48
    assert main(["predict", "--model", str(path), str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "\x1b" not in err
    assert "ONNX Runtime failed running the encoder" in err and "\\x1b[2J" in err
