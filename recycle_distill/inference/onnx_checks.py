"""What every reader of our ONNX files checks first, without torch.

Standard library only (``onnx`` / ``onnxruntime`` are imported when called), so the torch-free
recognizer runner (:mod:`recycle_distill.recognizer.onnx_runner`) shares these with the
students' runner (:mod:`.onnx_runtime`) and exporter (:mod:`.onnx_export`).
"""

from __future__ import annotations

import importlib
from typing import Any

from recycle_distill.util.messages import plain, short_repr

__all__ = ["INSTALL_HINT", "import_onnx_package", "check_onnx_graph", "OPT_OUT"]

INSTALL_HINT = 'ONNX support needs the optional packages: pip install "recycle-distill[onnx]"'
OPT_OUT = "pass allow_any_graph=True to run it anyway (see docs/inference.md, 'What an ONNX file is trusted with')"


def import_onnx_package(name: str) -> Any:
    """``name`` (``onnx`` or ``onnxruntime``) imported, or a one-line ImportError with the install hint."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"{name} is not installed. {INSTALL_HINT}") from err


def check_onnx_graph(path: str) -> None:
    """Refuse a graph with what our exports never write: a node with a subgraph (``Loop``,
    ``Scan``, ``If``, ...: control flow, which may run as long as it says) or a tensor whose
    data lives in another file. Raises ValueError naming the file and the node or tensor."""
    onnx = import_onnx_package("onnx")
    shown = plain(path)
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as err:  # noqa: BLE001  (DecodeError, OSError, ...: all mean unreadable)
        raise ValueError(f"{shown}: not a readable ONNX file ({short_repr(str(err), 200)})") from None
    graph_kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    for node in model.graph.node:
        if any(attribute.type in graph_kinds for attribute in node.attribute):
            raise ValueError(f"{shown}: the graph holds a {short_repr(node.op_type)} node (control flow), which "
                             f"recycle-distill exports never write; {OPT_OUT}")
    tensors = list(model.graph.initializer) + list(model.graph.sparse_initializer) + [
        attribute.t for node in model.graph.node for attribute in node.attribute
        if attribute.type == onnx.AttributeProto.TENSOR]
    for tensor in tensors:
        tensor = getattr(tensor, "values", tensor)  # a sparse initializer keeps its data in .values
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
            raise ValueError(f"{shown}: the graph reads tensor {short_repr(tensor.name)} from another file "
                             f"({short_repr(location)}), which recycle-distill exports never do; {OPT_OUT}")
