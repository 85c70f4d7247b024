"""The ``seal`` command: ``seal DOMAIN COMMAND [flags]``, one subcommand per registered domain command,
and ``seal COMMAND [flags]`` for the commands of their own (:mod:`seal.commands`). Bad input is one
line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import logging
import math
import os
import re
import sys

from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, Namespace

from seal.commands import COMMANDS, Command, new_parser, preset_names, preset_path, registered
from seal.domain import RunStopped
from seal.models.loading import ModelLoadError
from seal.runs import RunError

ERRORS = (ArgumentError, ValueError, FileNotFoundError, RunError, RunStopped, ModelLoadError)


def build_parser() -> ArgumentParser:
    parser = new_parser(prog="seal", description="Self-Adapting Language Models (SEAL)")
    domains = parser.add_subcommands(dest="domain")
    for name, (help, commands) in registered().items():
        group = new_parser()
        domains.add_subcommand(name, group, help=help)
        subcommands = group.add_subcommands(dest="command")
        for command_name, command in commands.items():
            arguments = parser_of(command)
            presets = preset_names(name, command_name) if takes_settings(arguments) else []
            if presets:
                arguments.epilog = f"--preset {{{','.join(presets)}}}: a shipped config file, applied first"
            subcommands.add_subcommand(command_name, arguments, help=command.help)
    for name, command in COMMANDS.items():
        domains.add_subcommand(name, parser_of(command), help=command.help)
    return parser


def with_presets(argv: list[str]) -> list[str]:
    """``argv`` with each ``--preset NAME`` (and the presets the command's own flags imply) replaced by
    ``--config FILE`` right after the command, so that every flag given wins over them."""
    positional = [i for i, arg in enumerate(argv) if not arg.startswith("-")][:2]
    if len(positional) < 2 or argv[positional[0]] not in registered():
        return argv
    domain, command = (argv[i] for i in positional)
    rest, names = [], []
    tokens = iter(argv[positional[1] + 1 :])
    for token in tokens:
        if token == "--preset":
            names.append(next(tokens, ""))
        elif token.startswith("--preset="):
            names.append(token.split("=", 1)[1])
        else:
            rest.append(token)
    entry = registered().get(domain, (None, {}))[1].get(command)
    if names and entry and not takes_settings(parser_of(entry)):
        return argv  # the parser names --preset as an argument this command does not take
    implied = [name for name in (entry.implied_presets(rest) if entry else []) if name not in names]
    configs = [arg for name in implied + names for arg in ("--config", str(preset_path(domain, command, name)))]
    return argv[: positional[1] + 1] + configs + rest


def parser_of(command: Command) -> ArgumentParser:
    parser = new_parser()
    command.arguments(parser)
    return parser


def takes_settings(parser: ArgumentParser) -> bool:
    """Whether a command's parser reads ``--config`` (and so a preset)."""
    return any(isinstance(action, ActionConfigFile) for action in parser._actions)


def check_finite(args: Namespace) -> None:
    """NaN and infinities are no settings: refused at parse time, naming the flag."""
    for key, value in args.items(branches=False):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{key.split('.', 2)[-1]}: expected a finite number, got {value}")


def one_line(error: BaseException) -> str:
    """An error as one line: jsonargparse's multi-line messages joined, its key names written as flags."""
    text = re.sub(r'Parser key "([^"]+)":', r"--\1:", " ".join(str(error).split()))
    required = re.match(r"(.*required: )(.*)", text)
    if required:  # jsonargparse names them by their full path: knowledge.eval.out
        text = required.group(1) + ", ".join("--" + key.split(".")[-1] for key in required.group(2).split(", "))
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        parser = build_parser()
        parsed = parser.parse_args(with_presets(argv))
        check_finite(parsed)
        args = parser.instantiate(parsed)
        if args.domain in COMMANDS:
            COMMANDS[args.domain].run(args[args.domain])
        else:
            domain, command = args.domain, args[args.domain].command
            registered()[domain][1][command].run(args[domain][command])
    except SystemExit as stop:  # --help
        return int(stop.code or 0)
    except ERRORS as error:
        if os.environ.get("SEAL_DEBUG"):
            raise
        print(f"seal: error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
