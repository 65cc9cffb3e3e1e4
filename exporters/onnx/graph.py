"""A small ONNX graph builder over ``onnx.helper``, the way onnxruntime-genai's builder works.

Graphs are written node by node with explicit names (``/model/layers.3/attn/GQA``)
so a profile or a Netron view reads like the model. Weights go through
:meth:`GraphBuilder.weight`, which stores them as float32 or float16 (the
``fp16`` export keeps float32 activations and casts each weight once; ORT folds
that cast into the initializer when the session loads). Everything is saved with
external data, so models past protobuf's 2 GB limit save and check like small ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Standard ONNX opset of every graph (RMSNormalization needs 23).
OPSET = 23
#: Version of onnxruntime's ``com.microsoft`` contrib domain.
CONTRIB_OPSET = 1
CONTRIB = "com.microsoft"
#: Initializers larger than this go to the external data file.
EXTERNAL_THRESHOLD_BYTES = 1024

#: ``TensorProto`` element types by the names the manifest uses.
DTYPES: dict[str, int] = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "int64": TensorProto.INT64, "int32": TensorProto.INT32}

Dim = int | str


class GraphBuilder:
    """Collects nodes, initializers and graph inputs/outputs, then makes a ModelProto."""

    def __init__(self, name: str, weight_dtype: str = "float32"):
        if weight_dtype not in ("float32", "float16"):
            raise ValueError(f"weight_dtype must be float32 or float16, got {weight_dtype!r}")
        self.name = name
        self.weight_dtype = weight_dtype
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._constants: dict[tuple[str, tuple], str] = {}
        self._names: set[str] = set()

    # -- graph I/O -------------------------------------------------------------
    def input(self, name: str, dtype: str, shape: Sequence[Dim]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, DTYPES[dtype], list(shape)))
        return name

    def output(self, name: str, dtype: str, shape: Sequence[Dim]) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, DTYPES[dtype], list(shape)))
        return name

    # -- tensors -----------------------------------------------------------------
    def initializer(self, name: str, array: np.ndarray) -> str:
        """Add ``array`` as is (its dtype kept); returns its name."""
        self._claim(name)
        # Not np.ascontiguousarray: it turns a 0-d scalar into shape (1,).
        self.initializers.append(numpy_helper.from_array(np.require(array, requirements="C"), name))
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        """A matmul or embedding weight in the export's weight dtype, as float32 to its consumers."""
        if self.weight_dtype == "float32":
            return self.initializer(name, array.astype(np.float32, copy=False))
        stored = self.initializer(name, array.astype(np.float16))
        return self.node("Cast", [stored], name=f"{name}/Cast", to=TensorProto.FLOAT)

    def param(self, name: str, array: np.ndarray) -> str:
        """A norm weight, bias or table that stays float32 whatever the weight dtype."""
        return self.initializer(name, array.astype(np.float32, copy=False))

    def const_i64(self, values: int | Sequence[int]) -> str:
        """A shared int64 constant (scalar when ``values`` is an int)."""
        return self._constant(np.asarray(values, dtype=np.int64))

    def const_f32(self, values: float | Sequence[float]) -> str:
        """A shared float32 constant (scalar when ``values`` is a float)."""
        return self._constant(np.asarray(values, dtype=np.float32))

    def _constant(self, array: np.ndarray) -> str:
        key = (array.dtype.str, tuple(array.shape), array.tobytes())
        if key not in self._constants:
            label = "x".join(map(str, array.reshape(-1).tolist()[:4])) or "empty"
            self._constants[key] = self.initializer(f"/model/constants/{array.dtype.name}/{label}/{len(self._constants)}", array)
        return self._constants[key]

    # -- nodes -------------------------------------------------------------------
    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        *,
        name: str,
        outputs: int | Sequence[str] = 1,
        domain: str = "",
        **attributes: Any,
    ) -> Any:
        """Add a node; returns its output name (or the list of names when several).

        ``outputs`` is a count (names ``<name>/output_<i>``) or explicit names
        (``""`` for an optional output left out).
        """
        self._claim(name)
        names = [f"{name}/output_{i}" for i in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=name, domain=domain or None, **attributes))
        return names[0] if len(names) == 1 else names

    def _claim(self, name: str) -> None:
        if name in self._names:
            raise ValueError(f"duplicate graph name {name!r}")
        self._names.add(name)

    # -- model -------------------------------------------------------------------
    def model(self, producer: str) -> onnx.ModelProto:
        """The ModelProto: standard opset :data:`OPSET` plus the contrib domain."""
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(CONTRIB, CONTRIB_OPSET)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name=producer)
        model.ir_version = 10  # what onnxruntime >= 1.20 reads; onnx's default may be newer
        return model


def save_model(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Save ``model`` to ``path`` with its weights in ``<path>.data``; returns the files written.

    Always external data, so size never matters (protobuf caps a file at 2 GB).
    The model is checked with ``onnx.checker`` from disk after saving.
    """
    data_name = path.name + ".data"
    (path.parent / data_name).unlink(missing_ok=True)  # external data is appended, never truncated
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=EXTERNAL_THRESHOLD_BYTES,
    )
    onnx.checker.check_model(str(path))
    files = [path]
    if (path.parent / data_name).exists():
        files.append(path.parent / data_name)
    return files


def value_infos(values: Sequence[onnx.ValueInfoProto]) -> list[dict[str, Any]]:
    """Graph inputs/outputs as manifest entries: name, dtype and shape (ints or axis names)."""
    names = {code: name for name, code in DTYPES.items()}
    out = []
    for value in values:
        tensor = value.type.tensor_type
        shape = [dim.dim_param if dim.dim_param else dim.dim_value for dim in tensor.shape.dim]
        out.append({"name": value.name, "dtype": names.get(tensor.elem_type, str(tensor.elem_type)), "shape": shape})
    return out
