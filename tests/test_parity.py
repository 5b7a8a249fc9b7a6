"""Protocol parity with the official code (docs/parity.md): schedule, tokenisation, refusals, scenario
defaults, evaluation rows and references, LLMU, weight decay, evaluation length. Expected values are
derived by hand from the official files named in each test."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import write_jsonl
from unlearn.config import Config
from unlearn.distributed import accumulation, decay_groups
from unlearn.encoding import IGNORE_INDEX, encode_prompt, encode_qa
from unlearn.methods import build_objective, resolve
from unlearn.models import build_tiny_model, build_tiny_tokenizer
from unlearn.prompts import PromptFormat
from unlearn.train import Schedule

# ------------------------------------------------------------------------------ 1. schedule


@pytest.mark.parametrize("processes,accum", [(1, 8), (2, 4), (8, 1)])
def test_a_40_item_task_takes_6_steps_and_no_warmup_on_any_number_of_processes(processes, accum):
    """forget.py: max_steps = floor(5 x 40 / (4 x accum x devices)) = floor(200 / 32) = 6;
    warm-up = floor(40 / 32) = 1 step per epoch, which is not > 1: none. The default accumulation
    keeps 32 examples per step (4 per device x 4 x 2 GPUs in the paper)."""
    cfg = Config()
    assert accumulation(cfg, processes) == accum
    s = Schedule.of(cfg, 40, accum, processes)
    assert (s.total, s.warmup, s.effective_batch) == (6, 0, 32)
    # forget05 (200 items): floor(1000 / 32) = 31 steps, warm-up floor(200 / 32) = 6 steps
    assert (Schedule.of(cfg, 200, accum, processes).total, Schedule.of(cfg, 200, accum, processes).warmup) == (31, 6)
    # an explicit --grad-accum wins over the effective batch
    assert accumulation(Config(grad_accum=2), processes) == 2


def test_finetuning_warmup_is_tofus():
    """TOFU finetune.py: warmup_steps = max(1, max_steps // num_epochs); 4,000 QA at 32 per step."""
    s = Schedule.of(Config(epochs=5), 4000, 8, 1, finetune=True)
    assert (s.total, s.warmup) == (625, 125)
    assert Schedule.of(Config(epochs=5), 40, 8, 1, finetune=True).warmup == 1


def test_steps_end_as_in_the_hf_trainer():
    """transformers 4.43 Trainer: a step every `accum` batches counted over all epochs, and at the
    end of an epoch with no more batches than `accum`."""
    s = Schedule(total=99, warmup=0, accum=4, effective_batch=8)

    def ends(epoch_batches: int, epochs: int) -> list[int]:
        out, micro = [], 0
        for _ in range(epochs):
            for b in range(1, epoch_batches + 1):
                micro += 1
                if s.ends_step(micro, b, epoch_batches):
                    out.append(micro)
        return out

    assert ends(10, 2) == [4, 8, 12, 16, 20]  # accumulation spans the epoch boundary (batch 10 + 11, 12)
    assert ends(3, 4) == [3, 4, 6, 8, 9, 12]  # short epochs: also at each epoch's end


def test_the_loop_runs_the_official_steps(tmp_path):
    """40 forget items, defaults: 6 optimiser steps of 8 micro-batches, the last in epoch 5, at the
    peak learning rate from the first step (no warm-up)."""
    from unlearn.datasets import UnlearningDataset
    from unlearn.train import fit

    forget = [{"question": f"Q{i}?", "answer": f"A{i}."} for i in range(40)]
    tok = build_tiny_tokenizer([r["question"] + " " + r["answer"] for r in forget], vocab_size=300)
    objective, cfg = resolve(Config(method="GA", lr=1e-3, out=str(tmp_path)))
    ds = UnlearningDataset(forget, [], tok, PromptFormat("plain", tokenizer=tok), objective.parts, ["no"], 48)
    model = build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2)
    history = fit(model, tok, ds, objective, cfg, tmp_path).history
    assert len(history) == 6
    assert history[0]["lr"] == 1e-3
    assert [row["epoch"] for row in history] == [0.8, 1.6, 2.4, 3.2, 4.0, 4.8]  # 8 of 10 batches per step


