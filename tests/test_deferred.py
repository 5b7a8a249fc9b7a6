"""unlearn.deferred: a package entered without running its ``__init__`` until a name of its own is asked."""

import subprocess
import sys
import textwrap

from unlearn import deferred


def _package(root, name="pkg_deferred_probe"):
    folder = root / name
    (folder / "inner").mkdir(parents=True)
    (folder / "__init__.py").write_text("import sys\nsys.modules[__name__].RAN = True\nfrom .sub import VALUE as TOP\n")
    (folder / "sub.py").write_text("VALUE = 7\n")
    (folder / "inner" / "__init__.py").write_text("raise RuntimeError('the inner package ran')\n")
    (folder / "inner" / "leaf.py").write_text("from pkg_deferred_probe import sub\nLEAF = sub.VALUE + 1\n")
    return name


def test_submodules_load_without_init_and_a_name_runs_it(tmp_path, monkeypatch):
    name = _package(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for key in [k for k in sys.modules if k.startswith(name)]:
        monkeypatch.delitem(sys.modules, key)
    try:
        deferred.defer(name, f"{name}.inner")
        from pkg_deferred_probe.inner import leaf  # neither __init__ runs

        pkg = sys.modules[name]
        assert leaf.LEAF == 8
        assert "RAN" not in vars(pkg)
        assert pkg.sub.VALUE == 7  # a submodule asked by name: still no __init__
        assert "RAN" not in vars(pkg)
        assert pkg.TOP == 7  # a name of the package itself: its __init__ runs, into the same object
        assert pkg.RAN is True and sys.modules[name] is pkg and type(pkg).__name__ == "module"
    finally:
        for key in [k for k in sys.modules if k.startswith(name)]:
            del sys.modules[key]


def test_imported_or_missing_packages_are_left_alone():
    before = sys.modules["json"]
    deferred.defer("json", "no_such_package_here", "no_such_package_here.sub")
    assert sys.modules["json"] is before
    assert "no_such_package_here" not in sys.modules


def test_rouge_imports_only_the_porter_stemmer_and_nltk_still_works_whole():
    """In a fresh interpreter: scoring ROUGE loads no nltk module beyond the stemmer's, nor
    scikit-learn or pandas; asking nltk for a name of its own then loads the whole package."""
    code = textwrap.dedent(
        """
        import sys
        from unlearn.evaluation import metrics
        score = metrics.rouge_l_recall("the cats were running home", "a cat runs home")
        loaded = sorted(k for k in sys.modules if k.split(".")[0] in ("nltk", "sklearn", "pandas"))
        import nltk
        from nltk.stem.porter import PorterStemmer
        assert nltk.FreqDist("abca")["a"] == 2
        assert nltk.stem.PorterStemmer is PorterStemmer
        assert nltk.stem.SnowballStemmer("english").stem("running") == "run"
        print(score, loaded)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert abs(float(out[0]) - 3 / 4) < 1e-12  # "cat", "run" and "home": 3 of the 4 reference words, once stemmed
    assert eval(out[1]) == ["nltk", "nltk.redos", "nltk.stem", "nltk.stem.api", "nltk.stem.porter", "nltk.termsec"]
