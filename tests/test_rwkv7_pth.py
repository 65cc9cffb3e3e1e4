"""RWKV-7 ``.pth`` files as a model format, with the RWKV World tokenizer.

References are the ``rwkv`` package itself: its ``TRIE_TOKENIZER`` for
tokenisation and its ``RWKV_x070`` (CPU fp32) for logits and greedy tokens.
The models are random tiny ``.pth`` files in that package's layout
(:func:`_rwkv_fixtures.make_rwkv7_pth`); the daemon and chat tests use one
with the World vocabulary's 65536 rows so real text can be tokenised for it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("rwkv")
# The reference package is TorchScript, which torch deprecates; not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

import agentd  # noqa: E402
from _daemon_fixtures import serve_process  # noqa: E402
from _rwkv_fixtures import VOCAB, make_rwkv7_pth, rwkv7_reference  # noqa: E402
from agentd.client import Client, SamplingOptions  # noqa: E402
from agentd.detokenizer import IncrementalDetokenizer  # noqa: E402
from agentd.errors import BackendUnavailable, ModelLoadError  # noqa: E402
from agentd.formats import open_checkpoint  # noqa: E402

AGENTD = [sys.executable, "-c", "from agentd.cli import main; main()"]
LOGIT_ATOL = 1e-3  # as tests/test_rwkv7.py
HIDDEN, LAYERS, HEAD_SIZE = 64, 2, 32
WORLD_VOCAB = 65536
NEW_TOKENS = 16
STARTUP_TIMEOUT = 240

#: Texts the tokenizers must agree on: scripts, emoji (ZWJ sequences, flags,
#: skin tones), numbers, whitespace runs, control characters, long repeats.
TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. 1234567890 3.14159 -42 1e-9 0x1F",
    "你好，世界！今天天气怎么样？我想去北京旅游。",
    "日本語のテキスト、カタカナとひらがな。한국어 텍스트도 있습니다.",
    "Ünïcödé façade — “smart quotes” … naïve café São Paulo Ærøskøbing",
    "Emoji: 🤖🧠 👩‍👩‍👧‍👦 🇺🇳 👍🏽 ❤️‍🔥 and 🏳️‍🌈",
    "Русский текст, ελληνικά, עברית, العربية, हिन्दी, ไทย",
    "   leading spaces\t\ttabs\n\n\nnewlines\r\n  \n trailing   ",
    " " * 300 + "x" + "\n" * 40,
    "def f(x):\n    return x ** 2  # comment\n\n\nprint(f(3))\n",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "\x00\x01\x7f control \u200b zero-width \ufeff BOM \U0010ffff max",
    "User: What is 2+2?\n\nAssistant: 4\n\n",
    "#" * 200 + "-" * 170,
    "",
]


# -- the tokenizer ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_tokenizer():
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    from agentd.plugins.linear.world_tokenizer import find_vocab

    return TRIE_TOKENIZER(str(find_vocab()))


@pytest.fixture(scope="module")
def world_pth(tmp_path_factory) -> Path:
    """A random RWKV-7 with the World vocabulary's 65536 rows (17 MB)."""
    return make_rwkv7_pth(tmp_path_factory.mktemp("world") / "world.pth", hidden=32, layers=2, head_size=16, vocab=WORLD_VOCAB)


@pytest.fixture(scope="module")
def world_model(world_pth):
    return agentd.load_model(world_pth)


def _random_texts(count: int, seed: int = 0) -> list[str]:
    """Strings mixing ASCII, Latin-1, CJK, emoji and whitespace code points (no surrogates)."""
    rng = np.random.default_rng(seed)
    ranges = [(0x20, 0x7F), (0xA0, 0x250), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF), (0x0400, 0x04FF)]
    texts = []
    for _ in range(count):
        chars = []
        for _ in range(int(rng.integers(1, 120))):
            roll = rng.random()
            if roll < 0.15:
                chars.append(" " * int(rng.integers(1, 6)))
            elif roll < 0.2:
                chars.append("\n" * int(rng.integers(1, 4)))
            else:
                low, high = ranges[int(rng.integers(len(ranges)))]
                chars.append(chr(int(rng.integers(low, high))))
        texts.append("".join(chars))
    return texts


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_encoding_equals_rwkv_trie_tokenizer(world_model, reference_tokenizer, text) -> None:
    ids = world_model.tokenizer.encode(text)
    assert ids == reference_tokenizer.encode(text)
    assert world_model.tokenizer.decode(ids) == text == reference_tokenizer.decode(ids)