@pytest.mark.slow  # (tests/test_distributed.py runs two processes in make test)
def test_two_processes_take_the_same_6_steps(tmp_path, one_thread):
    from tests.test_distributed import TORCHRUN, _log, _torchrun

    if TORCHRUN is None:
        pytest.skip("torchrun not found")
    rows = [{"question": f"Q{i}?", "answer": f"A{i}."} for i in range(40)]
    forget = write_jsonl(tmp_path / "forget.jsonl", rows)
    _torchrun(
        [
            "run",
            "--model",
            "tiny",
            "--forget",
            str(forget),
            "--method",
            "GA",
            "--max-length",
            "32",
            "--no-eval",
            "--out",
            str(tmp_path / "two"),
        ],
        tmp_path,
    )
    log = _log(tmp_path / "two" / "train_log.jsonl")
    assert len(log) == 6 and log[0]["lr"] == 1e-5  # batch 4 x accumulation 4 x 2 processes, no warm-up
    assert [r["epoch"] for r in log] == [0.8, 1.6, 2.4, 3.2, 4.0, 4.8]


# ------------------------------------------------------------------------------ 2. tokenisation


def _sentencepiece_tokenizer():
    from tokenizers import SentencePieceBPETokenizer
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "[INST] Who wrote the book? [/INST]",
        "The author wrote the book.",
        "The book is old.",
        "Who wrote it?",
        "[INST] Where was he born? [/INST]",
        "He was born in the city.",
    ] * 5
    sp = SentencePieceBPETokenizer()
    sp.train_from_iterator(corpus, vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_sentencepiece_answer_tokens_are_those_of_the_joint_string():
    """Llama-2: the answer after '[/INST]' is encoded within one string, so its first token has no
    '▁' word start (encoding the answer alone would give '▁The'); the prompt's tokens are masked."""
    tok = _sentencepiece_tokenizer()
    fmt = PromptFormat("llama2", tokenizer=tok)
    prompt, answer = fmt.prompt("Who wrote the book?"), "The author wrote the book."
    e = encode_qa(tok, prompt, fmt.answer_prefix + answer)
    joint = tok(prompt + answer)["input_ids"]
    n = len(encode_prompt(tok, prompt))
    assert e.input_ids == joint + [tok.eos_token_id]
    assert e.labels == [IGNORE_INDEX] * n + joint[n:] + [tok.eos_token_id]
    first = tok.convert_ids_to_tokens(e.labels[n])
    alone = tok.tokenize(answer)[0]
    assert alone.startswith("▁") and not first.startswith("▁"), (first, alone)


def test_byte_level_plain_prompt_scores_the_first_answer_token():
    """Byte-level BPE merges the space before the answer into its first token ('ĠThe'). With the
    built-in plain format the space belongs to the answer, so that token is scored; a custom
    template ending in a space is the official behaviour, which masks it with the prompt."""
    tok = build_tiny_tokenizer(["Question: Who wrote it?\nAnswer: The author wrote it."] * 4, vocab_size=300)
    answer = "The author wrote it."
    plain = PromptFormat("plain", tokenizer=tok)
    e = encode_qa(tok, plain.prompt("Who wrote it?"), plain.answer_prefix + answer)
    scored = [t for t in e.labels if t != IGNORE_INDEX]
    assert tok.decode(scored) == " " + answer + tok.eos_token
    official = PromptFormat("custom", template="Question: {question}\nAnswer: ", tokenizer=tok)
    o = encode_qa(tok, official.prompt("Who wrote it?"), official.answer_prefix + answer)
    assert o.input_ids == e.input_ids  # the same string, encoded the same
    scored = [t for t in o.labels if t != IGNORE_INDEX]
    assert (
        tok.decode(scored) == tok.decode(e.labels[len(e.labels) - len(scored) :])
        and len(scored) == len([t for t in e.labels if t != IGNORE_INDEX]) - 1
    )  # one token fewer: the merged 'ĠThe'


# ------------------------------------------------------------------------------ 3-4, 7. scenarios


def test_official_refusals_and_scenario_defaults(shared_data):
    from unlearn.data import read_refusals
    from unlearn.protocols import with_defaults as with_scenario_defaults

    tofu = with_scenario_defaults(Config(data=str(shared_data / "tofu")))
    assert (tofu.task_id, tofu.max_length, tofu.idk) == (1, 500, str(shared_data / "idontknow.jsonl"))
    assert len(read_refusals(tofu.idk)) == 100  # the official file's lines
    real = with_scenario_defaults(Config(data=str(shared_data / "real_world")))
    assert (real.task_id, real.max_length, real.idk) == (None, 300, str(shared_data / "idontknow.jsonl"))
    given = with_scenario_defaults(Config(data=str(shared_data / "real_world"), task_id=3, max_length=64, idk="x"))
    assert (given.task_id, given.max_length, given.idk) == (3, 64, "x")
    files = with_scenario_defaults(Config(forget="f.jsonl"))
    assert (files.task_id, files.max_length, files.idk) == (None, 500, None)


def test_the_real_world_unlearns_all_400_rows(shared_data):
    from unlearn.data import load_unlearning_data
    from unlearn.protocols import with_defaults as with_scenario_defaults

    c = with_scenario_defaults(Config(data=str(shared_data / "real_world")))
    data = load_unlearning_data(c.data, c.split, c.task_id)
    assert (len(data.forget), len(data.retain)) == (400, 400)


def test_me_forget_weight_per_scenario():
    """Official scripts: ME+GD forget_coeff 0.1 (tofu/me_gd.sh), 0.5 (real_world/me_gd.sh), 1.0
    (continual_tofu/me_gd.sh); every other method 1.0."""
    assert build_objective("ME+GD").forget_coeff == 0.1
    assert build_objective("ME+GD", scenario="real_world").forget_coeff == 0.5
    assert build_objective("ME+GD", scenario="continual").forget_coeff == 1.0
    assert build_objective("NPO+GD", scenario="continual").forget_coeff == 1.0
    assert build_objective("ME+GD", forget_coeff=0.3, scenario="continual").forget_coeff == 0.3


def test_continual_picks_the_continual_weight(tmp_path, monkeypatch, synth_dir):
    import unlearn.pipeline as pipeline
    from unlearn.continual import continual

    class Seen(Exception):
        pass

    def stop(cfg, **kw):
        seen.append(cfg)
        raise Seen

    seen = []
    monkeypatch.setattr(pipeline, "run", stop)
    with pytest.raises(Seen):
        continual(Config(model="tiny", data=str(synth_dir), method="ME+GD", eval=False, out=str(tmp_path)), "1")
    assert seen[0].forget_coeff == 1.0 and seen[0].mask is False


# ------------------------------------------------------------------------------ 5-6. evaluation sets


def test_real_world_cosine_reference_is_the_long_answer(shared_data):
    from unlearn.protocols.closer_look import load_eval_sets

    sets = {s.name: s for s in load_eval_sets(shared_data / "real_world")}
    forget = sets["Forget"]
    assert len(forget.rows) == 400
    assert forget.answers == [r["golden_answer"] for r in forget.rows]  # ROUGE, Entailment, NLLs
    assert forget.cosine_references == [r["answer"] for r in forget.rows]  # Cosine, as metrics.py does
    assert sum(a != b for a, b in zip(forget.answers, forget.cosine_references, strict=False)) > 300


def test_tofu_sets_are_cut_at_300_rows(shared_data):
    from unlearn.protocols.closer_look import tofu_sets

    sets = {s.name: s for s in tofu_sets(shared_data / "tofu", "forget10", 1)}
    assert len(sets["Forget"].rows) == 300  # the task has 400 rows; the official ds_size is 300
    assert len(sets["Retain"].rows) == 300 and len(sets["Real Authors"].rows) == 100
    assert len(sets["Real World"].rows) == 117


# ------------------------------------------------------------------------------ 8. LLMU


class _View:
    """Stands in for a BatchView: fixed NLLs and logits, to check how terms combine."""

    chunk = None  # whole logits

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.z, self.ref = torch.randn(1, 3, 5, generator=g), torch.randn(1, 3, 5, generator=g)
        self.batch = {"retain": {"attention_mask": torch.ones(1, 3, dtype=torch.long)}}

    def mean_nll(self, part):
        return {"forget": torch.tensor(2.0), "forget_mismatch": torch.tensor(3.0)}[part]

    def logits(self, part):
        return self.z

    def ref_logits(self, part):
        return self.ref


def test_llmu_is_ga_plus_a_regulariser_of_mismatch_and_kl():
    """trainer/losses.py: forget_loss = ga_loss; regularization_loss = mismatch_loss + kl_loss."""
    from unlearn.losses import kl

    v = _View()
    objective = build_objective("LLMU", forget_coeff=2.0, reg_coeff=3.0)
    loss, parts = objective(v)
    k = kl(v.z, v.ref, torch.ones(1, 3, dtype=torch.bool)).item()
    assert loss.item() == pytest.approx(2.0 * -2.0 + 3.0 * (3.0 + k))
    assert parts == pytest.approx({"LLMU forget term": -2.0, "LLMU regulariser": 3.0 + k})


# ------------------------------------------------------------------------------ 9. weight decay


def test_weight_decay_skips_biases_and_norms():
    tok = build_tiny_tokenizer(["a b c"], vocab_size=300)
    model = build_tiny_model(tok, hidden_size=16, num_layers=2, num_heads=2)
    decay, no_decay = decay_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.1.input_layernorm.weight",
        "model.layers.1.post_attention_layernorm.weight",
        "model.norm.weight",
    ]
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


