"""RWKU (``--benchmark rwku``): unlearning real people a model knows, probed as the benchmark probes them.

Jin et al. 2024, "RWKU: Benchmarking Real-World Knowledge Unlearning for Large Language Models"
(arXiv 2406.10890). Definitions, prompts and aggregations are those of its code
(``jinzhuoran/RWKU``: ``LLaMA-Factory/src/llmtuner/eval/``, reproduced in
:mod:`unlearn.evaluation.rwku_metrics`):

* **data**: the hub set ``jinzhuoran/RWKU`` or a local snapshot folder in its layout
  (``CONFIG/SPLIT.json``: ``forget_target/train.json``, ``forget_level1/test.json`` ...,
  ``train_positive_llama3/train.json`` ...). Every row names its target in ``subject``.
* **targets** (``--split``): ``N`` the N-th of the 200 targets (single-target setting; RWKU's
  ``1_Stephen_King`` and a target's name read the same), ``N-M`` targets N to M together (batch
  setting, RWKU's ``1-10``); ``/phi3`` or ``/passage`` after it picks the Phi-3 corpus or the
  original passages instead of the Llama-3 corpus. TOFU's default ``forget01`` reads as ``1``.
* **training** (no retain corpus in RWKU; ``--retain FILE`` adds one for a method that needs it):
  methods on text (GA, NPO, ...) train on the targets' synthetic texts (``train_positive_*``);
  RT on the refusal set (``train_refusal_*``: generated questions answered "I don't know");
  a method that needs an alternate answer (AltPO, which is RWKU's DPO) on the pairs
  (``train_pair_*``: the prompt, the true text rejected, the made-up one chosen), which other
  question/answer methods read with the true text as the answer.
* **evaluation** (``--eval-sets``, comma-separated groups, default all): ``forget`` — ROUGE-L recall
  of greedy answers (30 new tokens) on the fill-in-the-blank (level 1), question (level 2) and
  adversarial (level 3) probes of the targets; ``neighbor`` — levels 1 and 2 on neighbouring
  knowledge (locality); ``mia`` — mean LOSS, ZLib and Min-K%++ 20% on the forget and retain
  member texts; ``utility`` — MMLU accuracy (5-shot, next letter), BBH exact match (chain of
  thought, 256 tokens), TruthfulQA MC1/MC2, TriviaQA EM/F1, and fluency (n-gram entropy of 256-token
  answers to instructions). ``forget_all`` / ``neighbor_all``: the mean over every probe of the levels.
* **ICU** (in-context unlearning): ``unlearn eval --benchmark rwku --method ICU`` puts RWKU's
  instruction to forget the target before every prompt; nothing trains.

Results: ``summary.json``, ``RWKU_EVAL.json`` (every item's prompt, answer and score) and
``intervals.json`` (95% bootstrap over each set's items).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from unlearn import distributed
from unlearn.data import TEXT_PARTS, HubSnapshot, UnlearningData, read_rows
from unlearn.errors import ConfigError, DataError
from unlearn.evaluation.rwku_eval import RWKU_EVAL, evaluate_rwku, print_rwku, rwku_intervals, write_rwku
from unlearn.evaluation.sets import EvalSet
from unlearn.methods import parse_method
from unlearn.protocols.base import Protocol
from unlearn.protocols.closer_look import refuse_closer_look_flags

HUB_ID = "jinzhuoran/RWKU"
CORPORA = ("llama3", "phi3", "passage")
GROUPS = ("forget", "neighbor", "mia", "utility")
TRAINING_LENGTH = 512  # RWKU's cutoff_len
PROBE = ("subject", "query", "answer")


class RwkuSource(HubSnapshot):
    hub_ids = (HUB_ID,)
    name = "RWKU"
    example = "forget_target/train.json, forget_level1/test.json, train_positive_llama3/train.json"


@dataclass(frozen=True)
class Targets:
    names: list[str]  # the targets, in RWKU's order
    corpus: str  # llama3 | phi3 | passage
    label: str  # as RWKU names the setting: 1_Stephen_King, 1-10


def parse_targets(split: str, all_targets: list[str]) -> Targets:
    """``--split`` under RWKU (see the module docstring), checked against the 200 targets."""
    spec, _, corpus = str(split).partition("/")
    corpus = corpus or "llama3"
    if corpus not in CORPORA:
        raise DataError(f"--split {split}: the corpus after '/' is one of {', '.join(CORPORA)}, got {corpus!r}")
    spec = "1" if spec == "forget01" else spec.strip()
    n = len(all_targets)
    batch = re.fullmatch(r"(\d+)-(\d+)", spec)
    single = re.fullmatch(r"(\d+)(_.*)?", spec)
    if batch:
        lo, hi = int(batch[1]), int(batch[2])
        if not 1 <= lo <= hi <= n:
            raise DataError(f"--split {split}: a batch of targets N-M needs 1 <= N <= M <= {n}")
        return Targets(all_targets[lo - 1 : hi], corpus, f"{lo}-{hi}")
    if single:
        i = int(single[1])
        if not 1 <= i <= n:
            raise DataError(f"--split {split}: RWKU has targets 1 to {n}")
    elif spec in all_targets:
        i = all_targets.index(spec) + 1
    else:
        raise DataError(
            f"--split {split}: not a target of RWKU (give its number 1..{n}, a range like 1-10, or a name such "
            f"as {all_targets[0]!r})"
        )
    return Targets([all_targets[i - 1]], corpus, f"{i}_{all_targets[i - 1].replace(' ', '_')}")


def _of(rows: list[dict], names: list[str]) -> list[dict]:
    keep = set(names)
    return [r for r in rows if r.get("subject") in keep]


def targets_of(cfg) -> tuple[RwkuSource, Targets]:
    src = RwkuSource(cfg.data)
    names = [r["target"] for r in src.rows("forget_target", "train", ("target",))]
    if not names:
        raise DataError(f"{cfg.data}: forget_target has no targets")
    return src, parse_targets(cfg.split, names)


def _corpus(targets: Targets, kind: str) -> str:
    if targets.corpus == "passage":
        if kind != "positive":
            raise DataError(f"RWKU's original passages are text: {kind} rows come from the llama3 or phi3 corpus")
        return "train_original_passage"
    return f"train_{kind}_{targets.corpus}"


def training_rows(src: RwkuSource, targets: Targets, forget_term, parts: tuple[str, ...]) -> list[dict]:
    """The forget rows a method (its forget term and batch parts) trains on (see the module docstring)."""
    if forget_term.own_refusals:  # RT: questions answered with refusals
        rows = _of(src.rows(_corpus(targets, "refusal"), "train", ("instruction", "output")), targets.names)
        return [
            {
                "question": r["instruction"] + ("\n" + r["input"] if r.get("input") else ""),
                "answer": r["output"],
                "_source": r["_source"],
            }
            for r in rows
        ]
    if all(p in TEXT_PARTS for p in parts):
        rows = _of(src.rows(_corpus(targets, "positive"), "train", ("text",)), targets.names)
        return [{"text": r["text"], "_source": r["_source"]} for r in rows]
    out = []
    for r in _of(src.rows(_corpus(targets, "pair"), "train", ("prompt",)), targets.names):
        resp = r.get("response")
        if not (isinstance(resp, list) and len(resp) == 2 and all(isinstance(x, str) for x in resp)):
            raise DataError(f"{r['_source']}: field 'response' must be [chosen, rejected] strings")
        out.append({"question": r["prompt"], "answer": resp[1], "alternate": resp[0], "_source": r["_source"]})
    return out


# --------------------------------------------------------------------------- evaluation sets


@dataclass
class RwkuSets:
    targets: Targets
    forget: dict[int, list[dict]] = field(default_factory=dict)  # level -> probes
    neighbor: dict[int, list[dict]] = field(default_factory=dict)
    mia: dict[str, list[dict]] = field(default_factory=dict)  # forget | retain -> texts
    utility: dict[str, list[dict]] = field(default_factory=dict)  # mmlu | bbh | truthfulqa | triviaqa | fluency
    in_context: bool = False  # ICU: RWKU's instruction to forget the target before every prompt


UTILITY = {  # our name: (RWKU's config, its string fields)
    "mmlu": ("utility_general", ("subject", "question", "task")),
    "bbh": ("utility_reason", ("subject", "question", "cot")),
    "truthfulqa": ("utility_truthfulness", ("subject", "question")),
    "triviaqa": ("utility_factuality", ("subject", "question")),
    "fluency": ("utility_fluency", ("subject", "instruction")),
}


def eval_groups(cfg) -> tuple[str, ...]:
    if not cfg.eval_sets:
        return GROUPS
    given = tuple(dict.fromkeys(g.strip() for g in cfg.eval_sets.split(",") if g.strip()))
    wrong = [g for g in given if g not in GROUPS]
    if wrong or not given:
        raise ConfigError(f"--eval-sets under --benchmark rwku: groups among {', '.join(GROUPS)}, got {cfg.eval_sets}")
    return given


def _check_utility(name: str, rows: list[dict]) -> None:
    """The non-string fields RWKU's utility code reads, checked now (one line per bad row)."""
    for r in rows:
        where = r["_source"]
        if name == "mmlu":
            ok = isinstance(r.get("choices"), list) and len(r["choices"]) == 4 and r.get("answer") in range(4)
            ok = ok and isinstance(r.get("examples"), list)
            if not ok:
                raise DataError(f"{where}: MMLU rows need 'choices' (4 strings), 'answer' (0-3) and 'examples'")
        elif name == "bbh" and not isinstance(r.get("answer"), (str, list)):
            raise DataError(f"{where}: missing field 'answer'")
        elif name == "truthfulqa":
            for key in ("mc1_targets", "mc2_targets"):
                t = r.get(key)
                ok = isinstance(t, dict) and len(t.get("choices") or []) == len(t.get("labels") or []) > 0
                if not ok or 1 not in t["labels"] or 0 not in t["labels"]:
                    raise DataError(f"{where}: '{key}' needs 'choices' and 'labels' with true (1) and false (0) ones")
        elif name == "triviaqa" and not (isinstance(r.get("answers"), list) and r["answers"]):
            raise DataError(f"{where}: missing field 'answers' (a list of strings)")


