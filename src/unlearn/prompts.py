"""Prompt formats: the text that precedes an answer (docs/methods.md §2).

Llama-2-chat and Llama-3-instruct use the paper's exact strings, instruction models with a chat
template use that template, and anything else gets ``"Question: ... \\nAnswer: "`` + answer. Prompt
and answer are encoded as one string (:func:`unlearn.encoding.encode_qa`); the space after
``Answer:`` belongs to the answer (:attr:`PromptFormat.answer_prefix`), so the first answer token
(``ĠThe``) is scored and generation starts where training put the answer (see docs/parity.md);
:attr:`PromptFormat.add_special_tokens`
tells it whether the tokenizer should still add its BOS token (it must not when the rendered
prompt already starts with the BOS text, as most chat templates do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateError

from unlearn.encoding import IGNORE_INDEX, Encoded
from unlearn.errors import ConfigError

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
        if self.kind == "chat_template":
            check_renders_question(self.prompt, "the tokenizer's chat template")

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
            try:
                return self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
                )
            except (TemplateError, TypeError, ValueError, KeyError) as e:
                raise ConfigError(
                    f"the tokenizer's chat template failed ({e}); pass --prompt-format "
                    "plain, llama2, llama3 or a template with {question}"
                ) from None
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


PROBE = "Which river flows through the probe city 7?"


def check_renders_question(render, what: str) -> None:
    """Refuse a template whose prompt does not contain the question (one that renders every prompt
    the same would train and score the model on nothing)."""
    text = render(PROBE)
    if PROBE not in text:
        raise ConfigError(
            f"{what} does not put the question in the prompt (it renders {text[:80]!r}); pass "
            "--prompt-format plain, llama2, llama3 or a template with {question}"
        )


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
        raise ConfigError(
            f"unknown prompt format {spec!r}; choose one of {', '.join(PROMPT_FORMATS)} "
            f"or give a template containing {PLACEHOLDER}"
        )


def prompt_format_spec(fmt) -> str:
    """The string that recreates ``fmt`` through ``detect_prompt_format(..., override=...)`` (a
    TOFU template: the format it was made from)."""
    fmt = getattr(fmt, "base", fmt)
    return fmt.template if fmt.kind == "custom" else fmt.kind


def saved_prompt_format(model_name) -> str | None:
    """The prompt format recorded in a model folder written by ``unlearn``, if any."""
    path = Path(str(model_name)) / "unlearn_config.yaml"
    if not path.is_file():
        return None
    try:
        return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("prompt_format")
    except (OSError, yaml.YAMLError):
        return None


# --------------------------------------------------------------------------- the TOFU standard's templates

TOFU_SYSTEM_PROMPT = "You are a helpful assistant."
TOFU_DATE_STRING = "10 Apr 2025"  # what open-unlearning's Llama-3 and zephyr configs pass to the chat template


@dataclass
class TofuTemplate:
    """The prompt of the TOFU standard (``--benchmark tofu``): open-unlearning's ``template_args`` and
    its ``preprocess_chat_instance``, reproduced.

    Without a chat template, ``user_start_tag + question + user_end_tag + asst_start_tag`` is the
    prompt; prompt + answer are tokenised as one string (BOS added, cut at ``max_length``), an EOS
    is appended unless the last token is one, and the first ``len(tokenize(prompt))`` labels are
    masked. With a chat template, the whole conversation (system prompt, question, answer) is
    rendered by the tokenizer's template and the prompt is the conversation without the answer,
    with the generation prompt; nothing is cut. Which family gets which template follows
    open-unlearning's model configs (:func:`tofu_template`).
    """

    base: PromptFormat
    apply_chat_template: bool = False
    user_start_tag: str = ""
    user_end_tag: str = ""
    asst_start_tag: str = ""
    system_prompt: str | None = None
    date_string: str | None = None
    tokenizer: Any = field(default=None, repr=False, compare=False)
    kind: str = "tofu"
    template: str | None = None
    _prompt_ids: dict = field(default_factory=dict, repr=False, compare=False)  # question -> ids: a question
    # is encoded with its answer, its paraphrase and each perturbed answer; its prompt is tokenised once

    answer_prefix = ""

    @property
    def add_special_tokens(self) -> bool:
        return True if not self.apply_chat_template else self.base.add_special_tokens

    def _chat(self, question: str, answer: str | None) -> list[dict]:
        chat = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        chat.append({"role": "user", "content": question})
        if answer is not None:
            chat.append({"role": "assistant", "content": answer})
        return chat

    def _render(self, chat: list[dict], tokenize: bool, generation_prompt: bool):
        extra = {"date_string": self.date_string} if self.date_string is not None else {}
        out = self.tokenizer.apply_chat_template(
            chat, tokenize=tokenize, add_generation_prompt=generation_prompt, **extra
        )
        if tokenize and not isinstance(out, list):
            out = out["input_ids"]  # transformers 5 returns a BatchEncoding
        return list(out) if tokenize else out

    def prompt(self, question: str) -> str:
        if self.apply_chat_template:
            return self._render(self._chat(question, None), False, True)
        return self.user_start_tag + question + self.user_end_tag + self.asst_start_tag

    def encode_prompt_ids(self, tokenizer, question: str, max_length: int | None = None) -> list[int]:
        key = (question, None if self.apply_chat_template else max_length)
        if key not in self._prompt_ids:
            if self.apply_chat_template:
                ids = self._render(self._chat(question, None), True, True)
            else:
                ids = tokenizer(
                    self.prompt(question),
                    add_special_tokens=True,
                    **({"max_length": max_length, "truncation": True} if max_length else {}),
                )["input_ids"]
            self._prompt_ids[key] = list(ids)
        return list(self._prompt_ids[key])

    def encode_pair(
        self, tokenizer, question: str, answer: str, max_length: int | None = None, mask_question: bool = True
    ):
        return self.encode_pairs(tokenizer, [(question, answer)], max_length, mask_question)[0]

    def encode_pairs(
        self, tokenizer, pairs: list[tuple[str, str]], max_length: int | None = None, mask_question: bool = True
    ) -> list:
        """:meth:`encode_pair` of each ``(question, answer)``, the tokenizer called once for them all
        (the same ids: each text is tokenised on its own, in one batch)."""
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; unlearning needs one to end every answer")
        if not pairs:
            return []
        if self.apply_chat_template:
            encoded = self._render([self._chat(q, a) for q, a in pairs], True, False)
        else:
            encoded = tokenizer([self.prompt(q) + a for q, a in pairs], add_special_tokens=True)["input_ids"]
        return [
            self._finish(tokenizer, list(ids), q, max_length, mask_question)
            for ids, (q, _) in zip(encoded, pairs, strict=True)
        ]

    def _finish(self, tokenizer, ids: list[int], question: str, max_length: int | None, mask_question: bool):
        """A pair's ids as :meth:`encode_pair` returns them: cut (no chat template), EOS, labels."""
        truncated = False
        if not self.apply_chat_template and max_length is not None and len(ids) > max_length:
            ids, truncated = ids[:max_length], True
        n_prompt = len(self.encode_prompt_ids(tokenizer, question, max_length))
        if ids[-1] != tokenizer.eos_token_id:
            ids.append(tokenizer.eos_token_id)
        labels = [IGNORE_INDEX] * min(n_prompt, len(ids)) + ids[n_prompt:] if mask_question else list(ids)
        return Encoded(ids, labels, truncated)