def test_random_texts_tokenise_as_the_reference(world_model, reference_tokenizer) -> None:
    texts = _random_texts(300)
    ours = [world_model.tokenizer.encode(text) for text in texts]
    theirs = [reference_tokenizer.encode(text) for text in texts]
    agreeing = sum(a == b for a, b in zip(ours, theirs))
    assert agreeing == len(texts), f"{agreeing}/{len(texts)} texts tokenise identically"
    assert [world_model.tokenizer.decode(ids) for ids in ours] == texts


def test_end_of_text_and_special_tokens(world_model, reference_tokenizer) -> None:
    tokenizer = world_model.tokenizer
    assert tokenizer.eos_token_ids == frozenset({0})
    assert tokenizer.vocab_size == len(reference_tokenizer.idx2token) + 1  # ids 1..65529 plus end-of-text
    ids = tokenizer.encode("Hi") + [0]
    assert tokenizer.decode(ids) == "Hi"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "Hi" + tokenizer.eos_token
    # Token strings: the entry's text, or its bytes spelled <0xNN> when they are not UTF-8.
    assert tokenizer.id_to_token(261) == "\n\n" == reference_tokenizer.idx2token[261].decode()
    assert tokenizer.id_to_token(256) == "<0xFF>" and reference_tokenizer.idx2token[256] == b"\xff"
    assert tokenizer.token_to_id(" the") == reference_tokenizer.token2idx[b" the"]


def test_streamed_text_equals_full_decode_across_split_characters(world_model, reference_tokenizer) -> None:
    """Emoji and CJK split over byte tokens come out whole, only once all their bytes arrived."""
    ids = reference_tokenizer.encode("😀 中文 👩‍👩‍👧 𝄞 end")
    assert any(len(reference_tokenizer.idx2token[i]) < 4 and reference_tokenizer.idx2token[i][0] >= 0xF0 for i in ids), (
        "no four-byte character is split over tokens: the test would prove nothing"
    )
    detok = IncrementalDetokenizer(world_model.tokenizer)
    deltas = [detok.push(i) for i in ids] + [detok.flush()]
    assert "\ufffd" not in "".join(deltas)
    assert "".join(deltas) == reference_tokenizer.decode(ids)


def test_chat_template_is_the_rwkv_world_format(world_model, reference_tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "  Hi\n\n\nthere\r\n\r\n    indented  "},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Why?"},
    ]
    expected = "System: Be brief.\n\nUser: Hi\nthere\n    indented\n\nAssistant: Hello!\n\nUser: Why?\n\nAssistant:"
    assert world_model.tokenizer.render_chat(messages) == expected
    assert world_model.tokenizer.apply_chat_template(messages) == reference_tokenizer.encode(expected)


# -- the model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pth(tmp_path_factory) -> Path:
    return make_rwkv7_pth(tmp_path_factory.mktemp("rwkv7") / "tiny.pth", hidden=HIDDEN, layers=LAYERS, head_size=HEAD_SIZE)


@pytest.fixture(scope="module")
def reference(pth):
    return rwkv7_reference(pth)


def _prompt(n: int, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, VOCAB, size=n).tolist()


def _reference_greedy(reference, prompt: list[int], count: int, eos: int | None = None) -> list[int]:
    logits, state = reference.forward(prompt, None)
    tokens: list[int] = []
    for _ in range(count):
        token = int(torch.argmax(logits))
        if token == eos:
            break
        tokens.append(token)
        logits, state = reference.forward(token, state)
    return tokens


