"""agentd on Ray Serve (issue 13): the same proto through Ray's gRPC proxy, two replicas per model.

``agentd serve --ray local --replicas 2`` runs as a process: it starts a local
Ray instance, deploys a Llama and a Mamba model (two replicas each) and keeps
agentd's own listeners in front (the Unix socket, and TCP with TLS and a
token). The project's clients are pointed at the front and straight at Ray's
proxy; correctness is checked against transformers (greedy, teacher-forced)
and against the local daemon's status codes; a Mamba session continues after
every replica that held it was killed (its state came through Ray's object
store); a replica killed mid-stream is UNAVAILABLE and Ray brings it back.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

pytest.importorskip("ray.serve")

from agentd.client import Client, Credentials, SamplingOptions  # noqa: E402
from agentd.errors import AgentdError, FailedPrecondition, InvalidArgument, NotFound, Unauthenticated, Unavailable  # noqa: E402
from agentd.v1 import inference_pb2 as pb  # noqa: E402
from agentd.v1 import inference_pb2_grpc  # noqa: E402
from tests._daemon_fixtures import socket_dir  # noqa: E402
from _random_llama import RandomLlamaSpec, build_random_llama  # noqa: E402
from tests._deploy_fixtures import TOKEN, DaemonProcess, environment, make_pki, write_token  # noqa: E402
from tests._serving_fixtures import assert_greedy_under, collect, ids_request  # noqa: E402

pytestmark = pytest.mark.slow

PROMPT = [5, 17, 33, 2, 41, 9, 60]
#: test_agent_durable.py's fixed plan, answered with what the Llama says (reached through Ray).
ANSWERING_PLANNER = """
from agentd.hookspecs import hookimpl
from agentd.agent.plan import Plan, Ref, Step
from agentd.agent.planner import PlannerSpec, PlanResult
from agentd.client import SamplingOptions

class Answering:
    async def plan(self, context):
        plan = Plan((Step(1, "kt_lookup", {"name": "Maria"}), Step(2, "kt_pay", {"to": Ref(1, ("handle",)), "amount": 45})))
        return PlanResult(plan, text="fixed")

    async def answer(self, context, plan, results):
        stream = await context.client.generate("Once upon a time", model="llama", sampling=SamplingOptions(max_tokens=6, temperature=0))
        return await stream.text()

@hookimpl
def register_planners(register):
    register(PlannerSpec("ray_fixed", make=Answering))
