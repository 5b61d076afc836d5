"""The documentation site documents every command and every option, builds with --strict, and --help shows
examples."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from s3_multipart_upload.main import cli

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = "\n".join(page.read_text() for page in sorted(DOCS.glob("**/*.md")))
COMMANDS = sorted(cli.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_and_option_is_in_the_docs(name: str) -> None:
    command = cli.commands[name]
    assert f"s3-multipart-upload {name}" in PAGES, f"`s3-multipart-upload {name}` is on no page of docs/"
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in param.opts:
                assert f"`{opt}`" in PAGES or f"`{opt} " in PAGES or f"{opt}`" in PAGES, \
                    f"{name} {opt} is not documented in docs/"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_examples(name: str) -> None:
    r = CliRunner().invoke(cli, [name, "--help"])
    assert r.exit_code == 0
    assert "Examples:" in r.output and f"s3-multipart-upload {name}" in r.output


def test_the_api_example_is_on_the_python_api_page() -> None:
    """The example a test runs against a real S3 server is marked and is valid Python (the API's tests run it)."""
    page = (DOCS / "python-api.md").read_text()
    found = re.search(r"<!-- example: api-upload -->\n```python\n(.*?)\n```", page, re.DOTALL)
    assert found, "python-api.md lacks the ```python block right after <!-- example: api-upload -->"
    compile(found.group(1), "python-api.md", "exec")


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS.glob("**/*.md"):
        assert f" {page.relative_to(DOCS).as_posix()}" in nav, f"{page.name} is not in mkdocs.yml's nav"


def test_the_site_builds_strict(tmp_path: Path) -> None:
    """A broken link, a missing anchor or page, or a bad API docstring fails the build (as in CI)."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    r = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                       capture_output=True, text=True, timeout=240, env=None)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "python-api" / "index.html").exists()