def test_pth_loads_directly_with_inferred_config(pth) -> None:
    checkpoint = open_checkpoint(pth)
    assert checkpoint.format == "rwkv-pth"
    config = checkpoint.config
    assert config["architectures"] == ["Rwkv7ForCausalLM"]
    assert (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"]) == (VOCAB, HIDDEN, LAYERS)
    assert (config["num_heads"], config["head_size"], config["intermediate_size"]) == (HIDDEN // HEAD_SIZE, HEAD_SIZE, 4 * HIDDEN)
    assert [config[f"{name}_low_rank"] for name in ("decay", "a", "v", "gate")] == [16, 16, 8, 32]
    state = torch.load(pth, weights_only=True)
    # Block 0 takes its values as they are, so its v0/v1/v2 are never read.
    kept = {name: tensor for name, tensor in state.items() if name not in {f"blocks.0.att.v{i}" for i in range(3)}}
    assert checkpoint.weight_bytes == sum(t.numel() * t.element_size() for t in kept.values())
    tensors = checkpoint.load_tensors("pt")
    assert set(tensors) == set(kept)
    for name, tensor in kept.items():
        torch.testing.assert_close(tensors[name], tensor.reshape(tensors[name].shape), rtol=0, atol=0)
    # A vocabulary that is not World's has no tokenizer to guess.
    assert checkpoint.tokenizer() is None


def test_logits_and_greedy_match_rwkv_package(pth, reference) -> None:
    model = agentd.load_model(pth)
    ids = _prompt(45)
    ref, _ = reference.forward(ids, None, full_output=True)
    ours = model.logits(ids)
    assert ours.shape == (45, VOCAB)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=0, atol=LOGIT_ATOL)
    prompt = _prompt(10, seed=1)
    assert model.generate(prompt, max_new_tokens=32) == _reference_greedy(reference, prompt, 32)


#: The rwkv7 backend computes in a bfloat16 model's own dtype while the reference
#: upcasts to fp32 ("cpu fp32"): observed max |delta| 0.048 on logits up to ~8. A
#: misread tensor moves logits by whole units.
BF16_LOGIT_ATOL = 0.1


def test_bfloat16_pth_reads_exactly_and_matches_rwkv_package(tmp_path) -> None:
    """BlinkDL ships bfloat16: tensors arrive bit for bit (NumPy, which has no bf16, gets exact fp32)."""
    source = torch.load(make_rwkv7_pth(tmp_path / "f32.pth", hidden=HIDDEN, layers=LAYERS, head_size=HEAD_SIZE), weights_only=True)
    bf16 = tmp_path / "bf16.pth"
    torch.save({name: tensor.bfloat16() for name, tensor in source.items()}, bf16)
    checkpoint = open_checkpoint(bf16)
    expected = {name: tensor.bfloat16() for name, tensor in source.items()}
    for name, tensor in checkpoint.tensors("pt"):
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, expected[name].reshape(tensor.shape)), name
    for name, array in checkpoint.tensors("np"):
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, expected[name].float().reshape(array.shape).numpy(), err_msg=name)
    model = agentd.load_model(bf16)
    assert model.checkpoint.config["torch_dtype"] == "bfloat16"
    ids = _prompt(20, seed=5)
    ref, _ = rwkv7_reference(bf16).forward(ids, None, full_output=True)
    np.testing.assert_allclose(model.logits(ids), ref.float().numpy(), rtol=0, atol=BF16_LOGIT_ATOL)


