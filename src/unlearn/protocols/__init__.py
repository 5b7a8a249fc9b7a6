"""Benchmark protocols: one module each, one registry (docs/architecture.md).

``--benchmark NAME`` picks a protocol here; every other module asks the protocol object
(:class:`unlearn.protocols.base.Protocol`) and never compares the name. A new benchmark is one
module with a ``PROTOCOL`` instance, one line in :data:`PROTOCOLS`, and its tests.
"""

from __future__ import annotations

from unlearn.errors import ConfigError
from unlearn.prompts import detect_prompt_format
from unlearn.protocols import closer_look, muse, rwku, tofu, wmdp
from unlearn.protocols.base import Protocol

PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        closer_look.PROTOCOL,
        tofu.PROTOCOL,
        muse.PROTOCOL,
        wmdp.PROTOCOL,
        rwku.PROTOCOL,
    )
}
DEFAULT = closer_look.PROTOCOL.name


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``, or a clear error listing them."""
    try:
        return PROTOCOLS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"--benchmark: one of {', '.join(PROTOCOLS)}, got {name!r}") from None


def protocol_of(cfg) -> Protocol:
    """The protocol of a configuration (its ``benchmark``)."""
    return get_protocol(getattr(cfg, "benchmark", None) or DEFAULT)


def with_defaults(cfg):
    """``cfg`` with its protocol's defaults written in (a copy; :meth:`Protocol.defaults`)."""
    return protocol_of(cfg).with_defaults(cfg)


def prompt_format_for(tokenizer, cfg, model_name: str | None = None):
    """The prompt format a run or evaluation of ``cfg`` uses: the model's own
    (:func:`unlearn.prompts.detect_prompt_format`) in its protocol's template."""
    return protocol_of(cfg).template(detect_prompt_format(tokenizer, model_name or cfg.model, cfg.prompt_format))