"""
WIDE_LLAMA = RandomLlamaSpec(
    hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8,
    intermediate_size=256, max_position_embeddings=2048,
)


def _replicas(model: str) -> list[int]:
    """PIDs of the Ray Serve replica processes of ``model``'s deployment."""
    # No end anchor: a replica running a call is titled "...:model-NAME.Generate" meanwhile.
    found = subprocess.run(["pgrep", "-f", f"ray::ServeReplica:agentd:model-{model}"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from _ssm_fixtures import make_hf_mamba
    from transformers import LlamaForCausalLM

    root = tmp_path_factory.mktemp("ray")
    llama = build_random_llama(root / "llama", WIDE_LLAMA)  # wide enough that a long stream takes seconds
    mamba_reference = make_hf_mamba(root / "mamba", vocab=128)
    (root / "pki").mkdir()
    pki = make_pki(root / "pki")
    token = write_token(root)
    references = {"llama": LlamaForCausalLM.from_pretrained(llama).eval(), "mamba": mamba_reference}
    home = root / "home"
    # The agent deployment's plugins: the payment tool of test_agent_durable.py and a planner that asks the Llama.
    from tests.test_agent_durable import install_plugin

    site, ledger = install_plugin(root / "site"), root / "ledger.sqlite"
    (site / "agentd_raytest.py").write_text(ANSWERING_PLANNER)
    info = site / "agentd_raytest-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: agentd-raytest\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[agentd]\nraytest = agentd_raytest\n")
    env = {**environment(home), "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])),
           "KT_LEDGER": str(ledger), "AGENTD_PLANNER": "ray_fixed"}
    with socket_dir() as directory:
        daemon = DaemonProcess(
            ["--ray", "local", "--replicas", "2", "--no-defaults", "--model", f"llama={llama}", "--model", f"mamba={root / 'mamba'}",
             "--tcp", "127.0.0.1:0", "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--auth-token-file", str(token)],
            home, directory / "ray.sock", env=env,
        )
        try:
            daemon.wait_serving()
            proxy = re.search(r"Ray Serve gRPC proxy on (127\.0\.0\.1:\d+)", daemon.stdout()).group(1)
            yield {"front": daemon.unix_target, "proxy": proxy, "tcp": daemon.tcp_target(), "pki": pki, "daemon": daemon,
                   "references": references, "token": token, "ledger": ledger, "env": env}
        finally:
            if daemon.process.poll() is None:
                daemon.process.send_signal(signal.SIGTERM)
                try:
                    daemon.process.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    daemon.process.kill()
    assert "Traceback" not in daemon.stderr(), daemon.stderr()[-4000:]


def test_both_models_deployed_with_two_replicas(cluster) -> None:
    assert len(_replicas("llama")) == 2 and len(_replicas("mamba")) == 2
    with Client(cluster["front"], timeout=60) as client:
        listed = {m.name: m for m in client.list_models()}
    assert set(listed) == {"llama", "mamba"} and listed["llama"].default and not listed["mamba"].default


@pytest.mark.parametrize("model", ["llama", "mamba"])
@pytest.mark.parametrize("via", ["front", "proxy"])
def test_greedy_generation_through_ray_matches_transformers(cluster, model, via) -> None:
    with grpc.insecure_channel(cluster[via]) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        for attempt in range(4):  # replicas take turns: more than one serves these
            ids, last = collect(stub.Generate(ids_request(model, PROMPT, 12), timeout=120))
            assert len(ids) == 12 and last.finish_reason == pb.FINISH_REASON_LENGTH
            assert_greedy_under(cluster["references"][model], PROMPT, ids)


def test_statuses_are_the_local_daemons(cluster) -> None:
    with Client(cluster["front"], timeout=60) as client:
        with pytest.raises(NotFound, match="no model named 'nope'"):
            list(client.generate("hi", model="nope"))
        with pytest.raises(InvalidArgument, match="max_tokens"):
            list(client.generate("hi", sampling=SamplingOptions(max_tokens=100000)))
        with pytest.raises(FailedPrecondition, match="deployments fixed by the application"):
            client.load_model("other", "/tmp", wait=True)
        with pytest.raises(InvalidArgument, match="session_id"):
            list(client.generate("hi", session_id="bad id\n"))
    with grpc.insecure_channel(cluster["proxy"]) as channel:  # straight at Ray: the same code and message
        stub = inference_pb2_grpc.InferenceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Generate(ids_request("llama", [1, 2, 3], 10**6), timeout=60))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_tokens" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            stub.Embed(pb.EmbedRequest(model="mamba", texts=["x"]), timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "cannot embed" in caught.value.details()


def test_tcp_in_front_of_ray_needs_tls_and_the_token(cluster) -> None:
    pki = cluster["pki"]
    with pytest.raises(Unauthenticated):
        with Client(cluster["tcp"], credentials=Credentials(ca_file=pki.ca), timeout=30) as client:
            client.list_models()
    credentials = Credentials(ca_file=pki.ca, token=TOKEN)
    with Client(cluster["tcp"], credentials=credentials, timeout=60) as client:
        assert {m.name for m in client.list_models()} == {"llama", "mamba"}


def test_the_ray_proxy_listens_on_loopback_only(cluster) -> None:
    port = int(cluster["proxy"].rsplit(":", 1)[1])
    shown = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    addresses = [a for a in shown if "." in a and not a.startswith("127.")]
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    for address in addresses:
        with socket.socket() as probe:
            probe.settimeout(5)
            assert probe.connect_ex((address, port)) != 0, f"Ray's gRPC proxy answers on {address}:{port}"