# ------------------------------------------------------------------------------ 10. evaluation length


def test_answer_nlls_score_at_most_200_tokens_without_eos_when_cut():
    """metrics.py builds its NLL inputs with max_length = generation.max_length = 200: a longer
    prompt + answer is cut there and has no EOS label."""
    from unlearn.evaluation.scoring import answer_nlls

    long_answer = " ".join(["word"] * 400)
    tok = build_tiny_tokenizer(["Question: Q?\nAnswer: " + long_answer], vocab_size=300)
    fmt = PromptFormat("plain", tokenizer=tok)
    model = build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2).eval()
    got = answer_nlls(model, tok, fmt, ["Q?"], [long_answer])[0]
    ids = tok(fmt.prompt("Q?") + fmt.answer_prefix + long_answer)["input_ids"][:200]
    n = len(encode_prompt(tok, fmt.prompt("Q?")))
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), dim=-1)
    want = -sum(logp[t - 1, ids[t]].item() for t in range(n, 200)) / (200 - n)
    assert got == pytest.approx(want, rel=1e-5)


# ------------------------------------------------------------------------------ padding to 500


def _official_batch(tok, pairs, max_length, mask):
    """The official data module's batch (dataset/data_module.py, convert_raw_forget_data_to_model_format),
    built here from the tokenizer alone: the text ``tag + question + tag + tag + answer`` tokenised with
    special tokens, EOS padding to ``max_length`` with attention 0, labels the padded ids (mask false)
    or the ids, one EOS and -100 with the question's tokens -100 (mask true)."""
    ids, labels, attention = [], [], []
    for q, a in pairs:
        question = "Question: " + q + "\nAnswer:"
        encoded = tok(question + " " + a, add_special_tokens=True, max_length=max_length, truncation=True)
        n = len(encoded["input_ids"])
        pad = max_length - n
        row = encoded["input_ids"] + [tok.eos_token_id] * pad
        if mask:
            label = (
                list(encoded["input_ids"])
                if n == max_length
                else encoded["input_ids"] + [tok.eos_token_id] + [-100] * (pad - 1)
            )
            for i in range(len(tok.tokenize(question, add_special_tokens=True))):
                label[i] = -100
        else:
            label = row
        ids.append(row)
        labels.append(label)
        attention.append(encoded["attention_mask"] + [0] * pad)
    return torch.tensor(ids), torch.tensor(labels), torch.tensor(attention)


