"""Our Gemma 4 chat prompt equals transformers' ``apply_chat_template`` with Google's published template.

Google publishes two ``chat_template.jinja`` files for Gemma 4 (revision "Published: 2026-07-09"): one
for google/gemma-4-12B-it, -26B-A4B-it and -31B-it ("large") and one for google/gemma-4-E2B-it and
-E4B-it ("small"); they differ in the generation prompt, where the large one closes an empty thought
channel when thinking is off. The files are Google's, not ours, so they are not in this repository: the
test reads them, as ``gemma-4-31B-it.jinja`` and ``gemma-4-E2B-it.jinja``, from the folder
``GEMMA4_CHAT_TEMPLATES`` names (default: shared/reference/gemma4-chat-templates/ beside the clone). Each
is checked against the SHA-256 of Hugging Face's file before use, so a changed or wrong copy fails rather
than passes. Without the files the test skips, in CI too: nothing can fetch them there (no hub). The
exact strings it found equal are pinned by tests/unit/runtime/test_tokenizer_gemma4.py, which runs
everywhere.

For every case (user only; system and user; a conversation with the model's answers, one carrying a
thought; consecutive assistant and consecutive user messages; thinking unset, off and on) and both
templates, transformers renders the messages with ``tokenize=False, add_generation_prompt=True`` in the
reference venv (tests/runtime/reference/hf_chat_worker.py) and the strings must equal
``gemma4_chat_prompt`` with ``empty_thought`` for the large template.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gemma_runtime.tokenizer import gemma4_chat_prompt
from tests.runtime.reference.venvs import ReferenceUnavailableError, require_reference

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = Path(
    os.environ.get("GEMMA4_CHAT_TEMPLATES") or REPO.parent / "shared" / "reference" / "gemma4-chat-templates"
)
# family: (file, SHA-256 of Hugging Face's chat_template.jinja), for the file's repos named above.
TEMPLATES = {
    "large": ("gemma-4-31B-it.jinja", "ae53464bf3be25802b3a5b37def7fd89667067d7577049b3b2d74c4d8de4c6d4"),
    "small": ("gemma-4-E2B-it.jinja", "0a2c8073c878ab1da004bee933a998606537bbb62016310352c7285c3f01c5b5"),
}
CHATS: dict[str, list[dict[str, str]]] = {
    "user": [{"role": "user", "content": "  Why is the sky blue?\n"}],
    "system": [
        {"role": "system", "content": "Answer in one sentence. "},
        {"role": "user", "content": "What is rain?"},
    ],
    "conversation": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "<|channel>thought\nA greeting.<channel|> Hello. How can I help?"},
        {"role": "user", "content": "Tell me about trains."},
        {"role": "assistant", "content": "Trains run on rails.\n"},
        {"role": "user", "content": "And trams?"},
    ],
    "consecutive": [
        {"role": "user", "content": "One."},
        {"role": "user", "content": "Two."},
        {"role": "assistant", "content": "First part. "},
        {"role": "assistant", "content": " second part."},
        {"role": "user", "content": "Go on."},
    ],
}
# The template's enable_thinking: unset (its default, off), off, on.
THINKING: dict[str, dict[str, Any]] = {
    "default": {},
    "off": {"enable_thinking": False},
    "on": {"enable_thinking": True},
}
CASES = [(family, chat, thinking) for family in TEMPLATES for chat in CHATS for thinking in THINKING]


def _template(family: str) -> Path:
    name, digest = TEMPLATES[family]
    path = TEMPLATE_DIR / name
    if not path.is_file():
        pytest.skip(f"Google's Gemma 4 chat template {name} is not in {TEMPLATE_DIR} (GEMMA4_CHAT_TEMPLATES)")
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    if found != digest:
        pytest.fail(f"{path}: SHA-256 {found}, not Hugging Face's {digest}: not Google's published file")
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from tests.runtime.reference.hf import REQUIREMENTS, SMOKE_TEST
    from tests.runtime.reference.venvs import HERE, ensure_venv, run_worker

    paths = {family: str(_template(family)) for family in TEMPLATES}
    cases = [
        {
            "name": "-".join(case),
            "template": paths[case[0]],
            "messages": CHATS[case[1]],
            "options": THINKING[case[2]],
        }
        for case in CASES
    ]
    try:
        python = ensure_venv("hf", REQUIREMENTS, SMOKE_TEST)
    except ReferenceUnavailableError as err:
        require_reference(f"Hugging Face reference unavailable: {err}")
    out = run_worker(python, HERE / "hf_chat_worker.py", {"cases": cases}, tmp_path_factory.mktemp("chat"))
    return {name: str(np.asarray(text)) for name, text in out.items()}


@pytest.mark.parametrize(("family", "chat", "thinking"), CASES, ids=["-".join(case) for case in CASES])
def test_prompt_equals_transformers(rendered: dict[str, str], family: str, chat: str, thinking: str) -> None:
    ours = gemma4_chat_prompt(
        CHATS[chat],
        thinking=THINKING[thinking].get("enable_thinking", False),
        empty_thought=family == "large",
    )
    assert ours == rendered[f"{family}-{chat}-{thinking}"]


def test_the_templates_differ_only_in_the_empty_thought(rendered: dict[str, str]) -> None:
    # A guard on the cases themselves: they do exercise the one place the two templates differ.
    for chat in CHATS:
        large, small = rendered[f"large-{chat}-default"], rendered[f"small-{chat}-default"]
        assert large == small + "<|channel>thought\n<channel|>"
        assert rendered[f"large-{chat}-on"] == rendered[f"small-{chat}-on"]
