"""The real generative default, in process: SmolLM2-135M-Instruct from its GGUF file.

Checked against transformers loading the same file (see ``_smollm2_fixtures``):
the chat prompt's ids, greedy answers to everyday requests for 48 tokens, and
that generation ends at the model's end-of-turn token. The same checks run
through the daemon in ``test_daemon.py``.
"""

from __future__ import annotations

import pytest

import agentd
from tests._smollm2_fixtures import CHAT_PROMPTS, GREEDY_TOKENS, chat_ids, hf_smollm2, reference_greedy, smollm2_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    return agentd.load_model(smollm2_path(), quant="fp32")  # the parity tests: float32, as transformers computes


def test_chat_template_ids_equal_transformers(smol) -> None:
    for prompt in CHAT_PROMPTS:
        ours = smol.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        assert ours == chat_ids(prompt)


@pytest.mark.parametrize("prompt", CHAT_PROMPTS)
def test_greedy_chat_answers_equal_transformers(smol, prompt) -> None:
    ids = smol.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    ours = smol.generate(ids, GREEDY_TOKENS)
    expected = list(reference_greedy(prompt))  # ends with <|im_end|> when the answer is shorter than 48 tokens
    _, tokenizer = hf_smollm2()
    assert ours == expected, (tokenizer.decode(ours), tokenizer.decode(expected))


def test_eos_is_the_end_of_turn_token(smol) -> None:
    _, tokenizer = hf_smollm2()
    assert tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id) == "<|im_end|>"
    assert tokenizer.eos_token_id in smol.tokenizer.eos_token_ids


def test_info_says_how_the_weights_are_computed(smol) -> None:
    assert smol.info.architecture == "LlamaForCausalLM"
    assert round(smol.info.parameters / 1e6, 1) == 134.5
    assert smol.info.weight_note == "GGUF Q4_1 (mixed with Q8_0), computed in float32"


def test_the_default_encoding_is_the_files_own_and_predicts_like_transformers() -> None:
    """Loaded as stored (int4 for Q4_1), teacher-forced on transformers' own greedy answers.

    Exact token equality is the float32 tests' job: 4-bit execution may flip a near tie
    (llama.cpp on this very file does too), so here the next-token choice agrees at nearly
    every answer position and the answers' likelihood stays within the int4 quality target.
    """
    import torch

    model, _ = hf_smollm2()
    int4 = agentd.load_model(smollm2_path())
    assert int4.info.dtype == "int4" and int4.info.weight_note.endswith("computed in int4")
    agree = total = 0
    nll_ours = nll_reference = 0.0
    for prompt in CHAT_PROMPTS:
        prompt_ids, answer = chat_ids(prompt), list(reference_greedy(prompt))
        ids, rows = prompt_ids + answer, slice(len(prompt_ids) - 1, -1)  # the positions that predict the answer
        with torch.inference_mode():
            want = model(torch.tensor([ids])).logits[0, rows]
        got = torch.from_numpy(int4.logits(ids)[rows])
        target = torch.tensor(answer)
        agree += int((got.argmax(-1) == target).sum())
        total += len(answer)
        nll_ours += float(torch.nn.functional.cross_entropy(got, target, reduction="sum"))
        nll_reference += float(torch.nn.functional.cross_entropy(want, target, reduction="sum"))
    print(f"int4 vs transformers fp32: top-1 agreement {agree}/{total}, answer NLL {nll_ours:.2f} vs {nll_reference:.2f}")
    assert agree >= 0.9 * total
    assert nll_ours <= 1.05 * nll_reference + 1.0
