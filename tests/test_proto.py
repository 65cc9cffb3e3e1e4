"""The wire contract: generated code is current, and every element of the .proto is documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "scripts" / "gen_protos.py"
PROTO_DIR = REPO / "protos" / "agentd" / "v1"
GENERATED_DIR = REPO / "agentd" / "v1"

# FileDescriptorProto / DescriptorProto / ... field numbers used in SourceCodeInfo paths.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM = 2, 3, 4
ENUM_VALUE = 2
SERVICE_METHOD = 2


def _generate(out: Path) -> list[Path]:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(out)], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr
    return [Path(line) for line in result.stdout.split()]


def test_committed_generated_code_is_current(tmp_path) -> None:
    generated = _generate(tmp_path)
    protos = sorted(PROTO_DIR.glob("*.proto"))
    assert protos, "no .proto files"
    assert len(generated) == 3 * len(protos)  # _pb2.py, _pb2.pyi, _pb2_grpc.py each
    stale = [
        str(relative)
        for relative in generated
        if not (REPO / relative).is_file() or (REPO / relative).read_bytes() != (tmp_path / relative).read_bytes()
    ]
    assert not stale, f"stale generated code {stale}: run `python scripts/gen_protos.py` and commit the result"
    committed = {path.name for path in GENERATED_DIR.glob("*_pb2*")}
    assert committed == {path.name for path in generated}, "generated files without a .proto (delete them)"


def _descriptor_set(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    from grpc_tools import protoc

    out = tmp_path / "descriptors.pb"
    args = [
        "grpc_tools.protoc",
        f"-I{REPO / 'protos'}",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *(str(path) for path in sorted(PROTO_DIR.glob("*.proto"))),
    ]
    assert protoc.main(args) == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _elements(file: descriptor_pb2.FileDescriptorProto):
    """Yield (path, qualified name) of every service, rpc, message, field, enum and enum value."""

    def message(path: tuple[int, ...], proto: descriptor_pb2.DescriptorProto, prefix: str):
        name = f"{prefix}.{proto.name}"
        yield path, name
        for i, field in enumerate(proto.field):
            yield (*path, MESSAGE_FIELD, i), f"{name}.{field.name}"
        for i, nested in enumerate(proto.nested_type):
            yield from message((*path, MESSAGE_NESTED, i), nested, name)
        for i, nested_enum in enumerate(proto.enum_type):
            yield from enum((*path, MESSAGE_ENUM, i), nested_enum, name)

    def enum(path: tuple[int, ...], proto: descriptor_pb2.EnumDescriptorProto, prefix: str):
        name = f"{prefix}.{proto.name}"
        yield path, name
        for i, value in enumerate(proto.value):
            yield (*path, ENUM_VALUE, i), f"{name}.{value.name}"

    for i, service in enumerate(file.service):
        yield (FILE_SERVICE, i), f"{file.package}.{service.name}"
        for j, method in enumerate(service.method):
            yield (FILE_SERVICE, i, SERVICE_METHOD, j), f"{file.package}.{service.name}.{method.name}"
    for i, proto in enumerate(file.message_type):
        yield from message((FILE_MESSAGE, i), proto, file.package)
    for i, proto in enumerate(file.enum_type):
        yield from enum((FILE_ENUM, i), proto, file.package)


def test_every_rpc_message_field_and_enum_is_commented(tmp_path) -> None:
    descriptors = _descriptor_set(tmp_path)
    assert {f.package for f in descriptors.file} == {"agentd.v1"}
    undocumented = []
    checked = 0
    for file in descriptors.file:
        comments = {
            tuple(location.path): (location.leading_comments + location.trailing_comments).strip()
            for location in file.source_code_info.location
        }
        for path, name in _elements(file):
            checked += 1
            if not comments.get(path):
                undocumented.append(f"{file.name}: {name}")
    assert checked > 50
    assert not undocumented, "elements without a comment:\n" + "\n".join(undocumented)


def test_comment_check_catches_a_missing_comment(tmp_path) -> None:
    """The check above must be able to fail: an uncommented field is reported."""
    proto = tmp_path / "protos" / "agentd" / "v1"
    proto.mkdir(parents=True)
    (proto / "bad.proto").write_text(
        'syntax = "proto3";\npackage agentd.v1;\n// Documented.\nmessage Bad {\n  string undocumented = 1;\n}\n'
    )
    from grpc_tools import protoc

    out = tmp_path / "d.pb"
    assert protoc.main(["p", f"-I{tmp_path / 'protos'}", "--include_source_info", f"--descriptor_set_out={out}", str(proto / "bad.proto")]) == 0
    (file,) = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    comments = {tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location}
    missing = [name for path, name in _elements(file) if not comments.get(path)]
    assert missing == ["agentd.v1.Bad.undocumented"]


@pytest.mark.parametrize(
    ("module", "service", "methods"),
    [
        (
            "inference_pb2",
            "Inference",
            {"Generate", "Embed", "Classify", "Tokenize", "Detokenize", "SaveSession", "RestoreSession", "ListSessions", "DeleteSession"},
        ),
        ("models_pb2", "Models", {"ListModels", "GetModelInfo", "LoadModel", "UnloadModel"}),
        ("agent_pb2", "Agent", {"RunTask", "Approve", "CancelRun", "ListRuns", "GetRun", "ListMemories", "Forget"}),
    ],
)
def test_generated_modules_expose_the_services(module, service, methods) -> None:
    import importlib

    descriptor = importlib.import_module(f"agentd.v1.{module}").DESCRIPTOR.services_by_name[service]
    assert descriptor.full_name == f"agentd.v1.{service}"
    assert {method.name for method in descriptor.methods} == methods


def test_unset_optional_sampling_fields_are_distinguishable() -> None:
    """`optional` lets the server tell "use the model default" from an explicit 0."""
    from agentd.v1 import inference_pb2

    request = inference_pb2.GenerateRequest(model="m", prompt="p")
    for name in ("max_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed"):
        assert not request.HasField(name)
    request.temperature = 0.0
    assert request.HasField("temperature")
    assert inference_pb2.GenerateResponse().finish_reason == inference_pb2.FINISH_REASON_UNSPECIFIED
