"""The API reference builds from the docstrings without a warning, and documents what it should.

Builds docs/ as CI and users do (``python -m sphinx -W --keep-going -b html docs OUT``) into a
temporary folder, once for the module.
"""

import html as html_lib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"

MODULES = ("metrics", "multiclass_metrics", "multinomial", "audit", "diagnostics", "trust",
           "tables", "refit_check", "removal", "sklearn", "sources", "datasets", "plots")


def _text(page: Path) -> str:
    """The page's text, without tags and entities, with runs of white space made one space."""
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))
    return " ".join(text.split())


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    pytest.importorskip("sphinx", reason="the docs need Sphinx: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("docs") / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"sphinx failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr}")
    return out


def test_reference_documents_the_public_api(html):
    api = (html / "api.html").read_text(encoding="utf-8")
    for name in ("Attribution", "Attribution.group_effect", "Attribution.rescaled_influence",
                 "MultinomialAttribution", "fit", "influence", "rescaled_influence", "leverage",
                 "newton_step", "FitResult", "RetrainResult", "RetrainResult.effect",
                 "TopSamples", "SampleTable", "RefitCheck", "check_refit",
                 "NotPositiveDefiniteError", "SingularRemovalWarning", "TrustWarning"):
        assert f'id="rif_native.{name}"' in api, f"rif_native.{name} is not in api.html"
    # the constructor's parameters, not those of the __new__ that picks a subclass
    assert re.search(r'id="rif_native\.Attribution">.*?fit_intercept.*?</dt>', api, re.S)
    for module in MODULES:
        page = (html / "modules" / f"{module}.html").read_text(encoding="utf-8")
        assert f'id="module-rif_native.{module}"' in page, f"rif_native.{module} is missing"
    metrics = (html / "modules" / "metrics.html").read_text(encoding="utf-8")
    assert 'id="rif_native.metrics.TestLoss"' in metrics
    conventions = _text(html / "conventions.html")
    assert "theta_{-T} - theta_hat" in conventions and "l2 = 1 / C" in conventions


def test_cli_page_has_a_valid_example_of_every_command(html):
    from rif_native import cli

    parser = cli._build_parser()
    commands = set(next(a for a in parser._actions if a.dest == "command").choices)
    examples = [shlex.split(line.strip())[1:] for line in
                (DOCS / "cli.rst").read_text(encoding="utf-8").splitlines()
                if line.startswith("      rif ")]
    assert sorted(argv[0] for argv in examples) == sorted(commands)
    for argv in examples:
        assert parser.parse_args(argv).command == argv[0]  # parses; nothing runs
    page = _text(html / "cli.html")
    for command in commands:
        assert f"rif {command}" in page