def load_rwku_sets(cfg, groups: tuple[str, ...] | None = None) -> RwkuSets:
    src, targets = targets_of(cfg)
    groups = groups or eval_groups(cfg)
    sets = RwkuSets(targets, in_context=is_icu(cfg))

    def probes(config, required=PROBE):
        return _of(src.rows(config, "test", required), targets.names)

    if "forget" in groups:
        sets.forget = {level: probes(f"forget_level{level}") for level in (1, 2, 3)}
    if "neighbor" in groups:
        sets.neighbor = {level: probes(f"neighbor_level{level}") for level in (1, 2)}
    if "mia" in groups:
        sets.mia = {side: probes(f"mia_{side}", ("subject", "text")) for side in ("forget", "retain")}
    if "utility" in groups:
        for name, (config, required) in UTILITY.items():
            sets.utility[name] = probes(config, required)
            _check_utility(name, sets.utility[name])
    if not any(rows for g in (sets.forget, sets.neighbor, sets.mia, sets.utility) for rows in g.values()):
        raise DataError(f"{cfg.data}: no RWKU probes of {', '.join(targets.names)} in {', '.join(groups)}")
    return sets


def is_icu(cfg) -> bool:
    """Whether ``cfg``'s method is in-context unlearning (ICU, :mod:`unlearn.methods.terms`)."""
    return parse_method(cfg.method)[0].in_context