def test_agentd_import_writes_a_bundle_with_the_same_model(pth, reference, tmp_path) -> None:
    out = tmp_path / "bundle"
    result = subprocess.run([*AGENTD, "import", str(pth), str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["architecture"] == "Rwkv7ForCausalLM" and manifest["source"] == "tiny.pth"
    bundle = agentd.load_model(out)
    assert bundle.checkpoint.format == "bundle"
    ids = _prompt(30, seed=2)
    ref, _ = reference.forward(ids, None, full_output=True)
    np.testing.assert_allclose(bundle.logits(ids), ref.numpy(), rtol=0, atol=LOGIT_ATOL)


def test_world_model_greedy_over_chat_matches_rwkv_package(world_pth, world_model, reference_tokenizer) -> None:
    prompt = reference_tokenizer.encode("User: Hello there\n\nAssistant:")
    assert world_model.tokenizer.apply_chat_template([{"role": "user", "content": "Hello there"}]) == prompt
    expected = _reference_greedy(rwkv7_reference(world_pth), prompt, NEW_TOKENS, eos=0)
    assert world_model.generate(prompt, max_new_tokens=NEW_TOKENS) == expected


# -- errors -------------------------------------------------------------------------------


def _cli_error(*args: str, prelude: str = "") -> str:
    """stderr of a failing CLI run, which must be exactly one line and no traceback."""
    command = [sys.executable, "-c", f"{prelude}from agentd.cli import main; main()", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_not_rwkv7_pth_is_one_line_error(tmp_path) -> None:
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(4)}, other)
    with pytest.raises(ModelLoadError, match="resnet.pth.*not an RWKV state dict"):
        agentd.load_model(other)
    rwkv4 = tmp_path / "rwkv4.pth"
    torch.save({"emb.weight": torch.zeros(4, 8), "blocks.0.att.time_decay": torch.zeros(8)}, rwkv4)
    with pytest.raises(ModelLoadError, match="rwkv4.pth.*not an RWKV-7.*r_k"):
        agentd.load_model(rwkv4)
    line = _cli_error("import", str(other), str(tmp_path / "out"))
    assert str(other) in line and "not an RWKV state dict" in line


def test_truncated_pth_is_one_line_error(pth, tmp_path) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(pth.read_bytes()[: pth.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="truncated.pth: cannot read .pth state dict"):
        agentd.load_model(truncated)
    line = _cli_error("import", str(truncated), str(tmp_path / "out"))
    assert str(truncated) in line and "cannot read .pth" in line
    assert not (tmp_path / "out").exists()


def test_without_torch_opening_a_pth_is_one_clear_error(pth, tmp_path, monkeypatch) -> None:
    """An install without torch: ``find_spec('torch')`` is None, so the format refuses before importing it."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "torch" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(BackendUnavailable, match="tiny.pth: reading the rwkv-pth format needs torch"):
        open_checkpoint(pth)
    monkeypatch.undo()
    prelude = (
        "import importlib.util as u; f = u.find_spec; "
        "u.find_spec = lambda name, *a, **k: None if name == 'torch' else f(name, *a, **k); "
    )
    line = _cli_error("import", str(pth), str(tmp_path / "out"), prelude=prelude)
    assert line == f"agentd: error: {pth}: reading the rwkv-pth format needs torch, which is not installed"


def test_missing_rwkv_vocab_is_one_clear_error(world_pth, monkeypatch) -> None:
    from agentd.plugins.linear import world_tokenizer

    monkeypatch.setattr(world_tokenizer, "_cache", {})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a, **k: None if name == "rwkv" else real_find_spec(name, *a, **k)
    )
    with pytest.raises(BackendUnavailable, match="rwkv_vocab_v20230424.txt.*'rwkv' package.*not installed"):
        agentd.load_model(world_pth)


# -- through the daemon --------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(world_pth, tmp_path_factory):
    """``unix://`` target of a real ``agentd serve --model r=world.pth`` process."""
    with serve_process({"r": world_pth}, tmp_path_factory.mktemp("home")) as target:
        yield target


@pytest.mark.slow
def test_daemon_serves_the_pth_and_answers_a_chat(daemon, world_pth, reference_tokenizer) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = reference_tokenizer.encode("User: What is the capital of France?\n\nAssistant:")
    expected = _reference_greedy(rwkv7_reference(world_pth), prompt, NEW_TOKENS, eos=0)
    assert expected, "the reference stopped at once: nothing compared"
    with Client(daemon, timeout=60) as client:
        info = client.model_info("r")
        chunks = list(client.chat(messages, model="r", sampling=SamplingOptions(max_tokens=NEW_TOKENS, temperature=0)))
        tokens = client.tokenize("Hello 世界", model="r")
    assert info.architecture == "Rwkv7ForCausalLM" and info.vocab_size == WORLD_VOCAB
    assert [token for chunk in chunks for token in chunk.token_ids] == expected
    known = [token for token in expected if token in reference_tokenizer.idx2token]
    assert "".join(chunk.text for chunk in chunks) == reference_tokenizer.decodeBytes(known).decode("utf-8", errors="replace")
    assert list(tokens.ids) == reference_tokenizer.encode("Hello 世界")