def tofu_template(fmt: PromptFormat) -> TofuTemplate:
    """The TOFU standard's template for a model whose own prompt format is ``fmt`` (the family's
    open-unlearning config): ``plain`` → ``Question: …\\nAnswer: `` (phi-1_5, Llama-2-7b-hf);
    ``llama2`` → ``[INST] … [/INST]`` (Llama-2-7b-chat-hf); ``llama3`` and ``chat_template`` → the
    tokenizer's chat template with the system prompt "You are a helpful assistant." (and Llama 3's
    date string); a custom template → its text before and after ``{question}``."""
    if isinstance(fmt, TofuTemplate):
        return fmt
    tok = fmt.tokenizer
    if fmt.kind == "plain":
        return TofuTemplate(fmt, False, "Question: ", "\n", "Answer: ", tokenizer=tok)
    if fmt.kind == "llama2":
        return TofuTemplate(fmt, False, "[INST] ", " [/INST]", "", tokenizer=tok)
    if fmt.kind == "custom":
        before, after = fmt.template.split(PLACEHOLDER, 1)
        return TofuTemplate(fmt, False, before, "", after, tokenizer=tok)
    if not getattr(tok, "chat_template", None):
        raise ConfigError(
            f"the TOFU benchmark renders {fmt.kind} prompts with the tokenizer's chat template, and "
            "this tokenizer has none; pass --prompt-format plain"
        )
    template = TofuTemplate(fmt, True, system_prompt=TOFU_SYSTEM_PROMPT, date_string=TOFU_DATE_STRING, tokenizer=tok)
    try:
        template.prompt("?")
    except TemplateError:  # a template without a system role (gemma): open-unlearning's config gives none
        template.system_prompt = None
    try:
        check_renders_question(template.prompt, "the tokenizer's chat template (TOFU benchmark)")
    except (TemplateError, TypeError, ValueError, KeyError) as e:
        raise ConfigError(
            f"the tokenizer's chat template failed on the TOFU benchmark's prompt ({e}); pass --prompt-format plain"
        ) from None
    return template
