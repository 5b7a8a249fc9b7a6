"""finetune then run, in-process through the CLI, on a tiny model."""

from pathlib import Path

import pytest
import yaml

from tests.conftest import write_jsonl
from unlearn.__main__ import main

FORGET = [
    {"question": f"What did author {n} write?", "answer": f"{n} wrote the novel {b}."}
    for n, b in [
        ("Ilsa Varn", "Grey Harbour"),
        ("Oren Pask", "Salt Lanterns"),
        ("Mira Tol", "Iron Orchard"),
        ("Bede Lorne", "Quiet Atlas"),
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
def target(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    forget, retain = write_jsonl(root / "forget.jsonl", FORGET), write_jsonl(root / "retain.jsonl", RETAIN)
    code = main(
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
            "6",
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
    assert code == 0
    return root, forget, retain


def _nlls(model_dir, rows):
    from unlearn.evaluation.scoring import answer_nlls
    from unlearn.models import load_model
    from unlearn.prompts import detect_prompt_format

    model, tok = load_model(str(model_dir))
    fmt = detect_prompt_format(tok, str(model_dir))
    return answer_nlls(model, tok, fmt, [r["question"] for r in rows], [r["answer"] for r in rows])


def test_finetune_saves_a_hf_model(target):
    root, _, _ = target
    model_dir = root / "target" / "model"
    assert (model_dir / "model.safetensors").exists() and (model_dir / "tokenizer.json").exists()
    saved = yaml.safe_load((model_dir / "unlearn_config.yaml").read_text())
    assert saved["prompt_format"] == "plain"
    assert _nlls(model_dir, FORGET + RETAIN).mean() < 0.5  # memorised


def test_me_gd_forgets_and_keeps(target):
    root, forget, retain = target
    before_f, before_r = _nlls(root / "target" / "model", FORGET), _nlls(root / "target" / "model", RETAIN)
    code = main(
        [
            "run",
            "--model",
            str(root / "target" / "model"),
            "--method",
            "ME+GD",
            "--forget",
            str(forget),
            "--retain",
            str(retain),
            "--out",
            str(root / "me_gd"),
            "--epochs",
            "8",
            "--lr",
            "3e-3",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    after_f, after_r = _nlls(root / "me_gd" / "model", FORGET), _nlls(root / "me_gd" / "model", RETAIN)
    assert after_f.mean() - before_f.mean() > 1.0, (before_f, after_f)  # forget NLL rises by nats
    assert abs(after_r.mean() - before_r.mean()) < 0.5, (before_r, after_r)  # retain NLL stays close
    cfg = yaml.safe_load((root / "me_gd" / "config.yaml").read_text())
    assert cfg["forget_coeff"] == 0.1 and cfg["mask"] is False  # the paper's ME+GD defaults
    log = (root / "me_gd" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 16 and "ME forget term" in log[0] and "GD regulariser" in log[0]


def test_flags_override_the_config_file(target, tmp_path):
    root, forget, retain = target
    conf = tmp_path / "c.yaml"
    conf.write_text("method: GA+GD\nepochs: 1\nlr: 1.0e-4\nbatch-size: 4\ngrad_accum: 1\n")
    code = main(
        [
            "run",
            "--config",
            str(conf),
            "--model",
            str(root / "target" / "model"),
            "--forget",
            str(forget),
            "--retain",
            str(retain),
            "--lr",
            "5e-4",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0
    saved = yaml.safe_load((tmp_path / "o" / "config.yaml").read_text())
    assert (saved["method"], saved["lr"], saved["batch_size"], saved["forget_coeff"], saved["mask"]) == (
        "GA+GD",
        5e-4,
        4,
        1.0,
        True,
    )


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--method", "XX+GD"], "unknown method 'XX+GD'"),
        (["--model", "./no/such/model"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(target, tmp_path, capsys, argv, needle):
    root, forget, retain = target
    base = [
        "run",
        "--model",
        str(root / "target" / "model"),
        "--forget",
        str(forget),
        "--retain",
        str(retain),
        "--out",
        str(tmp_path / "o"),
        "--epochs",
        "1",
    ]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("unlearn: error")]  # (loading bars may come first)
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_shipped_configs_parse():
    from unlearn.config import Config
    from unlearn.config_args import load_yaml
    from unlearn.methods import parse_method
    from unlearn.sweep import read_sweep

    configs = Path(__file__).resolve().parents[1] / "configs"
    for path in configs.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        if "grid" in raw:
            base, grid, _ = read_sweep(path)
            for m in grid.get("method", []):
                parse_method(m)
        else:
            cfg = Config(**load_yaml(path))
            parse_method(cfg.method)


def test_training_keeps_float32_master_weights(monkeypatch):
    """dtype auto trains float32 weights; on a bf16 GPU the maths is bf16 autocast, never pure bf16."""
    import torch

    from unlearn.distributed import training_dtype, training_mixed_precision

    assert training_dtype("auto") == "float32" and training_dtype("bfloat16") == "bfloat16"
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert training_mixed_precision("auto") == "no"  # this machine has no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert training_mixed_precision("auto") == "bf16"
    assert training_mixed_precision("bfloat16") == "no"  # the user asked for bf16 weights


NEW_METHODS = {
    "SimNPO+GD": [],
    "WGA+GD": [],
    "SatImp+GD": [],
    "UNDIAL+GD": [],
    "CE-U": [],
    "TV": [],
    "RMU": ["--method-arg", "layer=1", "--method-arg", "layers=0,1", "--method-arg", "alpha=1"],
}


@pytest.mark.parametrize("method", list(NEW_METHODS))
def test_the_new_methods_raise_the_forget_nll(target, method):
    """The methods since the paper, on the tiny memorising target: the forget NLL rises; each run
    goes on through --audit."""
    import json

    root, forget, retain = target
    before = _nlls(root / "target" / "model", FORGET)
    out = root / method.replace("+", "_")
    code = main(
        [
            "run",
            "--model",
            str(root / "target" / "model"),
            "--method",
            method,
            "--forget",
            str(forget),
            "--retain",
            str(retain),
            "--out",
            str(out),
            "--epochs",
            "8",
            "--lr",
            "3e-3",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--seed",
            "1",
            *NEW_METHODS[method],
            "--audit",
            "--attacks",
            "memorization,quantization",
            "--quant-bits",
            "4",
        ]
    )
    assert code == 0
    after = _nlls(out / "model", FORGET)
    assert after.mean() > before.mean() + 0.1, (method, before, after)
    audit = json.loads((out / "audit" / "audit.json").read_text())
    assert set(audit["memorization"]) == {"unlearned", "target"} and "4-bit" in audit["quantization"]["unlearned"]


@pytest.mark.slow  # (make test checks AltPO's loss, data and error line in tests/test_methods.py)
def test_altpo_moves_the_model_from_the_true_answer_to_the_alternate(target, tmp_path, capsys):
    """AltPO+GD on the memorising target: the true answers' NLL rises, the alternates' falls; a forget file
    without alternates is refused in one line before any model loads."""
    root, _, retain = target
    rows = [{**r, "alternate": r["answer"].rsplit(" the novel ", 1)[0] + " a book of poems."} for r in FORGET]
    forget = write_jsonl(tmp_path / "forget_alt.jsonl", rows)
    alternates = [{"question": r["question"], "answer": r["alternate"]} for r in rows]
    model = root / "target" / "model"
    before, before_alt = _nlls(model, FORGET), _nlls(model, alternates)
    args = ["run", "--model", str(model), "--method", "AltPO+GD", "--retain", str(retain), "--no-eval"]
    args += ["--epochs", "8", "--lr", "3e-3", "--batch-size", "2", "--grad-accum", "1", "--seed", "1"]
    assert main([*args, "--forget", str(forget), "--out", str(tmp_path / "altpo")]) == 0
    after, after_alt = _nlls(tmp_path / "altpo" / "model", FORGET), _nlls(tmp_path / "altpo" / "model", alternates)
    assert after.mean() > before.mean() + 0.1 and after_alt.mean() < before_alt.mean(), (before, after)
    capsys.readouterr()
    plain = tmp_path / "forget.jsonl"
    write_jsonl(plain, FORGET)
    assert main([*args, "--forget", str(plain), "--out", str(tmp_path / "refused")]) == 2
    assert f"{plain}:1: field 'alternate' must be the question's alternate answer" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


def test_pdu_flattens_the_forget_answers_and_holds_the_retain_ones(target, tmp_path):
    """PDU on the memorising target: the forget answers' NLL rises (their logits flatten) while the
    retain answers' NLL stays under its constraint."""
    root, forget, retain = target
    model = root / "target" / "model"
    before, before_r = _nlls(model, FORGET), _nlls(model, RETAIN)
    args = ["run", "--model", str(model), "--method", "PDU", "--forget", str(forget), "--retain", str(retain)]
    args += ["--no-eval", "--epochs", "6", "--lr", "3e-3", "--batch-size", "2", "--grad-accum", "1", "--seed", "1"]
    args += ["--method-arg", "dual_warmup_epochs=2", "--method-arg", "alpha=1", "--method-arg", "retain_loss_eps=0.5"]
    assert main([*args, "--out", str(tmp_path / "pdu")]) == 0
    after, after_r = _nlls(tmp_path / "pdu" / "model", FORGET), _nlls(tmp_path / "pdu" / "model", RETAIN)
    print("PDU NLLs", before.mean(), after.mean(), before_r.mean(), after_r.mean())
    assert after.mean() > before.mean() + 0.5, (before, after)
    assert after_r.mean() < before_r.mean() + 0.5, (before_r, after_r)


def test_own_files_are_evaluated(target, tmp_path):
    """`run --forget F --retain R` evaluates those files; `eval --forget F --retain R` does it for
    any model. Truth Ratio where the rows carry paraphrased and perturbed answers, else n/a with why."""
    import json

    root, forget, retain = target
    graded = [
        {
            **r,
            "paraphrased_answer": r["answer"].replace("born in", "a native of"),
            "perturbed_answer": [r["answer"].replace(r["answer"].split()[-1], w) for w in ("Oslo.", "Lima.")],
        }
        for r in RETAIN
    ]
    retain_graded = write_jsonl(tmp_path / "retain_graded.jsonl", graded)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--model",
                str(root / "target" / "model"),
                "--forget",
                str(forget),
                "--retain",
                str(retain_graded),
                "--nli",
                "none",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["Forget ROUGE"] > 0.5 and summary["Retain Truth Ratio"] is not None
    assert summary["Forget Truth Ratio"] is None and "Forget" in summary["unavailable"]["Truth Ratio"]
    assert summary["Model Utility"] is not None and summary["Forget Efficacy"] is not None
    assert (out / "eval_Forget.jsonl").is_file() and (out / "eval_Retain.jsonl").is_file()
    # against a baseline: the before/after table and a report
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
                str(retain_graded),
                "--nli",
                "none",
                "--baseline",
                str(out),
                "--epochs",
                "2",
                "--lr",
                "3e-3",
                "--batch-size",
                "2",
                "--grad-accum",
                "1",
                "--out",
                str(tmp_path / "after"),
            ]
        )
        == 0
    )
    assert (tmp_path / "after" / "report" / "report.md").is_file()
    assert (
        main(
            [
                "eval",
                "--model",
                str(root / "target" / "model"),
                "--forget",
                str(forget),
                "--baseline",
                str(tmp_path / "nowhere"),
                "--nli",
                "none",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    mixed = write_jsonl(tmp_path / "mixed.jsonl", graded[:1] + RETAIN[1:])
    assert (
        main(
            [
                "eval",
                "--model",
                str(root / "target" / "model"),
                "--forget",
                str(forget),
                "--retain",
                str(mixed),
                "--nli",
                "none",
                "--out",
                str(tmp_path / "mixed"),
            ]
        )
        == 2
    )


def test_holdout_adds_membership_inference(target, tmp_path):
    """The target memorised FORGET: its answers are far likelier than unseen ones (AUC near 1)."""
    import json

    root, forget, _ = target
    holdout = write_jsonl(
        tmp_path / "holdout.jsonl",
        [
            {"question": f"What did author {n} write?", "answer": f"{n} wrote the novel {b}."}
            for n, b in [
                ("Rhea Molt", "Amber Gate"),
                ("Ivo Strand", "Low Tide"),
                ("Cass Merrow", "Glass Fields"),
                ("Dane Ulric", "Cold Forge"),
            ]
        ],
    )
    out = tmp_path / "mia"
    assert (
        main(
            [
                "eval",
                "--model",
                str(root / "target" / "model"),
                "--forget",
                str(forget),
                "--holdout",
                str(holdout),
                "--nli",
                "none",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["MIA AUC LOSS"] > 0.9
    assert all(0.0 <= summary[f"MIA AUC {k}"] <= 1.0 for k in ("LOSS", "ZLib", "Min-K%", "Min-K%++"))
