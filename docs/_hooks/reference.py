"""MkDocs hooks (mkdocs.yml `hooks:`), so that two parts of the site cannot drift:

- `cli.md`'s `<!-- cli-reference -->` becomes the help of every command of the click tree
  (`fpgaslim.cli.main`, walked recursively) and of `fpgaslim-board` (its argparse parser);
- the committed result files (benchmarks/results/*.md, *.json) become pages and files of the
  site under `results/` (a "Result files" section of the navigation), so a figure's source is one click away (`[..](results/X.md)`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import click
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
MARK = "<!-- cli-reference -->"


def _commands(cmd: click.Command, ctx: click.Context):
    yield ctx
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, click.Context(sub, info_name=name, parent=ctx,
                                                        max_content_width=96,
                                                        terminal_width=96))


def cli_reference() -> str:
    from fpgaslim.cli import main
    from fpgaslim.deploy.board_runner import _parser

    out = []
    root = click.Context(main, info_name="fpgaslim", max_content_width=96, terminal_width=96)
    for ctx in _commands(main, root):
        out += [f"## `{ctx.command_path}`", "", "```text", ctx.command.get_help(ctx), "```", ""]
    parser: argparse.ArgumentParser = _parser()
    out += ["## `fpgaslim-board`", "", "```text", parser.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def _result_files() -> list[Path]:
    return [f for f in sorted(RESULTS.glob("*")) if f.suffix in (".md", ".json") and f.is_file()]


def on_config(config):
    """The result pages get a section of the navigation (listed from the folder)."""
    pages = [{f.stem: f"results/{f.name}"} for f in _result_files() if f.suffix == ".md"]
    config["nav"].append({"Result files": pages})
    return config


def on_files(files, config):
    for f in _result_files():
        files.append(File(f"results/{f.name}", str(RESULTS.parent), config["site_dir"],
                          config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    if MARK in markdown:
        markdown = markdown.replace(MARK, cli_reference())
    return markdown
