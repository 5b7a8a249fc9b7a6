"""Bad input: one line naming the file, line and field; no traceback; exit 2; and, when the input
alone is at fault, before any model is loaded. ``--debug`` shows the traceback instead."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from unlearn.__main__ import main

GOOD = [{"question": f"Who wrote book {i}?", "answer": f"Writer {i} wrote book {i}."} for i in range(4)]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, synth_dir):
    """A workspace of good and bad files, built once."""
    d = tmp_path_factory.mktemp("bad")
    write_jsonl(d / "good.jsonl", GOOD)
    lines = [json.dumps(r) for r in GOOD]
    (d / "malformed.jsonl").write_text(lines[0] + "\n" + '{"question": "Who?", "answer": \n', encoding="utf-8")
    (d / "missing.jsonl").write_text("\n".join(lines[:2] + ['{"question": "Who?"}']) + "\n", encoding="utf-8")
    (d / "mistyped.jsonl").write_text('{"question": "Who?", "answer": 5}\n', encoding="utf-8")
    (d / "not_object.jsonl").write_text(lines[0] + "\n[1, 2]\n", encoding="utf-8")
    (d / "empty.jsonl").write_text("\n  \n", encoding="utf-8")
    (d / "latin1.jsonl").write_bytes(lines[0].encode() + b'\n{"question": "caf\xe9?", "answer": "yes"}\n')
    (d / "unknown_key.yaml").write_text("lr: 0.001\nlerning_rate: 0.1\n", encoding="utf-8")
    (d / "bad_value.yaml").write_text("lr: fast\n", encoding="utf-8")
    (d / "beta.yaml").write_text("method: NPO+GD\nbeta: 0.2\n", encoding="utf-8")
    for name, edit in (("no_perturbed", _drop_perturbed), ("uneven", _uneven_perturbed)):
        shutil.copytree(synth_dir, d / name)
        path = d / name / "forget01_perturbed.json"
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
        edit(rows)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _model_without_eos(d / "no_eos_model")
    (d / "resume_out").mkdir()
    (d / "task_float.yaml").write_text("task_id: 1.7\n", encoding="utf-8")
    (d / "maybe.yaml").write_text("overwrite: maybe\n", encoding="utf-8")
    shutil.copytree(synth_dir, d / "subset")  # a perturbed file with only some of the task's rows
    path = d / "subset" / "forget01_perturbed.json"
    path.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:2]), encoding="utf-8")
    shutil.copytree(synth_dir, d / "bad_task")
    path = d / "bad_task" / "forget01.json"
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    rows[3]["task_id"] = "one"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (d / "weights.gguf").write_bytes(b"GGUF")
    _model_folders(d)
    return d


def _model_folders(d: Path) -> None:
    """Saved tiny models, each broken in one way."""
    from unlearn.models import build_tiny_model, build_tiny_tokenizer, save_model

    tok = build_tiny_tokenizer([r["question"] + " " + r["answer"] for r in GOOD], vocab_size=300)
    for name in ("no_tokenizer", "bad_safetensors", "bad_pickle", "bad_template"):
        save_model(build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2), tok, d / name)
    for f in (d / "no_tokenizer").glob("tokenizer*"):
        f.unlink()
    (d / "bad_safetensors" / "model.safetensors").write_bytes(b"\x00" * 64)
    (d / "bad_pickle" / "model.safetensors").unlink()
    (d / "bad_pickle" / "pytorch_model.bin").write_bytes(b"not a pickle at all")
    config = json.loads((d / "bad_template" / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ raise_exception('this template refuses') }}"
    (d / "bad_template" / "tokenizer_config.json").write_text(json.dumps(config))


def _drop_perturbed(rows):
    del rows[1]["perturbed_answer"]


def _uneven_perturbed(rows):
    rows[2]["perturbed_answer"] = rows[2]["perturbed_answer"][:2]


def _model_without_eos(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        [r["question"] + " " + r["answer"] for r in GOOD],
        trainers.BpeTrainer(vocab_size=100, special_tokens=["<unk>"], show_progress=False),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")  # no EOS, no pad
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def run(ws, forget="good.jsonl", *extra):
    return [
        "run",
        "--model",
        "tiny",
        "--forget",
        str(ws / forget),
        "--retain",
        str(ws / "good.jsonl"),
        "--no-eval",
        "--out",
        str(ws / "out"),
        *extra,
    ]


# name, argv (from the workspace), what the line must say, whether a model may be loaded first
CASES = [
    ("malformed JSON", lambda ws: run(ws, "malformed.jsonl"), r"malformed\.jsonl:2: not valid JSON", False),
    ("missing field", lambda ws: run(ws, "missing.jsonl"), r"missing\.jsonl:3: missing field 'answer'", False),
    (
        "mistyped field",
        lambda ws: run(ws, "mistyped.jsonl"),
        r"mistyped\.jsonl:1: field 'answer' must be a string, got int",
        False,
    ),
    ("not an object", lambda ws: run(ws, "not_object.jsonl"), r"not_object\.jsonl:2: expected a JSON object", False),
    ("empty file", lambda ws: run(ws, "empty.jsonl"), r"empty\.jsonl: the file is empty", False),
    ("non-UTF-8", lambda ws: run(ws, "latin1.jsonl"), r"latin1\.jsonl:2: not UTF-8 text", False),
    ("missing file", lambda ws: run(ws, "nowhere.jsonl"), r"nowhere\.jsonl: file not found", False),
    (
        "bad fine-tuning file",
        lambda ws: [
            "finetune",
            "--model",
            "tiny",
            "--train",
            str(ws / "good.jsonl"),
            str(ws / "missing.jsonl"),
            "--out",
            str(ws / "out"),
        ],
        r"missing\.jsonl:3: missing field 'answer'",
        False,
    ),
    (
        "task without rows",
        lambda ws: [
            "run",
            "--model",
            "tiny",
            "--data",
            str(ws / "no_perturbed"),
            "--task-id",
            "99",
            "--no-eval",
            "--out",
            str(ws / "out"),
        ],
        r"forget01\.json: no rows with task_id 99 \(tasks: 1, ",
        False,
    ),
    (
        "unknown split",
        lambda ws: [
            "run",
            "--model",
            "tiny",
            "--data",
            str(ws / "no_perturbed"),
            "--split",
            "forget02",
            "--no-eval",
            "--out",
            str(ws / "out"),
        ],
        r"unknown split 'forget02' \(valid: forget01, forget05, forget10\)",
        False,
    ),
    (
        "unknown method",
        lambda ws: run(ws, "good.jsonl", "--method", "GA+XX"),
        r"unknown method 'GA\+XX'.*GA, NPO.*GD, KL, AP",
        False,
    ),
    (
        "unknown YAML key",
        lambda ws: run(ws, "good.jsonl", "--config", str(ws / "unknown_key.yaml")),
        r"unknown_key\.yaml: unknown key 'lerning_rate' \(valid: ",
        False,
    ),
    (
        "mistyped YAML value",
        lambda ws: run(ws, "good.jsonl", "--config", str(ws / "bad_value.yaml")),
        r"'lr' must be a number, got 'fast'",
        False,
    ),
    (
        "resume without checkpoint",
        lambda ws: run(ws, "good.jsonl", "--resume") + ["--out", str(ws / "resume_out")],
        r"resume_out: no checkpoint to resume from",
        False,
    ),
    (
        "perturbed answers missing",
        lambda ws: ["eval", "--model", "tiny", "--data", str(ws / "no_perturbed"), "--out", str(ws / "out")],
        r"forget01_perturbed\.json:2: missing field 'perturbed_answer'",
        False,
    ),
    (
        "perturbed answers uneven",
        lambda ws: ["eval", "--model", "tiny", "--data", str(ws / "uneven"), "--out", str(ws / "out")],
        r"forget01_perturbed\.json:3: field 'perturbed_answer' has 2 answers but .* has 5",
        False,
    ),
    (
        "model path missing",
        lambda ws: run(ws, "good.jsonl", "--model", str(ws / "no_such_model")),
        r"model path does not exist: .*no_such_model",
        True,
    ),
    (
        "tokenizer without EOS",
        lambda ws: run(ws, "good.jsonl", "--model", str(ws / "no_eos_model")),
        r"tokenizer has no EOS token",
        True,
    ),
    (
        "unknown method argument",
        lambda ws: run(ws, "good.jsonl", "--method", "NPO+GD", "--method-arg", "gama=1"),
        r"unknown method argument 'gama' for NPO\+GD \(its arguments: NPO.beta \(default 0.1\)\)",
        False,
    ),
    (
        "ambiguous method argument",
        lambda ws: run(ws, "good.jsonl", "--method", "DPO+AP", "--method-arg", "beta=1"),
        r"'beta' belongs to DPO and AP: write DPO.beta or AP.beta",
        False,
    ),
    (
        "mistyped method argument",
        lambda ws: run(ws, "good.jsonl", "--method", "NPO", "--method-arg", "beta=high"),
        r"NPO.beta must be float, got 'high'",
        False,
    ),
    (
        "renamed YAML key",
        lambda ws: run(ws, "good.jsonl", "--config", str(ws / "beta.yaml")),
        r"beta\.yaml: key 'beta': beta is a method argument now: method_args: \{beta: 0.1\}",
        False,
    ),
    # every numeric setting against its domain, before anything is written
    ("zero epochs", lambda ws: run(ws, "good.jsonl", "--epochs", "0"), r"'epochs' must be above 0, got 0", False),
    ("infinite epochs", lambda ws: run(ws, "good.jsonl", "--epochs", "inf"), r"'epochs' must be finite", False),
    (
        "zero accumulation",
        lambda ws: run(ws, "good.jsonl", "--grad-accum", "0"),
        r"'grad_accum' must be at least 1",
        False,
    ),
    ("length 1", lambda ws: run(ws, "good.jsonl", "--max-length", "1"), r"'max_length' must be at least 2", False),
    ("negative warm-up", lambda ws: run(ws, "good.jsonl", "--warmup", "-5"), r"'warmup' must be at least 0", False),
    (
        "checkpoint every 0",
        lambda ws: run(ws, "good.jsonl", "--save-every", "0"),
        r"'save_every' must be at least 1",
        False,
    ),
    (
        "evaluation batch 0",
        lambda ws: run(ws, "good.jsonl", "--eval-batch-size", "0"),
        r"'eval_batch_size' must be at least 1",
        False,
    ),
    (
        "fractional task in YAML",
        lambda ws: run(ws, "good.jsonl", "--config", str(ws / "task_float.yaml")),
        r"task_float\.yaml: 'task_id' must be an integer, got 1\.7",
        False,
    ),
    (
        "non-boolean in YAML",
        lambda ws: run(ws, "good.jsonl", "--config", str(ws / "maybe.yaml")),
        r"maybe\.yaml: 'overwrite' must be true or false, got 'maybe'",
        False,
    ),
    (
        "empty task range",
        lambda ws: [
            "continual",
            "--model",
            "tiny",
            "--data",
            str(ws / "no_perturbed"),
            "--tasks",
            "3-1",
            "--out",
            str(ws / "out"),
        ],
        r"--tasks: the range 3-1 is empty",
        False,
    ),
    (
        "too short to hold an answer",
        lambda ws: run(ws, "good.jsonl", "--max-length", "4"),
        r"--max-length 4 leaves no answer token",
        True,
    ),
    # inputs
    (
        "data is a file",
        lambda ws: ["run", "--model", "tiny", "--data", str(ws / "good.jsonl"), "--no-eval", "--out", str(ws / "out")],
        r"good\.jsonl: a file, not a data folder",
        False,
    ),
    (
        "non-integer task id",
        lambda ws: ["run", "--model", "tiny", "--data", str(ws / "bad_task"), "--no-eval", "--out", str(ws / "out")],
        r"forget01\.json:4: field 'task_id' must be an "
        r"integer, got 'one'",
        False,
    ),
    (
        "evaluation rows of another set",
        lambda ws: ["run", "--model", "tiny", "--data", str(ws / "subset"), "--nli", "none", "--out", str(ws / "out")],
        r"forget01_perturbed\.json:2: the Forget set evaluated \(2 rows\) is not the forget set trained on",
        False,
    ),
    (
        "no retain set for GD",
        lambda ws: [
            "run",
            "--model",
            "tiny",
            "--forget",
            str(ws / "good.jsonl"),
            "--method",
            "GA+GD",
            "--no-eval",
            "--out",
            str(ws / "out"),
        ],
        r"GA\+GD needs a retain set",
        False,
    ),
    (
        "unknown prompt format",
        lambda ws: run(ws, "good.jsonl", "--prompt-format", "alpaca"),
        r"unknown prompt format 'alpaca'",
        False,
    ),
    ("unknown dtype", lambda ws: run(ws, "good.jsonl", "--dtype", "fp8"), r"unknown dtype 'fp8'", False),
    (
        "unknown attention",
        lambda ws: run(ws, "good.jsonl", "--attn-implementation", "fast"),
        r"unknown --attn-implementation 'fast'",
        False,
    ),
    # models
    (
        "a GGUF file as model",
        lambda ws: run(ws, "good.jsonl", "--model", str(ws / "weights.gguf")),
        r"weights\.gguf: a GGUF file; GGUF loads through the smollm2-135m preset",
        True,
    ),
    (
        "model without tokenizer",
        lambda ws: run(ws, "good.jsonl", "--model", str(ws / "no_tokenizer")),
        r"no_tokenizer: no tokenizer files",
        True,
    ),
    (
        "damaged safetensors",
        lambda ws: run(ws, "good.jsonl", "--model", str(ws / "bad_safetensors")),
        r"could not load the model .*bad_safetensors",
        True,
    ),
    (
        "pickle refused by the safe loader",
        lambda ws: run(ws, "good.jsonl", "--model", str(ws / "bad_pickle")),
        r"could not load the model .*bad_pickle",
        True,
    ),
    (
        "chat template that raises",
        lambda ws: run(ws, "good.jsonl", "--model", str(ws / "bad_template"), "--prompt-format", "chat_template"),
        r"the tokenizer's chat template failed \(this template refuses\)",
        True,
    ),
]


@pytest.mark.parametrize("name,argv,expected,loads_model", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(ws, name, argv, expected, loads_model, capsys, monkeypatch):
    import unlearn.models

    if not loads_model:

        def no_model(*a, **k):
            raise AssertionError(f"{name}: a model was loaded before the input was checked")

        monkeypatch.setattr(unlearn.models, "load_model", no_model)
    code = main(argv(ws))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [x for x in re.split(r"[\r\n]", err) if x.strip()]  # progress bars may come first
    errors = [x for x in lines if x.startswith("unlearn: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert re.search(expected, errors[0]), errors[0]
    assert "Traceback" not in err
    assert not (ws / "out").exists()  # nothing written, not even an empty folder


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(ws, where):
    from unlearn.errors import DataError

    argv = run(ws, "missing.jsonl")
    argv = ["--debug", *argv] if where == "before" else [argv[0], "--debug", *argv[1:]]
    with pytest.raises(DataError, match=r"missing\.jsonl:3: missing field 'answer'"):
        main(argv)


def test_long_sequences_are_truncated_and_counted(ws, tmp_path, caplog):
    long = [{"question": "Who?", "answer": " ".join(["word"] * 60)}] * 2 + [{"question": "Who?", "answer": "Me."}] * 2
    write_jsonl(tmp_path / "long.jsonl", long)
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        code = main(
            [
                "run",
                "--model",
                "tiny",
                "--forget",
                str(tmp_path / "long.jsonl"),
                "--retain",
                str(ws / "good.jsonl"),
                "--method",
                "GA",
                "--max-length",
                "24",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--grad-accum",
                "1",
                "--no-eval",
                "--out",
                str(tmp_path / "out"),
            ]
        )
    assert code == 0
    assert re.search(r"\b2 sequences were longer than --max-length 24 and were truncated", caplog.text), caplog.text


# ------------------------------------------------------------------------------- fail fast


FAIL_FAST = [
    ("embedder", ["--embedder", "/no/such/embedder"], r"could not load sentence embedder '/no/such/embedder'"),
    ("NLI judge", ["--nli", "/no/such/nli"], r"--nli: could not load NLI model '/no/such/nli'.*--nli none"),
    ("retain model", ["--retain-model", "/no/such/retain"], r"model path does not exist: /no/such/retain"),
]


@pytest.mark.parametrize("name,extra,expected", FAIL_FAST, ids=[c[0] for c in FAIL_FAST])
def test_what_evaluation_needs_is_refused_before_the_first_step(
    synth_dir, tmp_path, capsys, monkeypatch, name, extra, expected
):
    """A run that would train, save and then fail to evaluate is refused before it trains."""
    import unlearn.train

    def no_training(*a, **k):
        raise AssertionError(f"{name}: training started before the evaluation was checked")

    monkeypatch.setattr(unlearn.train, "fit", no_training)
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--model",
            "tiny",
            "--data",
            str(synth_dir),
            "--method",
            "GA",
            "--epochs",
            "1",
            "--out",
            str(out),
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert re.search(expected, err.strip().splitlines()[-1]), err
    assert not (out / "model").exists() and not (out / "train_log.jsonl").exists()


def test_a_bug_shows_its_traceback_and_a_user_error_one_line(ws, tmp_path, monkeypatch, capsys):
    """Only UnlearnError becomes a one-line message: a shape bug inside a loss is not disguised."""
    from unlearn import methods

    broken = methods.Term("GA", lambda v: v.logits("forget").sum(dim=5), ("forget",))  # a wrong dim: IndexError
    monkeypatch.setitem(methods.FORGET_TERMS, "GA", broken)
    argv = [
        "run",
        "--model",
        "tiny",
        "--forget",
        str(ws / "good.jsonl"),
        "--method",
        "GA",
        "--epochs",
        "1",
        "--no-eval",
        "--out",
        str(tmp_path / "bug"),
    ]
    with pytest.raises(IndexError):
        main(argv)
    capsys.readouterr()
    assert main(argv[:-1] + [str(tmp_path / "user"), "--method-arg", "beta=1"]) == 2  # GA takes no arguments
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["unlearn: error: unknown method argument 'beta' for GA (its arguments: none)"]


# ------------------------------------------------------------------------------- help and placeholders


def test_help_says_each_default_once_and_every_command_describes_itself(capsys):
    from unlearn.__main__ import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit):
            main([*name.split(" "), "--help"])
        text = " ".join(capsys.readouterr().out.split())
        flags = re.split(r"\s(?=--[a-z])", text)
        assert not [f for f in flags if f.count("(default:") > 1], name
        assert "options:" in text and len(text.split("options:")[0]) > len("usage: unlearn " + name) + 20, name


def test_shipped_placeholders_are_refused_before_anything_runs(tmp_path, capsys):
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    assert main(["run", "--config", str(configs / "tofu_me_gd.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "'retain_model' is still the placeholder RETAIN_MODEL_DIR" in capsys.readouterr().err
    assert main(["sweep", "--config", str(configs / "tofu_baselines.yaml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "tofu_baselines.yaml: 'model' is still the placeholder TARGET_MODEL_DIR" in err
    assert not (tmp_path / "o").exists()


def test_task_id_all_selects_every_task():
    from unlearn.__main__ import build_parser
    from unlearn.config_args import config_from_args

    args = build_parser().parse_args(["run", "--task-id", "all"])
    assert config_from_args(args).task_id is None
    assert config_from_args(build_parser().parse_args(["run", "--task-id", "3"])).task_id == 3
