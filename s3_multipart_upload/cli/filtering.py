"""The options that choose files of a folder (``--exclude``, ``--include``, ``--follow-symlinks``), shared by
``upload`` and ``verify``. aws-cli's rule that the later filter wins needs the order of the two options as given,
which click does not keep across two options: ``FilterCommand`` reads it from the arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from s3_multipart_upload.errors import BadInput

F = TypeVar("F", bound=Callable[..., Any])
_KEY = "s3mu_filters"


class FilterCommand(click.Command):
    """A command whose ``--exclude``/``--include`` reach it in the order given (``ctx.meta``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        order: list[tuple[str, str]] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                break
            for kind in ("exclude", "include"):
                flag = f"--{kind}"
                if arg == flag and i + 1 < len(args):
                    order.append((kind, args[i + 1]))
                    i += 1
                elif arg.startswith(flag + "="):
                    order.append((kind, arg[len(flag) + 1:]))
            i += 1
        ctx.meta[_KEY] = order
        return super().parse_args(ctx, args)


def filters_of(exclude: tuple[str, ...], include: tuple[str, ...]) -> list[tuple[str, str]]:
    """The filters in the order given on the command line."""
    ctx = click.get_current_context()
    order: list[tuple[str, str]] = ctx.meta.get(_KEY, [])
    if sorted(order) != sorted([("exclude", p) for p in exclude] + [("include", p) for p in include]):
        raise BadInput("could not tell the order of --exclude and --include", "give each as --exclude=GLOB")
    return order


def filter_options(fn: F) -> F:
    for decorator in reversed([
        click.option("--exclude", multiple=True, metavar="GLOB",
                     help="Leave out the files whose path relative to DIR matches GLOB (* matches across folders, "
                          "?, [seq], [!seq]). Repeatable; with --include, the later filter that matches wins, as in "
                          "aws-cli: --exclude '*' --include '*.txt' takes only the .txt files."),
        click.option("--include", multiple=True, metavar="GLOB",
                     help="Take back the files matching GLOB that an earlier --exclude left out (every file is "
                          "taken unless excluded; hidden files too)."),
        click.option("--follow-symlinks/--no-follow-symlinks", default=True, show_default=True,
                     help="Follow symbolic links to files and folders under DIR (a link back to a folder above "
                          "it, a loop, is reported and not followed)."),
    ]):
        fn = decorator(fn)
    return fn
