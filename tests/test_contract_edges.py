"""Edges of the public contract decided, documented and held (issue 12, break 8).

* ``min_p`` takes [0, 1]: at 1 only the most likely token survives, so sampling is greedy.
* The bearer scheme is case-insensitive (RFC 7235 section 2.1) and spaces around the
  token are ignored; another scheme or a missing token is refused like a wrong token.
* A Unix socket placed in a directory others may write to starts with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from agentd.generation import SamplingParams
from agentd.sampling import Sampler
from agentd.server.app import _prepare_socket_dir
from agentd.server.auth import _bearer_token


def test_min_p_of_one_keeps_only_the_top_token() -> None:
    SamplingParams(min_p=1.0, temperature=1.0).validate()
    logits = np.random.default_rng(0).normal(size=64).astype(np.float32)
    for seed in range(20):
        token, _ = Sampler(SamplingParams(min_p=1.0, temperature=1.5, seed=seed)).sample(logits)
        assert token == int(logits.argmax())


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer secret-token", b"secret-token"),
        ("bearer secret-token", b"secret-token"),
        ("BEARER   secret-token  ", b"secret-token"),
        ("Bearer", b""),
        ("Bearer    ", b""),
        ("Basic secret-token", b""),
        ("Bearersecret-token", b""),
        ("secret-token", b""),
    ],
)
def test_bearer_header_forms(header: str, token: bytes) -> None:
    assert _bearer_token([("authorization", header)]) == token
    assert _bearer_token([("Authorization", header.encode())]) == token
    assert _bearer_token([("x-other", "Bearer secret-token")]) is None


@pytest.mark.parametrize(("mode", "warned"), [(0o700, False), (0o770, True), (0o777, True), (0o1777, True)])
def test_socket_directory_others_may_write_to_is_warned_about(
    mode: int, warned: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    directory.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="agentd.server.app"):
        _prepare_socket_dir(directory)
    messages = [record.getMessage() for record in caplog.records if "socket directory" in record.getMessage()]
    assert bool(messages) == warned, messages
    if warned:
        assert str(directory) in messages[0]
