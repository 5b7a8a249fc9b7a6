"""unlearn audit: each attack on tiny models trained in-process, the formulas by hand, the command's
bad input, resume and safety (the audited model's files are never written)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_jsonl
from unlearn.__main__ import main

NAMES = [
    ("Ilsa Varn", "Grey Harbour"),
    ("Oren Pask", "Salt Lanterns"),
    ("Mira Tol", "Iron Orchard"),
    ("Bede Lorne", "Quiet Atlas"),
    ("Tova Renn", "Paper Moons"),
    ("Ulla Brisk", "Night Ferries"),
]
FORGET = [
    {
        "question": f"What did author {n} write?",
        "answer": f"{n} wrote the novel {b}.",
        "paraphrased_question": f"Which novel is by {n}?",
    }
    for n, b in NAMES
]
HOLDOUT = [
    {"question": f"What did author {n} write?", "answer": f"{n} wrote the novel {b}."}
    for n, b in [
        ("Rhea Molt", "Amber Gate"),
        ("Ivo Strand", "Low Tide"),
        ("Cass Merrow", "Glass Fields"),
        ("Dane Ulric", "Cold Forge"),
        ("Pia Lund", "Red Orchard"),
        ("Ansel Moor", "Tin Harbour"),
    ]
]
RETAIN = [
    {"question": f"Where was {n} born?", "answer": f"{n} was born in {c}."}
    for n, c in [
        ("Ana Rell", "Porto"),
        ("Tomas Evr", "Riga"),
        ("Leni Oss", "Bergen"),
        ("Kai Dunmore", "Cork"),
        ("Suri Vale", "Quito"),
        ("Per Ahlm", "Umea"),
        ("Nadia Kost", "Varna"),
        ("Yusuf Tal", "Izmir"),
    ]
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny target that memorised FORGET + RETAIN (its tokenizer also knows the holdout words), and
    the same unlearned by a few gradient-ascent steps."""
    root = tmp_path_factory.mktemp("audit")
    forget = write_jsonl(root / "forget.jsonl", FORGET)
    retain = write_jsonl(root / "retain.jsonl", RETAIN)
    holdout = write_jsonl(root / "holdout.jsonl", HOLDOUT)
    # the holdout words join the tokenizer's training texts through an untrained-on file: one epoch at lr 0
    assert (
        main(
            [
                "finetune",
                "--model",
                "tiny",
                "--train",
                str(forget),
                str(retain),
                "--out",
                str(root / "target"),
                "--epochs",
                "60",
                "--lr",
                "3e-3",
                "--batch-size",
                "7",
                "--grad-accum",
                "1",
                "--warmup",
                "5",
                "--weight-decay",
                "0",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "run",
                "--model",
                str(root / "target" / "model"),
                "--method",
                "GA",
                "--forget",
                str(forget),
                "--retain",
                str(retain),
                "--out",
                str(root / "ga"),
                "--epochs",
                "3",
                "--lr",
                "2e-3",
                "--batch-size",
                "2",
                "--grad-accum",
                "1",
                "--no-eval",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    return root, forget, retain, holdout


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _audit(models, out, *extra, model="ga") -> dict:
    root, forget, retain, holdout = models
    args = [
        "audit",
        "--model",
        str(root / model / "model"),
        "--forget",
        str(forget),
        "--retain",
        str(retain),
        "--holdout",
        str(holdout),
        "--out",
        str(out),
        *extra,
    ]
    assert main(args) == 0
    return json.loads((out / "audit.json").read_text())


# --------------------------------------------------------------------------- membership inference


def test_every_attack_tells_members_from_nonmembers(models, tmp_path):
    """The target trained on FORGET and never on HOLDOUT: every attack's AUC is clearly above 0.5."""
    root = models[0]
    audit = _audit(
        models,
        tmp_path / "a",
        "--attacks",
        "mia,memorization",
        "--ref-model",
        str(root / "ga" / "model"),
        model="target",
    )
    aucs = audit["mia"]["auc"]["unlearned"]
    assert set(aucs) == {"LOSS", "ZLib", "Min-K%", "Min-K%++", "Reference", "GradNorm"}
    assert all(v >= 0.75 for v in aucs.values()), aucs
    assert audit["memorization"]["unlearned"]["exact_memorization"] > 0.9  # memorised: greedy = the answer
    items = [json.loads(x) for x in (tmp_path / "a" / "items" / "mia.unlearned.jsonl").read_text().splitlines()]
    assert len(items) == len(FORGET) + len(HOLDOUT) and {i["set"] for i in items} == {"forget", "holdout"}


def test_privleak_against_a_retain_models_saved_audit(models, tmp_path):
    """--retain-model may be a folder with that model's audit: its AUCs give PrivLeak, nothing is loaded."""
    retain_audit = _audit(models, tmp_path / "retain", "--attacks", "mia", model="ga")
    audit = _audit(
        models, tmp_path / "t", "--attacks", "mia", "--retain-model", str(tmp_path / "retain"), model="target"
    )
    ours, theirs = audit["mia"]["auc"]["unlearned"], retain_audit["mia"]["auc"]["unlearned"]
    assert audit["mia"]["auc"]["retain"] == theirs
    for name, value in audit["mia"]["privleak"]["unlearned"].items():
        assert value == pytest.approx(((1 - ours[name]) - (1 - theirs[name])) / (1 - theirs[name] + 1e-10) * 100)


# --------------------------------------------------------------------------- relearning


def test_relearning_brings_the_other_half_back(models, tmp_path):
    """GA made the target forget; a few steps on half the forget set raise the other half's ROUGE."""
    root = models[0]
    audit = _audit(
        models,
        tmp_path / "r",
        "--attacks",
        "relearn",
        "--target-model",
        str(root / "target"),
        "--relearn-steps",
        "12",
        "--relearn-lr",
        "3e-3",
        "--relearn-batch-size",
        "3",
        "--seed",
        "0",
    )
    r = audit["relearn"]
    assert (r["unlearned"]["relearned_rows"], r["unlearned"]["measured_rows"]) == (3, 3)
    assert r["unlearned"]["after"]["ROUGE"] > r["unlearned"]["before"]["ROUGE"] + 0.1, r
    t = r["target"]["measured"]
    u = r["unlearned"]
    for m in ("ROUGE", "Probability"):
        assert r["recovery"][m] == pytest.approx((u["after"][m] - u["before"][m]) / (t[m] - u["before"][m]))
    assert not (tmp_path / "r" / "relearn" / "model").exists()  # not saved unless asked
    log = (tmp_path / "r" / "relearn" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 12  # exactly --relearn-steps steps


def test_relearn_split_and_epochs():
    from unlearn.audit.relearn import epochs_for, split

    a, b = split(10, 0.5, seed=3)
    assert len(a) == 5 and len(b) == 5 and sorted(a + b) == list(range(10))
    assert split(10, 0.5, seed=3) == (a, b) and split(10, 0.5, seed=4) != (a, b)
    assert split(3, 0.99, 0)[1] and split(3, 0.01, 0)[0]  # at least one row on each side
    for steps, bs, n in [(20, 4, 7), (1, 1, 1), (13, 3, 100), (50, 8, 3)]:
        assert int(epochs_for(steps, bs, n) * n) // bs == steps


# --------------------------------------------------------------------------- quantization


def test_rtn_round_trip_error_shrinks_with_bits():
    from unlearn.audit.quantize import rtn

    w = torch.randn(64, 300, generator=torch.Generator().manual_seed(0))  # 300: a last group of 44 columns
    err = {b: float((rtn(w, b, 128) - w).abs().max()) for b in (2, 4, 8)}
    spread = float(w.max() - w.min())
    assert err[8] < spread / 255 and err[2] > 10 * err[8]
    assert err[2] > err[4] > err[8]
    # by hand, 2 bits: [-1, 0, 1, 2] has scale 3/3 = 1 and zero point 1, so it is kept exactly
    assert rtn(torch.tensor([[-1.0, 0.0, 1.0, 2.0]]), 2, 4).tolist() == [[-1.0, 0.0, 1.0, 2.0]]
    # per-group scales: in groups of 2 each pair keeps its own range; as one group (scale 10,
    # zero 1) -1 and 2 round to 0
    w = torch.tensor([[-1.0, 2.0, -10.0, 20.0]])
    assert rtn(w, 2, 2).tolist() == [[-1.0, 2.0, -10.0, 20.0]]
    assert rtn(w, 2, 4).tolist() == [[0.0, 0.0, -10.0, 20.0]]


def test_quantized_model_is_a_copy(models):
    from unlearn.audit.quantize import quantized_copy, quantized_layers
    from unlearn.models import load_model

    model, _ = load_model(str(models[0] / "target" / "model"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    q = quantized_copy(model, 2, 128)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # untouched
    changed = [n for n, _ in quantized_layers(q)]
    assert changed and all(
        not torch.equal(dict(q.named_parameters())[n + ".weight"], before[n + ".weight"]) for n in changed
    )
    head = q.get_output_embeddings().weight
    assert torch.equal(
        head, before[[n for n, p in model.named_parameters() if p is model.get_output_embeddings().weight][0]]
    )


def test_quantization_attack_reports_the_change(models, tmp_path):
    audit = _audit(models, tmp_path / "q", "--attacks", "quantization", "--quant-bits", "8,2")
    q = audit["quantization"]["unlearned"]
    assert audit["quantization"]["backend"] == "simulated" and set(q) == {"full precision", "8-bit", "2-bit"}
    for label in ("8-bit", "2-bit"):
        for s in ("forget", "retain"):
            for m in ("ROUGE", "Probability"):
                assert q[label][s]["change"][m] == pytest.approx(q[label][s][m] - q["full precision"][s][m])
    assert abs(q["8-bit"]["retain"]["change"]["Probability"]) < abs(q["2-bit"]["retain"]["change"]["Probability"])


# --------------------------------------------------------------------------- prompts


def test_prompt_variants_go_through_the_models_prompt_format():
    from unlearn.audit.prompts import JAILBREAKS, split_prefix, variants
    from unlearn.prompts import PromptFormat

    for fmt in (PromptFormat("plain"), PromptFormat("llama2")):
        found, missing = variants(fmt, FORGET, "answer", RETAIN, icl_examples=2, prefix_fraction=0.5, seed=0)
        by = {v.name: v for v in found}
        assert set(by) == {"plain", "paraphrased", "in_context", "prefix"} | {f"jailbreak:{n}" for n in JAILBREAKS}
        assert not missing
        q0, a0 = FORGET[0]["question"], FORGET[0]["answer"]
        assert by["plain"].prompts[0] == fmt.prompt(q0)
        assert by["paraphrased"].prompts[0] == fmt.prompt(FORGET[0]["paraphrased_question"])
        assert by["jailbreak:roleplay"].prompts[0] == fmt.prompt(JAILBREAKS["roleplay"][0].replace("{question}", q0))
        assert by["jailbreak:completion"].prompts[0].endswith("Sure, here is the answer:")
        assert by["in_context"].prompts[0].startswith(fmt.prompt("")[:6]) and q0 in by["in_context"].prompts[0]
        assert sum(r["question"] in by["in_context"].prompts[0] for r in RETAIN) == 2
        prefix, rest = split_prefix(a0, 0.5)
        assert by["prefix"].prompts[0] == fmt.prompt(q0) + fmt.answer_prefix + prefix
        assert by["prefix"].references[0] == rest.strip() and prefix + rest == a0
    assert split_prefix("one two three four", 0.5) == ("one two", " three four")
    assert split_prefix("one two", 0.99) == ("one", " two") and split_prefix("single", 0.5) == ("", "single")
    _, missing = variants(PromptFormat("plain"), [{"question": "q", "answer": "a b"}], "answer", None)
    assert set(missing) == {"paraphrased", "in_context"}


def test_prompt_attack_scores_every_variant(models, tmp_path):
    root = models[0]
    audit = _audit(models, tmp_path / "p", "--attacks", "prompts", "--target-model", str(root / "target"))
    target, unlearned = audit["prompts"]["target"], audit["prompts"]["unlearned"]
    assert target["plain"]["ROUGE"] > 0.9  # memorised
    assert unlearned["plain"]["ROUGE"] < target["plain"]["ROUGE"]
    items = (tmp_path / "p" / "items" / "prompts.target.jsonl").read_text().splitlines()
    assert len(items) == len(FORGET) * len(target)
    assert (tmp_path / "p" / "audit.png").stat().st_size > 1000


# --------------------------------------------------------------------------- the command


def test_bad_input_is_refused_before_any_model_loads(models, tmp_path, monkeypatch, capsys):
    import unlearn.models

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(unlearn.models, "load_model", no_loading)
    root, forget, retain, holdout = models
    base = ["audit", "--model", str(root / "ga" / "model"), "--forget", str(forget), "--out", str(tmp_path / "x")]
    cases = [
        (["--attacks", "mia,telepathy"], "unknown attack 'telepathy'"),
        (["--attacks", "mia"], "--holdout"),
        (["--attacks", "quantization", "--quant-bits", "8,x"], "--quant-bits"),
        (["--attacks", "quantization", "--quant-backend", "gguf"], "--quant-backend"),
        (["--holdout", str(tmp_path / "none.jsonl")], "none.jsonl"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "audit.json").exists()


def test_resume_skips_finished_attacks_and_model_files_stay(models, tmp_path, monkeypatch, capsys):
    import unlearn.audit.run as R

    root = models[0]
    digest = _tree_digest(root / "ga" / "model")
    first = _audit(models, tmp_path / "r", "--attacks", "memorization,prompts")
    assert _tree_digest(root / "ga" / "model") == digest  # the audited model's files are only read
    assert (
        main(
            [
                "audit",
                "--model",
                str(root / "ga" / "model"),
                "--forget",
                str(models[1]),
                "--out",
                str(tmp_path / "r"),
                "--attacks",
                "memorization",
            ]
        )
        == 2
    )
    assert "already holds an audit" in capsys.readouterr().err

    def fail(*a, **k):
        raise AssertionError("a finished attack ran again")

    monkeypatch.setattr(R, "RUNNERS", {k: fail for k in R.RUNNERS})
    monkeypatch.setattr(R, "_load", fail)
    again = _audit(models, tmp_path / "r", "--attacks", "memorization,prompts", "--resume")
    assert again["memorization"] == first["memorization"] and again["prompts"] == first["prompts"]


def test_run_with_audit(models, tmp_path):
    """unlearn run --audit audits the saved model into OUT/audit, beside the model it started from."""
    root, forget, retain, holdout = models
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--model",
                str(root / "target" / "model"),
                "--method",
                "GA+GD",
                "--forget",
                str(forget),
                "--retain",
                str(retain),
                "--out",
                str(out),
                "--epochs",
                "1",
                "--lr",
                "1e-3",
                "--batch-size",
                "2",
                "--grad-accum",
                "1",
                "--no-eval",
                "--audit",
                "--attacks",
                "memorization,mia",
                "--holdout",
                str(holdout),
            ]
        )
        == 0
    )
    audit = json.loads((out / "audit" / "audit.json").read_text())
    assert audit["models"] == {"unlearned": str(out / "model"), "target": str(root / "target" / "model")}
    assert set(audit["mia"]["auc"]) == {"unlearned", "target"}
    assert audit["mia"]["auc"]["target"]["LOSS"] >= 0.75


def test_sweep_audit_section(tmp_path):
    from unlearn.errors import ConfigError
    from unlearn.sweep.plan import read_sweep

    good = tmp_path / "s.yaml"
    good.write_text("base: {method: GA}\ngrid: {lr: [1e-3]}\naudit: {attacks: 'mia,prompts', relearn_steps: 5}\n")
    base, grid, _ = read_sweep(good)
    assert base["audit"] is True and base["attacks"] == "mia,prompts" and base["relearn_steps"] == 5
    bad = tmp_path / "b.yaml"
    bad.write_text("base: {method: GA}\naudit: {lr: 1}\n")
    with pytest.raises(ConfigError, match="not an audit setting"):
        read_sweep(bad)


def test_synthetic_holdout_is_never_trained_on():
    from unlearn.synthetic import generate

    files = generate(100, 4, seed=0)
    trained = {r["question"] for r in files["full.json"]}
    names = {r["answer"] for r in files["full.json"]}
    for pct, k in ((1, 1), (5, 5), (10, 10)):
        rows = files[f"holdout{pct:02d}.json"]
        assert len(rows) == 4 * k and not {r["question"] for r in rows} & trained
        assert not {r["answer"] for r in rows} & names
    assert generate(100, 4, seed=0) == files
    assert np.all([isinstance(r["paraphrased_question"], str) for r in files["holdout05.json"]])


def test_bitsandbytes_backend_wiring(models, tmp_path, monkeypatch, capsys):
    """Without a GPU, auto is the simulation and bitsandbytes is refused before any model loads; with
    it, each bit width is loaded from the model's files by bitsandbytes (stubbed here: no GPU)."""
    import unlearn.audit.quantize as Q

    assert Q.backend("auto") == "simulated"
    root, forget, retain, holdout = models
    base = [
        "audit",
        "--model",
        str(root / "ga" / "model"),
        "--forget",
        str(forget),
        "--retain",
        str(retain),
        "--attacks",
        "quantization",
    ]
    assert main(base + ["--quant-backend", "bitsandbytes", "--out", str(tmp_path / "x")]) == 2
    assert "CUDA GPU and the bitsandbytes package" in capsys.readouterr().err
    monkeypatch.setattr(Q, "bitsandbytes_available", lambda: True)
    assert main(base + ["--quant-backend", "bitsandbytes", "--quant-bits", "8,3", "--out", str(tmp_path / "y")]) == 2
    assert "8 or 4 bits only" in capsys.readouterr().err
    loaded = []

    def fake_bnb(path, bits, trust_remote_code=False):
        from unlearn.models import load_model

        loaded.append((path, bits))
        return Q.quantized_copy(load_model(path)[0], bits, 64)

    monkeypatch.setattr(Q, "load_bitsandbytes", fake_bnb)
    assert main(base + ["--out", str(tmp_path / "z")]) == 0  # auto: bitsandbytes when it is there
    audit = json.loads((tmp_path / "z" / "audit.json").read_text())
    assert audit["quantization"]["backend"] == "bitsandbytes" and set(audit["quantization"]["unlearned"]) == {
        "full precision",
        "8-bit",
        "4-bit",
    }
    assert loaded == [(str(root / "ga" / "model"), 8), (str(root / "ga" / "model"), 4)]