def test_a_mamba_session_continues_after_every_replica_that_held_it_died(cluster) -> None:
    """Turn 1 on some replica; both replicas are killed (Ray starts new ones, which hold nothing);
    turn 2 still continues the session: its state came back from Ray's object store."""
    reference = cluster["references"]["mamba"]
    with grpc.insecure_channel(cluster["front"]) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        ids1, last1 = collect(stub.Generate(ids_request("mamba", PROMPT, 6, session_id="moving"), timeout=120))
        assert last1.session_outcome == pb.SESSION_OUTCOME_CREATED
        before = _replicas("mamba")
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        _wait_for_replicas("mamba", 2, exclude=before)
        turn2 = PROMPT + ids1 + [7, 8, 9]
        for attempt in range(60):  # the ingress may still be routing to the dead ones for a moment
            try:
                ids2, last2 = collect(stub.Generate(ids_request("mamba", turn2, 6, session_id="moving"), timeout=120))
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                time.sleep(1)
        assert last2.session_outcome == pb.SESSION_OUTCOME_CONTINUED
        assert last2.usage.cached_prompt_tokens == len(PROMPT) + len(ids1) - 1
        assert_greedy_under(reference, turn2, ids2)
        # And on to a third turn, wherever it lands.
        turn3 = turn2 + ids2 + [11]
        ids3, last3 = collect(stub.Generate(ids_request("mamba", turn3, 4, session_id="moving"), timeout=120))
        assert last3.session_outcome == pb.SESSION_OUTCOME_CONTINUED
        assert_greedy_under(reference, turn3, ids3)
        listed = {s.session_id: s for s in stub.ListSessions(pb.ListSessionsRequest(), timeout=30).sessions}
        assert listed["moving"].tokens == len(turn3) + len(ids3) - 1


def test_a_replica_killed_mid_stream_is_unavailable_and_replaced(cluster) -> None:
    received = 0
    with Client(cluster["front"], timeout=120) as client:
        stream = client.generate("once upon a time", model="llama", sampling=SamplingOptions(max_tokens=1500, temperature=0))
        with pytest.raises(Unavailable, match="went away"):
            for _ in stream:
                received += 1
                if received == 5:
                    before = _replicas("llama")
                    for pid in before:
                        os.kill(pid, signal.SIGKILL)
        assert 5 <= received < 1500, received
        _wait_for_replicas("llama", 2, exclude=before)
        deadline = time.monotonic() + 120
        while True:  # Ray brings replacements up; the deployment serves again
            try:
                assert sum(len(c.token_ids) for c in client.generate("hello", model="llama", sampling=SamplingOptions(max_tokens=4))) > 0
                break
            except AgentdError as exc:
                assert isinstance(exc, Unavailable) and time.monotonic() < deadline, exc
                time.sleep(1)
        assert client.health() == "SERVING"