def _official_me(logits, labels):
    """trainer/losses.py get_me_loss: KL(softmax || uniform) per shifted position, over labels != -100."""
    v = logits.shape[-1]
    labels, logits = labels[:, 1:], logits[:, :-1, :]
    p = torch.softmax(logits, dim=-1).reshape(-1, v)
    keep = (labels != -100).reshape(-1)
    per = torch.nn.functional.kl_div((p + 1e-12).log(), torch.full_like(p, 1.0 / v), reduction="none").sum(-1)
    return (per * keep).sum() / keep.sum()


def _official_kl(logits, ref_logits):
    """trainer/losses.py kl_loss: kl_div(log p, log p_ref, batchmean, log_target) over every position."""
    v = logits.shape[-1]
    return torch.nn.functional.kl_div(
        torch.log_softmax(logits, -1).reshape(-1, v),
        torch.log_softmax(ref_logits, -1).reshape(-1, v),
        reduction="batchmean",
        log_target=True,
    )


def test_pad_to_reproduces_the_official_me_and_kl_over_padded_sequences():
    """`ME.pad_to=N` / `KL.pad_to=N` (and LLMU's KL): the official batches are padded to N with EOS
    and ME (with mask: false) and KL average over every position of them, padding included. The
    reference batch is built from the tokenizer as the official data module builds it (the EOS after
    the answer is padding there: attention 0), not from our encoding."""
    from unlearn.encoding import make_collate, pad_id
    from unlearn.methods import BatchView
    from unlearn.reference import Reference

    pairs = [("Who wrote it?", "The author did."), ("Where?", "Here.")]
    tok = build_tiny_tokenizer(["Who wrote it? The author did.", "Where? Here."], vocab_size=300)
    fmt = PromptFormat("plain", tokenizer=tok)
    model = build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2).eval()
    ref = build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2, seed=1).eval()
    assert model.config.eos_token_id == tok.eos_token_id
    with torch.no_grad():  # float64 and peaked next-token distributions: the attended EOS's 2e-5 shows
        for m in (model, ref):
            m.double().get_output_embeddings().weight.mul_(8)
    items = [
        {
            "index": i,
            "forget": encode_qa(tok, fmt.prompt(q), " " + a, mask_question=False),
            "retain": encode_qa(tok, fmt.prompt(q), " " + a),
            "forget_mismatch": encode_qa(tok, fmt.prompt(q), " " + a),
        }
        for i, (q, a) in enumerate(pairs)
    ]
    batch = make_collate(pad_id(tok))(items)
    view = BatchView(model, batch, Reference(model=ref))
    n = 40
    ids, labels, attention = _official_batch(tok, pairs, n, mask=False)
    r_ids, _, r_attention = _official_batch(tok, pairs, n, mask=True)
    with torch.no_grad():
        want_me = _official_me(model(input_ids=ids, attention_mask=attention).logits, labels)
        got_me = build_objective("ME", {"pad_to": n}).forget.fn(view, pad_to=n)
        assert got_me.item() == pytest.approx(want_me.item(), rel=1e-6)
        real_tokens = build_objective("ME").forget.fn(view, pad_to=0).item()
        assert not math.isclose(got_me.item(), real_tokens, rel_tol=1e-5)  # the padding positions count
        want_kl = _official_kl(
            model(input_ids=r_ids, attention_mask=r_attention).logits,
            ref(input_ids=r_ids, attention_mask=r_attention).logits,
        )
        got_kl = build_objective("GA+KL").reg.fn(view, pad_to=n)
        assert got_kl.item() == pytest.approx(want_kl.item(), rel=1e-6)
        llmu = build_objective("LLMU", {"pad_to": n})
        mismatch = view.mean_nll("forget_mismatch")
        assert (llmu.reg.fn(view, **llmu.reg_args) - mismatch).item() == pytest.approx(want_kl.item(), rel=1e-6)
        # a sequence cut at N (no padding) keeps every position attended, as officially
        cut = 6
        ids, labels, attention = _official_batch(tok, pairs, cut, mask=False)
        assert attention.all()
        want_cut = _official_me(model(input_ids=ids, attention_mask=attention).logits, labels)
        assert build_objective("ME").forget.fn(view, pad_to=cut).item() == pytest.approx(want_cut.item(), rel=1e-6)


def test_a_run_on_the_official_data_records_its_scenario_defaults(shared_data, tmp_path):
    import yaml

    from unlearn.__main__ import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--model",
                "tiny",
                "--data",
                str(shared_data / "tofu"),
                "--method",
                "IDK+AP",
                "--epochs",
                "1",
                "--max-length",
                "256",
                "--no-eval",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["idk"] == str(shared_data / "idontknow.jsonl") and saved["task_id"] == 1
    assert saved["method_args"] == {"AP.beta": 0.1} and saved["forget_coeff"] == 1.0
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 1  # floor(1 x 40 / 32)