# --------------------------------------------------------------------------- the protocol


class Rwku(Protocol):
    name = "rwku"
    description = (
        "RWKU on real people (jinzhuoran/RWKU or a snapshot folder): forget probes at three levels, "
        "neighbours, MIA, utility; --split N or N-M picks the targets"
    )
    max_length = TRAINING_LENGTH
    before_after = False
    text_packing = "rwku"
    rows_follow_method = True
    in_context = True
    own_eval_sets = True
    table = (
        "RWKU (forget probes: lower is better; neighbours and utility: higher)",
        ("forget_level1", "forget_level2", "forget_level3", "forget_all", "neighbor_all", "utility_mmlu"),
    )

    def layout(self, cfg) -> str:
        return "files" if cfg.forget is not None else "rwku" if cfg.data else "none"

    def defaults(self, cfg) -> dict:
        return {"max_length": TRAINING_LENGTH} if cfg.max_length is None else {}

    def training_data(self, cfg, unlearned=()) -> UnlearningData:
        if cfg.forget is not None:
            return super().training_data(cfg, unlearned)
        if is_icu(cfg):
            raise ConfigError(
                "ICU (in-context unlearning) trains nothing: evaluate it with unlearn eval --benchmark rwku "
                "--method ICU --model MODEL --data DATA --split N --out DIR"
            )
        forget_term, reg = parse_method(cfg.method)
        parts = tuple(dict.fromkeys(p for t in (forget_term, reg) if t is not None for p in t.parts))
        src, targets = targets_of(cfg)
        forget = training_rows(src, targets, forget_term, parts)
        if not forget:
            raise DataError(f"{cfg.data}: no training rows for {', '.join(targets.names)} in RWKU's corpus")
        retain = read_rows(cfg.retain) if cfg.retain else []
        info = {"split": cfg.split, "targets": targets.label, "benchmark": self.name}
        return UnlearningData(forget, retain, "rwku", str(cfg.data), info)

    def check_flags(self, cfg) -> None:
        super().check_flags(cfg)
        if is_icu(cfg) and cfg.forget is not None:
            raise ConfigError("ICU prompts with each RWKU probe's target: it needs --data (RWKU), not --forget")

    def check(self, cfg):
        load_rwku_sets(cfg)
        return None

    def plan(self, cfg, plan, judges=None, sets=None) -> None:
        refuse_closer_look_flags(cfg, self.name)
        if not cfg.data:
            raise DataError(f"--benchmark rwku evaluates RWKU's probes: give --data {HUB_ID} or a snapshot folder")
        plan.own = load_rwku_sets(cfg)

    def evaluate(self, plan, model, tokenizer, fmt, out, shard, done):
        if not distributed.is_main_process():
            return None
        logs, summary = evaluate_rwku(model, tokenizer, plan.own, plan.batch_size)
        intervals = rwku_intervals(logs)
        write_rwku(logs, summary, intervals, out.path)
        print_rwku(summary, intervals)
        return summary

    def evaluate_before(self, plan, model, tokenizer, fmt, out_dir):
        """The model before unlearning on the forget and neighbour probes, for the verdict."""

        def compute():
            sets = dataclasses.replace(plan.own, mia={}, utility={})
            logs, summary = evaluate_rwku(model, tokenizer, sets, plan.batch_size)
            summary.pop("unavailable", None)
            return summary, rwku_intervals(logs), {RWKU_EVAL: logs}

        return self.before_with(out_dir, compute)

    def conclude(self, plan, out, before, steps, steps_hint, refusals):
        forget = ("forget_level1", "forget_level2", "forget_level3")
        return self.conclude_on(out, before, forget, ("neighbor_level1", "neighbor_level2"), steps, steps_hint)

    def eval_texts(self, plan) -> list[str]:
        s = plan.own
        probes = [r["query"] + " " + r["answer"] for g in (s.forget, s.neighbor) for rows in g.values() for r in rows]
        return probes + [r["text"] for rows in s.mia.values() for r in rows]

    def audit_sets(self, cfg):
        """The targets' question probes (level 2) as the forget set, the neighbours' as the retain set."""
        sets = load_rwku_sets(cfg, ("forget", "neighbor"))

        def qa(rows):
            return [{"question": r["query"], "answer": r["answer"], "_source": r["_source"]} for r in rows]

        return [
            EvalSet("Retain", qa(sets.neighbor[2]), "retain"),
            EvalSet("Forget", qa(sets.forget[2]), "forget"),
        ], None


PROTOCOL = Rwku()
