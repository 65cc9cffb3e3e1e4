"""Sessions: multi-turn prefill of only the new turn, save/restore, TTL and memory budget.

The same tests run on a transformer (KV cache), Mamba (conv + SSM state) and
RWKV-4 (wkv state): tiny random Hugging Face checkpoints served by the
in-process harness. Transformers is the reference for every greedy token.
"""

from __future__ import annotations

import stat

import grpc
import numpy as np
import pytest

from _serving_fixtures import ServingHarness, assert_greedy_under, collect, ids_request
from agentd.engine import RetainedState
from agentd.errors import InvalidArgument, ResourceExhausted
from agentd.server.served import ModelSource, ModelTable, ServingSettings
from agentd.server.sessions import SessionSettings, SessionStore
from agentd.v1 import inference_pb2 as pb
from tests._daemon_fixtures import socket_dir

MODELS = ["llama", "mamba", "rwkv4"]
VOCAB = 128
#: Prompt ids stay below every test model's vocabulary (RWKV's fixture has 101).
PROMPT_VOCAB = 100


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, tuple[object, object]]:
    """Each model's checkpoint directory and its transformers reference."""
    from _llama_fixtures import make_hf_model
    from _rwkv_fixtures import make_hf_rwkv4
    from _ssm_fixtures import make_hf_mamba

    root = tmp_path_factory.mktemp("models")
    llama = make_hf_model("llama", seed=0, vocab_size=VOCAB)
    llama.save_pretrained(root / "llama", safe_serialization=True)
    return {
        "llama": (root / "llama", llama),
        "mamba": (root / "mamba", make_hf_mamba(root / "mamba")),
        "rwkv4": (root / "rwkv4", make_hf_rwkv4(root / "rwkv4")),
    }


@pytest.fixture(scope="module")
def server(references, tmp_path_factory):
    sessions = SessionSettings(directory=tmp_path_factory.mktemp("home") / "sessions")
    table = ModelTable.load(
        [ModelSource(name, path) for name, (path, _) in references.items()], ServingSettings(sessions=sessions)
    )
    with socket_dir() as directory, ServingHarness(table, directory / "s.sock") as harness:
        yield harness


def _prompt(seed: int, length: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, PROMPT_VOCAB, size=length).tolist()


def _generate(server, model: str, ids: list[int], max_tokens: int = 6, **fields) -> tuple[list[int], pb.GenerateResponse]:
    return collect(server.inference.Generate(ids_request(model, ids, max_tokens, **fields), timeout=60))


@pytest.mark.parametrize("model", MODELS)
def test_second_turn_prefills_only_the_new_tokens(server, references, model) -> None:
    session = f"chat-{model}"
    turn1 = _prompt(1, 11)
    ids1, last1 = _generate(server, model, turn1, session_id=session)
    assert last1.session_outcome == pb.SESSION_OUTCOME_CREATED and last1.usage.cached_prompt_tokens == 0

    # The next turn repeats the conversation so far (with the reply) and adds a user turn.
    turn2 = turn1 + ids1 + _prompt(2, 5)
    ids2, last2 = _generate(server, model, turn2, session_id=session)
    assert last2.session_outcome == pb.SESSION_OUTCOME_CONTINUED
    # The state held everything but the reply's last token, which the new turn feeds first.
    assert last2.usage.cached_prompt_tokens == len(turn1) + len(ids1) - 1
    assert last2.usage.prompt_tokens == len(turn2)

    fresh, last = _generate(server, model, turn2)
    assert ids2 == fresh and last.session_outcome == pb.SESSION_OUTCOME_UNSPECIFIED
    assert_greedy_under(references[model][1], turn2, ids2)

    listed = {s.session_id: s for s in server.inference.ListSessions(pb.ListSessionsRequest(model=model)).sessions}
    assert listed[session].tokens == len(turn2) + len(ids2) - 1 and listed[session].state_bytes > 0
    assert not listed[session].busy


@pytest.mark.parametrize("model", MODELS)
def test_a_prompt_that_does_not_extend_the_session_restarts_it(server, model) -> None:
    session = f"restart-{model}"
    _generate(server, model, _prompt(3, 9), session_id=session)
    other = _prompt(4, 13)
    ids, last = _generate(server, model, other, session_id=session)
    assert last.session_outcome == pb.SESSION_OUTCOME_RESTARTED and last.usage.cached_prompt_tokens == 0
    assert ids == _generate(server, model, other)[0]


