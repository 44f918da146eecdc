"""MkDocs hook: the command-line reference, rendered from the parser at build time.

A page that holds the line ``<!-- cli-reference -->`` gets, in its place, every subcommand of
:func:`repspace.cli.main.build_parser`: its usage, description, arguments (with their help,
choices and the parser's own defaults) and examples. The page therefore always says what
``repspace COMMAND --help`` says.
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

MARKER = "<!-- cli-reference -->"
WIDTH = 96  # usage lines are wrapped as on a 96-column terminal


def on_config(config, **kwargs):
    """Import repspace from this checkout (the folder of mkdocs.yml), not from elsewhere."""
    root = str(Path(config.config_file_path).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return config


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    from repspace.cli.main import build_parser

    return markdown.replace(MARKER, render(build_parser()))


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Subcommand name -> its parser, in the order of ``repspace --help``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render(parser: argparse.ArgumentParser) -> str:
    commands = subcommands(parser)
    summary = {a.dest: a.help for action in parser._actions
               if isinstance(action, argparse._SubParsersAction) for a in action._choices_actions}
    out = [_usage(parser), "", _text(parser.description or ""), "",
           "| command | what it does |", "|---|---|"]
    out += [f"| [`repspace {name}`](#{name}) | {_cell(summary.get(name) or '')} |"
            for name in commands]
    out += ["", _group_table(parser._actions), ""]
    for name, sub in commands.items():
        out += [f"## repspace {name} {{#{name}}}", "", _usage(sub), ""]
        out += _description(sub.description or "")
        for group in sub._action_groups:
            table = _group_table(group._group_actions)
            if table:
                title = {"positional arguments": "Arguments", "options": "Options"}.get(
                    group.title, group.title)
                out += [f"**{_text(title)}**", "", table, ""]
        out += _epilog(sub.epilog or "")
    return "\n".join(out)


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = parser.formatter_class(prog=parser.prog, width=WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return "```text\n" + formatter.format_help().strip() + "\n```"


def _description(text: str) -> list[str]:
    """The first paragraph as text; the rest (pre-formatted, e.g. the method list) as is."""
    first, _, rest = text.partition("\n\n")
    out = [_text(" ".join(first.split())), ""]
    if rest.strip():
        out += ["```text", rest.rstrip(), "```", ""]
    return out


def _epilog(text: str) -> list[str]:
    """``examples:`` and its indented lines as a code block; the paragraphs after it as text."""
    lines = text.strip("\n").split("\n")
    if not lines or lines[0].strip() != "examples:":
        return [_text(text), ""] if text.strip() else []
    examples, rest = [], []
    for i, line in enumerate(lines[1:], start=1):
        if not line.strip():
            rest = lines[i + 1:]
            break
        examples.append(line[2:] if line.startswith("  ") else line)
    out = ["**Examples**", "", "```text", *examples, "```", ""]
    if rest:
        out += [_text(" ".join(" ".join(rest).split())), ""]
    return out


def _group_table(actions: list[argparse.Action]) -> str:
    rows = []
    for action in actions:
        if action.help == argparse.SUPPRESS or isinstance(
                action, (argparse._SubParsersAction, argparse._HelpAction)):
            continue  # -h/--help is said once, above the commands
        rows.append(f"| {_name(action)} | {_cell(_help(action))} | {_default(action)} |")
    if not rows:
        return ""
    return "\n".join(["| argument | meaning | default |", "|---|---|---|", *rows])


def _name(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`" + (" ..." if action.nargs == "+" else "")
    flags = ", ".join(f"`{flag}`" for flag in action.option_strings)
    if action.nargs == 0:
        return flags
    metavar = action.metavar or (
        "{" + ",".join(map(str, action.choices)) + "}" if action.choices
        else action.dest.upper())
    return f"{flags} `{metavar}`" + (" (required)" if action.required else "")


def _help(action: argparse.Action) -> str:
    """The help text as ``--help`` prints it: argparse fills ``%(default)s`` and the like (so a
    literal percent sign is written ``%%``)."""
    params = {**vars(action), "prog": "repspace"}
    if action.choices is not None:
        params["choices"] = ", ".join(map(str, action.choices))
    return (action.help or "") % params


def _default(action: argparse.Action) -> str:
    value = action.default
    if (value is None or value is False or value == [] or value == argparse.SUPPRESS
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
        return ""
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return f"`{value}`"


def _text(text: str) -> str:
    """Plain text for Markdown: no HTML, no accidental emphasis."""
    return html.escape(text, quote=False).replace("*", r"\*").replace("_", r"\_")


def _cell(text: str) -> str:
    """Text for a table cell (code spans in backticks are kept as they are)."""
    parts = text.split("`")
    return "`".join(part if i % 2 else _text(part) for i, part in enumerate(parts)).replace(
        "|", r"\|")
