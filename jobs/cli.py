"""The ``advsweep`` command.

    advsweep run SPEC [--results URI] [--resume] [--overwrite] [--dry-run]
    advsweep report RESULTS [--out DIR]
    advsweep store ls|du|gc [STORE] [--dry-run]

``run`` is ``python -m jobs.sweep`` (still the entry point for ``ray job submit``, which runs a
module from the working directory) and ``report`` is ``python -m analysis.report``, with the
same options and exit status: 0 done, 1 a trial failed or rows are missing, 2 bad input.
``store`` lists, sizes and cleans the model and evaluation store (jobs.store).
"""

from __future__ import annotations

import sys

COMMANDS = {
    "run": "run a study from its spec (python -m jobs.sweep)",
    "report": "write the report of a results folder (python -m analysis.report)",
    "store": "what the store holds (ls), its size (du), drop unused evaluation entries (gc)",
}


def usage() -> str:
    lines = ["usage: advsweep {run,report,store} ...", ""] + [f"  {name:<8}{what}" for name, what in COMMANDS.items()]
    return "\n".join(lines + ["", "advsweep COMMAND --help shows a command's options."])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"advsweep: {given}; expected one of: {', '.join(COMMANDS)}\n{usage()}", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    # Imported here: `advsweep report` needs no torch or Ray, `advsweep run` no altair.
    if command == "run":
        from jobs import sweep

        return sweep.main(rest, prog="advsweep run")
    if command == "store":
        from jobs import store

        return store.main(rest)
    from analysis import report

    return report.main(rest, prog="advsweep report")


if __name__ == "__main__":
    sys.exit(main())