@pytest.mark.parametrize("model", MODELS)
def test_restored_session_continues_exactly_as_if_never_saved(server, model) -> None:
    session = f"saved-{model}"
    turn1 = _prompt(5, 10)
    ids1, _ = _generate(server, model, turn1, session_id=session)
    saved = server.inference.SaveSession(pb.SaveSessionRequest(session_id=session))
    assert saved.tokens == len(turn1) + len(ids1) - 1 and saved.file_bytes > 0
    path = server.table.sessions.file_path(session)
    assert saved.path == str(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left

    turn2 = turn1 + ids1 + _prompt(6, 4)
    request = ids_request(model, turn2, 8, session_id=session)
    kept = list(server.inference.Generate(request, timeout=60))  # the in-memory session
    # Forget it entirely, then bring it back from disk: the same turn again.
    assert server.inference.DeleteSession(pb.DeleteSessionRequest(session_id=session)).deleted
    restored = server.inference.RestoreSession(pb.RestoreSessionRequest(session_id=session))
    assert (restored.model, restored.tokens) == (model, saved.tokens)
    again = list(server.inference.Generate(request, timeout=60))
    assert again[-1].session_outcome == pb.SESSION_OUTCOME_CONTINUED
    assert [m.token_ids for m in again] == [m.token_ids for m in kept]
    assert [list(m.logprobs) for m in again] == [list(m.logprobs) for m in kept]  # bit for bit
    deleted = server.inference.DeleteSession(pb.DeleteSessionRequest(session_id=session, delete_saved=True))
    assert deleted.deleted and deleted.deleted_saved and not path.exists()


def test_session_errors_map_to_status_codes(server) -> None:
    _generate(server, "llama", [1, 2, 3], session_id="owned")
    cases = [
        (lambda: _generate(server, "mamba", [1, 2, 3], session_id="owned"), grpc.StatusCode.INVALID_ARGUMENT, "session_id:"),
        (lambda: _generate(server, "llama", [1, 2], session_id="../etc"), grpc.StatusCode.INVALID_ARGUMENT, "session_id:"),
        (lambda: server.inference.SaveSession(pb.SaveSessionRequest(session_id="nope")), grpc.StatusCode.NOT_FOUND, "session 'nope'"),
        (lambda: server.inference.RestoreSession(pb.RestoreSessionRequest(session_id="nope")), grpc.StatusCode.NOT_FOUND, "no saved session"),
    ]
    for call, code, prefix in cases:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert (caught.value.code(), caught.value.details()[: len(prefix)]) == (code, prefix)
    # A corrupt file is refused, naming it.
    path = server.table.sessions.file_path("broken")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"AGSESS\x00\x01garbage")
    with pytest.raises(grpc.RpcError) as caught:
        server.inference.RestoreSession(pb.RestoreSessionRequest(session_id="broken"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and str(path) in caught.value.details()


def test_session_files_that_are_not_sessions_get_clear_errors(server, monkeypatch) -> None:
    """Issue 12, breaks 4 and 5: no hang on a FIFO, no INTERNAL for a directory, a bad header or a full disk."""
    import errno
    import hashlib
    import json
    import os

    import agentd.server.sessions as sessions_module

    def restore_status(session_id: str) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as caught:
            server.inference.RestoreSession(pb.RestoreSessionRequest(session_id=session_id), timeout=10)
        return caught.value.code(), caught.value.details()

    store = server.table.sessions
    fifo = store.file_path("piped")
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    assert restore_status("piped") == (grpc.StatusCode.FAILED_PRECONDITION, f"{fifo} is not a regular file")
    store.file_path("a-dir").mkdir()
    assert restore_status("a-dir")[0] == grpc.StatusCode.FAILED_PRECONDITION

    # The state's checksum is right, the header's fields are not.
    state = b"\x00" * 16
    header = {"format": 1, "model": "llama", "architecture": "LlamaForCausalLM", "tokens": "abc", "pending": None,
              "state_sha256": hashlib.sha256(state).hexdigest()}
    encoded = json.dumps(header).encode()
    path = store.file_path("odd-header")
    path.write_bytes(sessions_module._MAGIC + sessions_module._HEADER_LENGTH.pack(len(encoded)) + encoded + state)
    code, details = restore_status("odd-header")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed header" in details

    # Saving where a directory sits, and onto a full disk.
    _generate(server, "llama", [1, 2, 3], session_id="a-dir")
    with pytest.raises(grpc.RpcError) as caught:
        server.inference.SaveSession(pb.SaveSessionRequest(session_id="a-dir"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sessions_module, "_write_session", full_disk)
    with pytest.raises(grpc.RpcError) as caught:
        server.inference.SaveSession(pb.SaveSessionRequest(session_id="a-dir"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "No space left" in caught.value.details()


# -- the store's limits, without a model --------------------------------------------------------
class _SizedBackend:
    """Just enough of a backend for the store: every state weighs 64 bytes."""

    def state_bytes(self, state: object) -> int:
        return 64


def _use(store: SessionStore, session_id: str, tokens: tuple[int, ...] = (1, 2, 3)) -> None:
    session, plan = store.begin(session_id, "m", list(tokens) + [9])
    store.finish(session, RetainedState(object(), tokens, 9), _SizedBackend())


def test_sessions_expire_after_their_ttl_and_one_request_at_a_time() -> None:
    store = SessionStore(SessionSettings(ttl=60.0))
    _use(store, "a")
    _use(store, "b")
    store.get("a").last_used -= 61.0  # idle past the TTL
    assert [s.session_id for s in store.list()] == ["b"] and store.expired == 1

    session, plan = store.begin("b", "m", [1, 2, 3, 4])
    assert plan.outcome == "continued" and plan.cached_tokens == 3
    with pytest.raises(ResourceExhausted, match="in use"):
        store.begin("b", "m", [1, 2, 3, 4])
    session.last_used -= 61.0
    assert [s.session_id for s in store.list()] == ["b"]  # busy sessions never expire
    store.abort(session, plan)
    assert store.begin("b", "m", [1, 2, 3, 4, 5])[1].outcome == "continued"  # the state came back
    with pytest.raises(InvalidArgument, match="session_id"):
        store.begin("", "m", [1])


def test_session_memory_budget_evicts_least_recently_used_first() -> None:
    store = SessionStore(SessionSettings(budget_bytes=3 * 64))
    for name in ("a", "b", "c"):
        _use(store, name)
    assert store.total_bytes() == 3 * 64
    _use(store, "a", (1, 2, 3, 9, 4))  # "a" is now the most recent; "b" the least
    _use(store, "d")
    assert sorted(s.session_id for s in store.list()) == ["a", "c", "d"] and store.evicted == 1
    assert store.total_bytes() <= 3 * 64
    store.drop_model("m")
    assert len(store) == 0
