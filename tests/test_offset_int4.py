"""4-bit blocks with a scale and an offset (Q4_1's layout) as MatMulNBits + a block-sum MatMul.

The reference is NumPy's float64 matmul with the weights the blocks stand for;
onnxruntime runs the rewritten graph.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from agentd.exporters.onnx.offset_int4 import quantize_offset_int4

K, N, BLOCK = 128, 48, 32


def matmul_model(weight: np.ndarray, name: str = "proj") -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name=name)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", N])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def q4_1_weight(rng: np.random.Generator) -> np.ndarray:
    """``(K, N)`` weights on a Q4_1 grid: ``d * q + m`` per block of 32 along K, as a dequantised GGUF holds them."""
    q = rng.integers(0, 16, size=(N, K // BLOCK, BLOCK)).astype(np.float32)
    q[..., 0], q[..., 1] = 0, 15  # llama.cpp's Q4_1 maps each block's min to 0 and max to 15
    d = rng.uniform(0.001, 0.05, size=(N, K // BLOCK, 1)).astype(np.float32)
    m = rng.uniform(-0.4, 0.1, size=(N, K // BLOCK, 1)).astype(np.float32)
    return (d * q + m).reshape(N, K).T


def test_weights_on_a_q4_1_grid_are_reproduced_exactly() -> None:
    rng = np.random.default_rng(0)
    weight = q4_1_weight(rng)
    model = matmul_model(weight)
    quantize_offset_int4(model, BLOCK, exclude=set(), accuracy_level=0)  # float32 activations: exact arithmetic
    assert {node.op_type for node in model.graph.node} == {"MatMulNBits", "MatMul", "Add"}
    x = rng.standard_normal((2, 3, K)).astype(np.float32)
    np.testing.assert_allclose(run(model, x), x.astype(np.float64) @ weight, rtol=1e-5, atol=1e-5)


def test_float_weights_are_within_half_a_step_and_int8_activations_stay_close() -> None:
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((K, N)).astype(np.float32) * 0.05 + 0.02  # not centred on zero
    blocks = weight.T.reshape(N, K // BLOCK, BLOCK)
    step = (blocks.max(-1) - blocks.min(-1)) / 15
    x = rng.standard_normal((1, 4, K)).astype(np.float32)
    exact = x.astype(np.float64) @ weight
    # The worst case of half a step per weight, summed over K: |x| times half the step of its block.
    bound = np.abs(x).reshape(1, 4, K // BLOCK, BLOCK).sum(-1) @ (step.T / 2)
    for level, slack in ((0, 1e-5), (4, 0.05)):
        model = matmul_model(weight)
        quantize_offset_int4(model, BLOCK, exclude=set(), accuracy_level=level)
        error = np.abs(run(model, x) - exact)
        assert np.all(error <= bound * (1 + slack) + 1e-5), level


def test_projections_reading_one_input_share_its_block_sums_and_excluded_ones_stay_float() -> None:
    rng = np.random.default_rng(2)
    model = matmul_model(q4_1_weight(rng), name="a")
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(q4_1_weight(rng), "w2"), numpy_helper.from_array(q4_1_weight(rng), "w3")])
    graph.node.extend([helper.make_node("MatMul", ["x", "w2"], ["y2"], name="b"), helper.make_node("MatMul", ["x", "w3"], ["y3"], name="kept")])
    quantize_offset_int4(model, BLOCK, exclude={"kept"}, accuracy_level=4)
    block_sums = [node for node in graph.node if node.name.endswith("/block_sum")]
    assert len(block_sums) == 1
    assert [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] == "w3"] == ["kept"]


@pytest.mark.parametrize("k", [40])
def test_an_input_dimension_that_is_not_whole_blocks_is_left_alone(k: int) -> None:
    weight = np.ones((k, N), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="odd")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph)
    quantize_offset_int4(model, BLOCK, exclude=set(), accuracy_level=4)
    assert [node.op_type for node in model.graph.node] == ["MatMul"]
