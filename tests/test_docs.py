"""The README documents every command and every option, and --help shows examples."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from s3_multipart_upload.main import cli

README = (Path(__file__).parent.parent / "README.md").read_text()
COMMANDS = sorted(cli.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_and_option_is_in_the_readme(name: str) -> None:
    command = cli.commands[name]
    assert f"s3-multipart-upload {name}" in README
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in param.opts:
                assert f"`{opt}`" in README or f"`{opt} " in README or f"{opt}`" in README, \
                    f"{name} {opt} is not documented in README.md"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_examples(name: str) -> None:
    r = CliRunner().invoke(cli, [name, "--help"])
    assert r.exit_code == 0
    assert "Examples:" in r.output and f"s3-multipart-upload {name}" in r.output