def _wait_for_replicas(model: str, count: int, exclude: list[int], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while len([pid for pid in _replicas(model) if pid not in exclude]) < count:
        assert time.monotonic() < deadline, f"Ray did not replace {model}'s replicas"
        time.sleep(0.5)


def test_the_cli_and_the_node_client_work_unchanged(cluster) -> None:
    """`agentd generate` on the front's socket, Node.js (@grpc/grpc-js) over the front's TLS + token:
    the same tokens as the Python SDK gets straight from Ray's proxy."""
    from tests._deploy_fixtures import AGENTD
    from tests.test_node_client import NODE_DIR, node_available

    sampling = SamplingOptions(max_tokens=12, temperature=0)
    with Client(cluster["proxy"], timeout=120) as client:
        stream = client.generate("Once upon a time", model="llama", sampling=sampling)
        expected = [i for chunk in stream for i in chunk.token_ids]
        text = "".join(chunk.text for chunk in client.generate("Once upon a time", model="llama", sampling=sampling))
    cli = subprocess.run(
        [*AGENTD, "generate", "Once upon a time", "--model", "llama", "--max-tokens", "12", "--temperature", "0"],
        capture_output=True, text=True, timeout=120, env={**cluster["env"], "AGENTD_SOCKET": cluster["daemon"].socket_path.as_posix()},
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.strip() == text.strip()
    node = node_available()
    result = subprocess.run(
        [node, str(NODE_DIR / "client.js"), "--target", cluster["tcp"].replace("127.0.0.1:", "localhost:"), "--ca", str(cluster["pki"].ca),
         "--token-file", str(cluster["token"]), "--model", "llama", "--prompt", "Once upon a time", "--max-tokens", "12", "--temperature", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    *deltas, end = [json.loads(line) for line in result.stdout.splitlines()]
    assert [i for d in deltas for i in d["token_ids"]] == expected and end["finish_reason"] == "length"


def test_an_agent_run_calls_the_models_through_ray(cluster) -> None:
    """The agent is its own deployment (one replica, its journal a SQLite file on its node) and its
    planner reaches the models through the proxy, like any client: its answer is what the Llama says
    to the same request from here. The payment happens once."""
    from tests.test_agent_durable import paid

    with Client(cluster["front"], timeout=120) as client:
        events = list(client.run_task("send Maria 45 bucks", auto_approve=True))
        said = "".join(c.text for c in client.generate("Once upon a time", model="llama", sampling=SamplingOptions(max_tokens=6, temperature=0)))
    assert events[-1].run_finished.status == "done", events[-1]
    assert events[-1].run_finished.answer == said and said
    with Client(cluster["proxy"], timeout=60) as client:  # the Agent service straight from Ray's proxy too
        assert events[-1].run_id in {run.run_id for run in client.list_runs()}
    assert [(recipient, amount) for _, recipient, amount in paid(cluster["ledger"])] == [("maria@bank", 45.0)]


BUILDER_SCRIPT = """
import sys, json
import ray
from ray import serve
from ray.serve.config import gRPCOptions
from agentd.rayserve.app import SERVICER_FUNCTIONS, build
from agentd.client import Client, SamplingOptions
model, port = sys.argv[1], int(sys.argv[2])
ray.init(address="local", include_dashboard=False, log_to_driver=False, num_cpus=2,
         runtime_env={"worker_process_setup_hook": "agentd.rayserve.loopback.bind_proxies_to_loopback"})
serve.start(http_options={"host": "127.0.0.1", "port": port + 1}, grpc_options=gRPCOptions(port=port, grpc_servicer_functions=SERVICER_FUNCTIONS))
serve.run(build({"models": {"llama": model}, "replicas": 1, "max_replicas": 2, "replica_cpus": 0, "max_batch": 4, "threads": 1}), name="agentd", route_prefix="/")
scaling = serve.status().applications["agentd"].deployments["model-llama"]
with Client(f"127.0.0.1:{port}", timeout=120) as client:
    names = [m.name for m in client.list_models()]
    ids = [i for c in client.generate("hello", sampling=SamplingOptions(max_tokens=5, temperature=0)) for i in c.token_ids]
print(json.dumps({"models": names, "tokens": len(ids), "status": str(scaling.status).rsplit(".", 1)[-1]}))
ray.shutdown()
"""


def test_the_rayservice_builder_deploys_the_application(tmp_path) -> None:
    """What a Serve config / KubeRay RayService deploys (docs/ray.md): agentd.rayserve.app:build with args."""
    from tests._daemon_fixtures import tiny_llama

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-c", BUILDER_SCRIPT, str(tiny_llama(tmp_path)), str(port)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "AGENTD_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"models": ["llama"], "tokens": 5, "status": "HEALTHY"}


def test_a_session_saves_deletes_and_restores_behind_ray(cluster) -> None:
    reference = cluster["references"]["mamba"]
    with grpc.insecure_channel(cluster["front"]) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        ids1, _ = collect(stub.Generate(ids_request("mamba", PROMPT, 5, session_id="kept"), timeout=120))
        saved = stub.SaveSession(pb.SaveSessionRequest(session_id="kept"), timeout=60)
        assert saved.tokens == len(PROMPT) + len(ids1) - 1 and Path(saved.path).is_file()
        assert stub.DeleteSession(pb.DeleteSessionRequest(session_id="kept"), timeout=60).deleted
        assert "kept" not in {s.session_id for s in stub.ListSessions(pb.ListSessionsRequest(), timeout=60).sessions}
        restored = stub.RestoreSession(pb.RestoreSessionRequest(session_id="kept"), timeout=60)
        assert restored.tokens == saved.tokens and restored.model == "mamba"
        turn2 = PROMPT + ids1 + [3, 4]
        ids2, last2 = collect(stub.Generate(ids_request("mamba", turn2, 5, session_id="kept"), timeout=120))
        assert last2.session_outcome == pb.SESSION_OUTCOME_CONTINUED
        assert_greedy_under(reference, turn2, ids2)
        with pytest.raises(grpc.RpcError) as caught:
            stub.SaveSession(pb.SaveSessionRequest(session_id="never-made"), timeout=60)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
