"""The plugin host: out-of-tree plugins through entry points, disabling, fail-fast checks.

An installed third-party package is the real path: a tiny package is built
and ``pip install --target``-ed into a temporary directory (never the shared
venv), then ``agentd`` runs as a subprocess with it on ``PYTHONPATH``. The
in-process tests register fake plugins with ``pm.register``/``pm.unregister``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from safetensors.numpy import save_file

import agentd
from agentd import registry
from agentd.errors import AgentdError
from agentd.plugin_manager import check_plugins, load_plugins, pm

from _bundle_fixtures import run_agentd

#: A complete third-party plugin: a bigram "language model" in plain NumPy.
TOY_PLUGIN = textwrap.dedent(
    '''
    """agentd toy plugin: logits(next | token) = table[token], in NumPy only."""

    from __future__ import annotations

    from typing import Callable, Sequence

    import numpy as np

    from agentd.backend import Backend, BackendSpec, ModelInfo
    from agentd.formats import open_checkpoint
    from agentd.hookspecs import hookimpl


    class BigramBackend(Backend):
        """The smallest model that honours the whole decoder contract."""

        def __init__(self, table: np.ndarray, architecture: str):
            self.table = table.astype(np.float32)
            self.info = ModelInfo(
                architecture=architecture, kind="decoder", parameters=int(table.size), context_length=64,
                vocab_size=table.shape[0], dtype="float32", state_bytes_per_token=8,
                weight_bytes=int(self.table.nbytes),
            )

        def new_state(self) -> list[int]:
            return []

        def prefill(self, token_ids: np.ndarray, state: list[int], *, all_logits: bool = False) -> np.ndarray:
            state.extend(int(token) for token in token_ids)
            rows = self.table[token_ids]
            return rows if all_logits else rows[-1:]

        def _row(self, token: int) -> np.ndarray:
            return self.table[token]

        def decode(self, token_ids: np.ndarray, states: Sequence[list[int]]) -> np.ndarray:
            rows = np.stack([self._row(int(token)) for token in token_ids])  # may raise midway...
            for token, state in zip(token_ids, states):  # ...so the states change only after it all ran
                state.append(int(token))
            return rows

        def state_bytes(self, state: list[int]) -> int:
            return 8 * len(state)

        def save_state(self, state: list[int]) -> bytes:
            return np.asarray(state, dtype=np.int64).tobytes()

        def load_state(self, data: bytes) -> list[int]:
            return np.frombuffer(data, dtype=np.int64).tolist()


    def load(checkpoint: Checkpoint, quant: str) -> Backend:
        return BigramBackend(checkpoint.load_tensors("np")["table"], checkpoint.architecture)


    @hookimpl
    def register_backends(register: Callable[[BackendSpec], None]) -> None:
        register(BackendSpec(name="toy", architectures=("ToyForCausalLM",), load=load,
                             description="bigram table in NumPy (test plugin)"))


    def conformance_fixture():
        """What agentd's conformance suite runs for this backend (entry-point group agentd.conformance)."""
        import json

        from safetensors.numpy import save_file

        import agentd
        from agentd.conformance import Fixture, Tolerance, fail_on_call

        def build(directory):
            table = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
            (directory / "config.json").write_text(json.dumps({"architectures": ["ToyForCausalLM"], "vocab_size": 16}))
            save_file({"table": table}, str(directory / "model.safetensors"))
            return agentd.load_model(directory).backend

        def inject(backend):
            # The last row of the batch fails after the earlier rows were computed.
            return lambda batch: fail_on_call(backend, "_row", after=batch - 1)

        return Fixture("toy", "decoder", build, inject, Tolerance(atol=0, rtol=0, batch_atol=0, batch_rtol=0))
    '''
)

MISSPELT_PLUGIN = textwrap.dedent(
    '''
    from agentd.hookspecs import hookimpl


    @hookimpl
    def register_backend(register):  # the spec is register_backends
        raise AssertionError("never called")
    '''
)

BROKEN_PLUGIN = "import agentd_dependency_that_is_not_installed\n"

VOCAB = 16


def _package(
    root: Path, name: str, modules: dict[str, str], entry_points: dict[str, str], conformance: dict[str, str] | None = None
) -> Path:
    """Write a minimal setuptools project for ``modules`` exposing ``entry_points`` (group ``agentd``)
    and ``conformance`` fixtures (group ``agentd.conformance``)."""
    root.mkdir(parents=True)
    points = "\n".join(f'{ep} = "{module}"' for ep, module in entry_points.items())
    if conformance:
        points += "\n\n[project.entry-points.\"agentd.conformance\"]\n"
        points += "\n".join(f'{ep} = "{target}"' for ep, target in conformance.items())
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{name}"
            version = "0.0.1"

            [project.entry-points.agentd]
            {{points}}

            [tool.setuptools]
            py-modules = {json.dumps(sorted(modules))}
            """
        ).replace("{points}", points)
    )
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source)
    return root


def _pip_install(package: Path, site: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
         "--no-deps", "--no-build-isolation", "--target", str(site), str(package)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return site


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory holding the installed toy plugin package."""
    root = tmp_path_factory.mktemp("toy")
    package = _package(
        root / "pkg", "agentd-toy-plugin", {"agentd_toy_plugin": TOY_PLUGIN}, {"toy": "agentd_toy_plugin"},
        conformance={"toy": "agentd_toy_plugin:conformance_fixture"},
    )
    return _pip_install(package, root / "site")


@pytest.fixture(scope="module")
def unchecked_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory holding a plugin whose backend offers no conformance fixture."""
    root = tmp_path_factory.mktemp("unchecked")
    source = TOY_PLUGIN.replace('name="toy"', 'name="unchecked"').replace("ToyForCausalLM", "UncheckedForCausalLM")
    package = _package(root / "pkg", "agentd-unchecked-plugin", {"agentd_unchecked_plugin": source}, {"unchecked": "agentd_unchecked_plugin"})
    return _pip_install(package, root / "site")


@pytest.fixture(scope="module")
def bad_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory with two faulty plugins: a misspelt hook and an import error."""
    root = tmp_path_factory.mktemp("bad")
    package = _package(
        root / "pkg",
        "agentd-bad-plugins",
        {"agentd_misspelt_plugin": MISSPELT_PLUGIN, "agentd_broken_plugin": BROKEN_PLUGIN},
        {"misspelt": "agentd_misspelt_plugin", "broken": "agentd_broken_plugin"},
    )
    return _pip_install(package, root / "site")


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A model directory for ``ToyForCausalLM`` and its bigram table."""
    path = tmp_path_factory.mktemp("toy-model")
    table = np.random.default_rng(0).standard_normal((VOCAB, VOCAB)).astype(np.float32)
    (path / "config.json").write_text(json.dumps({"architectures": ["ToyForCausalLM"], "vocab_size": VOCAB}))
    save_file({"table": table}, str(path / "model.safetensors"))
    return path, table


def _backends(site: Path, disable: str | None = None) -> dict[str, str]:
    """``agentd models backends`` as ``{name: architectures}``."""
    env = {"PYTHONPATH": str(site), "AGENTD_DISABLE_PLUGINS": disable or ""}
    result = run_agentd("models", "backends", env=env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    # Columns: name, availability, architectures, description.
    return {fields[0]: fields[2] for fields in (line.split("\t") for line in result.stdout.splitlines())}


def test_installed_plugin_is_listed_next_to_builtins(toy_site: Path) -> None:
    backends = _backends(toy_site)
    assert backends["toy"] == "ToyForCausalLM"
    assert "LlamaForCausalLM" in backends["transformer"]


@pytest.mark.parametrize(
    ("disable", "gone", "kept"),
    [("toy", {"toy"}, {"transformer"}), ("transformer", {"transformer", "bert"}, {"toy"}), (" toy , transformer ", {"toy", "transformer"}, set())],
)
def test_disable_env_keeps_plugins_out(toy_site: Path, disable: str, gone: set[str], kept: set[str]) -> None:
    backends = _backends(toy_site, disable)
    assert not gone & backends.keys()
    assert kept <= backends.keys()


def test_installed_plugin_serves_a_model_without_torch(toy_site: Path, toy_model: tuple[Path, np.ndarray]) -> None:
    path, table = toy_model
    code = (
        "import json, sys\n"
        "sys.modules['torch'] = None  # any torch import now fails\n"
        "import agentd\n"
        f"model = agentd.load_model({str(path)!r})\n"
        "print(json.dumps(model.logits([3, 1, 4]).tolist()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(toy_site), "AGENTD_DISABLE_PLUGINS": ""},
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.array(json.loads(result.stdout), dtype=np.float32), table[[3, 1, 4]])


REPO = Path(__file__).resolve().parents[1]


def _conformance_suite(site: Path, select: str) -> subprocess.CompletedProcess:
    """``tests/test_backend_conformance.py`` run with ``site``'s plugins installed (cases matching ``select``)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests/test_backend_conformance.py", "-k", select],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(site), "AGENTD_DISABLE_PLUGINS": ""},
    )


def test_installed_plugin_runs_the_conformance_suite(toy_site: Path) -> None:
    result = _conformance_suite(toy_site, "toy or every_registered")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for check in ("info", "prefill_decode", "batched_decode", "save_load", "failed_decode"):
        assert re.search(rf"test_conformance\[toy-toy-{check}\] PASSED", result.stdout), result.stdout[-3000:]
    assert "test_every_registered_backend_has_a_conformance_fixture PASSED" in result.stdout


def test_installed_backend_without_a_fixture_fails_the_conformance_suite(unchecked_site: Path) -> None:
    result = _conformance_suite(unchecked_site, "unchecked or every_registered")
    assert result.returncode != 0
    assert "registered backends without a conformance fixture: ['unchecked']" in result.stdout, result.stdout[-3000:]
    assert "test_conformance[unchecked-no-fixture] FAILED" in result.stdout, result.stdout[-3000:]


@pytest.mark.parametrize(
    ("enabled", "problem"),
    [
        ("misspelt", r"^agentd: error: plugin 'misspelt': unknown hook register_backend \(agentd defines: .*register_backends"),
        ("broken", r"^agentd: error: plugin 'broken' \(agentd_broken_plugin\) failed to import: ModuleNotFoundError"),
    ],
    ids=["misspelt", "broken"],
)
def test_faulty_plugin_fails_fast_with_one_line(bad_site: Path, enabled: str, problem: str) -> None:
    other = {"misspelt", "broken"} - {enabled}
    result = run_agentd("models", "backends", env={"PYTHONPATH": str(bad_site), "AGENTD_DISABLE_PLUGINS": other.pop()})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert re.search(problem, result.stderr), result.stderr
    assert f"AGENTD_DISABLE_PLUGINS={enabled}" in result.stderr


# -- in-process: fake plugins registered on the live plugin manager --------------------------


def _module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


@pytest.fixture
def register_plugin() -> Iterator:
    """Register plugin objects on the real manager; unregister and rebuild the registry after."""
    load_plugins()  # entry points first, so fakes join an already-loaded manager
    registered: list[object] = []

    def register(plugin: object, name: str) -> None:
        pm.register(plugin, name=name)
        registered.append(plugin)
        registry.reset()

    yield register
    for plugin in registered:
        pm.unregister(plugin)
    registry.reset()


def test_registered_plugin_serves_load_model(register_plugin, toy_model: tuple[Path, np.ndarray]) -> None:
    register_plugin(_module("toy_inprocess", TOY_PLUGIN), "toy")
    path, table = toy_model
    assert "toy" in [spec.name for spec in registry.backend_specs()]

    model = agentd.load_model(path)
    assert model.info.architecture == "ToyForCausalLM" and model.tokenizer is None
    np.testing.assert_array_equal(model.logits([5, 0, 9, 9]), table[[5, 0, 9, 9]])

    # Greedy decoding of a bigram model follows argmax rows: computed here independently.
    expected, token = [], 2
    for _ in range(6):
        token = int(np.argmax(table[token]))
        expected.append(token)
    assert model.generate([7, 2], max_new_tokens=6) == expected


def test_unregistered_plugin_is_gone(register_plugin, toy_model: tuple[Path, np.ndarray]) -> None:
    path, _ = toy_model
    with pytest.raises(AgentdError, match="unknown architecture 'ToyForCausalLM'"):
        agentd.load_model(path)


def test_two_backends_for_one_architecture_is_an_error(register_plugin) -> None:
    register_plugin(_module("clash", TOY_PLUGIN.replace('("ToyForCausalLM",)', '("LlamaForCausalLM",)')), "clash")
    # pluggy calls the newest plugin first, so either may be the one refused.
    with pytest.raises(AgentdError, match=r"backend '(toy|transformer)' registers 'LlamaForCausalLM', already served by '(transformer|toy)'"):
        registry.backend_specs()


def test_misspelt_hook_fails_check(register_plugin) -> None:
    register_plugin(_module("misspelt_inprocess", MISSPELT_PLUGIN), "misspelt")
    with pytest.raises(AgentdError, match=r"plugin 'misspelt': unknown hook register_backend \("):
        check_plugins()


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        ('name="toy"', r"two backends are named 'transformer'; backend names must be unique"),
        ('architectures=("ToyForCausalLM",)', r"backend 'toy': 'architectures' must be a non-empty tuple of names"),
    ],
    ids=["duplicate-name", "architectures-as-string"],
)
def test_malformed_registrations_are_refused(register_plugin, edit: str, problem: str) -> None:
    replacement = {'name="toy"': 'name="transformer"', 'architectures=("ToyForCausalLM",)': 'architectures="ToyForCausalLM"'}
    register_plugin(_module("malformed", TOY_PLUGIN.replace(edit, replacement[edit])), "malformed")
    with pytest.raises(AgentdError, match=problem):
        registry.backend_specs()


def test_conformance_flags_a_third_party_decode_that_commits_row_by_row(register_plugin, toy_model) -> None:
    from agentd import conformance

    source = TOY_PLUGIN.replace(
        """        rows = np.stack([self._row(int(token)) for token in token_ids])  # may raise midway...
        for token, state in zip(token_ids, states):  # ...so the states change only after it all ran
            state.append(int(token))
        return rows""",
        """        rows = []
        for token, state in zip(token_ids, states):
            rows.append(self._row(int(token)))
            state.append(int(token))  # committed before the next row runs
        return np.stack(rows)""",
    )
    assert source != TOY_PLUGIN
    register_plugin(_module("toy_row_by_row", source), "toy")
    path, _ = toy_model
    backend = agentd.load_model(path).backend

    def inject(batch: int):
        return conformance.fail_on_call(backend, "_row", after=batch - 1)

    conformance.check_prefill_decode_matches_forward(backend, conformance.workload(VOCAB), tolerance=conformance.Tolerance())
    with pytest.raises(conformance.ConformanceError, match="state of row 0 changed although decode raised"):
        conformance.check_backend(backend, inject_failure=inject)
