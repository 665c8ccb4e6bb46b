"""The `align-mamba` console script: `align-mamba COMMAND [ARGS...]`.

A thin dispatcher: each command is a module with `main(argv, prog) -> int`, imported only when run
(so `align-mamba --help` does not load torch). Add a command by adding it to COMMANDS.
"""

from __future__ import annotations

import importlib
import sys

from align_mamba.core.errors import ConfigError, run_cli

# command -> (module with main(argv, prog), one-line help)
COMMANDS = {
    "scan": ("align_mamba.secrets.scan", "find secrets in files and directories with a trained byte tagger"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "usage: align-mamba COMMAND [ARGS...]  (align-mamba COMMAND --help)\n\ncommands:\n" + "\n".join(lines)


def dispatch(argv: list[str] | None = None) -> int:
    """Run the command named by argv[0] with the rest of argv; its return value is the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not argv:
        raise ConfigError(f"align-mamba: a command is required: {', '.join(COMMANDS)} (see --help)")
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise ConfigError(f"align-mamba: unknown command {name!r}; commands: {', '.join(COMMANDS)} (see --help)")
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest, prog=f"align-mamba {name}")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: errors become one `error: ...` line and exit status 2."""
    return run_cli(dispatch, argv)


if __name__ == "__main__":
    raise SystemExit(main())
