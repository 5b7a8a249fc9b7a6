"""Prompt formats: the text that precedes an answer (docs/methods.md §2).

Llama-2-chat and Llama-3-instruct use the paper's exact strings, instruction models with a chat
template use that template, and anything else gets ``"Question: ... \\nAnswer: "`` + answer. Prompt
and answer are encoded as one string (:func:`unlearn.encoding.encode_qa`); the space after
``Answer:`` belongs to the answer (:attr:`PromptFormat.answer_prefix`), so the first answer token
(``ĠThe``) is scored and generation starts where training put the answer (see docs/parity.md); :attr:`PromptFormat.add_special_tokens`
tells it whether the tokenizer should still add its BOS token (it must not when the rendered
prompt already starts with the BOS text, as most chat templates do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

PROMPT_FORMATS = ("llama2", "llama3", "chat_template", "plain")
KINDS = PROMPT_FORMATS + ("custom",)
PLACEHOLDER = "{question}"

_LLAMA3_HEADER = "<|start_header_id|>"
_LLAMA2_NAME = re.compile(r"llama[-_ ]?2(?!\d)", re.IGNORECASE)
_LLAMA3_NAME = re.compile(r"llama[-_ ]?3(?!\d)", re.IGNORECASE)


@dataclass
class PromptFormat:
    """How a question is turned into the text the answer follows.

    ``kind`` is one of :data:`KINDS`; ``template`` (custom only) must contain ``{question}``,
    which is replaced literally (other braces are kept as they are); ``tokenizer`` renders chat
    templates and decides :attr:`add_special_tokens`.
    """

    kind: str
    template: str | None = None
    tokenizer: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown prompt format {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.kind == "custom" and (self.template is None or PLACEHOLDER not in self.template):
            raise ConfigError(f"a custom prompt format needs a template containing {PLACEHOLDER}")
        if self.kind == "chat_template" and not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError("the chat_template prompt format needs a tokenizer with a chat template")

    def prompt(self, question: str) -> str:
        if self.kind == "llama2":
            return "[INST] " + question + " [/INST]"
        if self.kind == "llama3":
            return (
                "<|start_header_id|>user<|end_header_id|>\n\n"
                + question
                + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            )
        if self.kind == "plain":
            return "Question: " + question + "\nAnswer:"
        if self.kind == "chat_template":
            from jinja2 import TemplateError

            try:
                return self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
                )
            except TemplateError as e:
                raise ConfigError(f"the tokenizer's chat template failed ({e}); pass --prompt-format "
                                  "plain, llama2, llama3 or a template with {question}") from None
        return self.template.replace(PLACEHOLDER, question)

    @property
    def answer_prefix(self) -> str:
        """Text between the prompt and the answer that belongs to the answer (plain: the space)."""
        return " " if self.kind == "plain" else ""

    @property
    def add_special_tokens(self) -> bool:
        """False when the rendered prompt already begins with the BOS text (no second BOS)."""
        bos = getattr(self.tokenizer, "bos_token", None)
        return not (bos and self.prompt("?").startswith(bos))


def detect_prompt_format(tokenizer, model_name: str, override: str | None = None) -> PromptFormat:
    """Pick the prompt format of a model.

    ``override`` wins: one of :data:`PROMPT_FORMATS` or a custom template containing
    ``{question}``. Otherwise a name with Llama-2 gives ``llama2``, a name with Llama-3 or a
    vocabulary with ``<|start_header_id|>`` gives ``llama3``, a tokenizer with a chat template
    gives ``chat_template``, and anything else ``plain``. A model folder saved by ``unlearn``
    remembers the format it was trained with (``unlearn_config.yaml``), which then wins over
    the name: a fine-tuned Llama-2 in ``runs/x/model`` keeps its ``[INST]`` tags.
    """
    if override is None:
        override = saved_prompt_format(model_name)
    if override is not None:
        if override in PROMPT_FORMATS:
            return PromptFormat(override, tokenizer=tokenizer)
        if PLACEHOLDER in override:
            return PromptFormat("custom", template=override, tokenizer=tokenizer)
        raise ConfigError(
            f"unknown prompt format {override!r}; choose one of {', '.join(PROMPT_FORMATS)} "
            f"or give a template containing {PLACEHOLDER}"
        )
    name = str(model_name)
    if _LLAMA2_NAME.search(name):
        return PromptFormat("llama2", tokenizer=tokenizer)
    if _LLAMA3_NAME.search(name) or _LLAMA3_HEADER in tokenizer.get_vocab():
        return PromptFormat("llama3", tokenizer=tokenizer)
    if getattr(tokenizer, "chat_template", None):
        return PromptFormat("chat_template", tokenizer=tokenizer)
    return PromptFormat("plain", tokenizer=tokenizer)


def check_prompt_format(spec: str | None) -> None:
    """A ``--prompt-format`` that can be used, checked before any model is loaded."""
    if spec is not None and spec not in PROMPT_FORMATS and PLACEHOLDER not in spec:
        raise ConfigError(f"unknown prompt format {spec!r}; choose one of {', '.join(PROMPT_FORMATS)} "
                          f"or give a template containing {PLACEHOLDER}")


def prompt_format_spec(fmt: PromptFormat) -> str:
    """The string that recreates ``fmt`` through ``detect_prompt_format(..., override=...)``."""
    return fmt.template if fmt.kind == "custom" else fmt.kind


def saved_prompt_format(model_name) -> str | None:
    """The prompt format recorded in a model folder written by ``unlearn``, if any."""
    import yaml
    from pathlib import Path

    path = Path(str(model_name)) / "unlearn_config.yaml"
    if not path.is_file():
        return None
    try:
        return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("prompt_format")
    except (OSError, yaml.YAMLError):
        return None
