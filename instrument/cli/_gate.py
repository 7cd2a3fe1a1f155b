"""``instrument gate check`` and ``instrument baseline set|show|promote``: gates and baselines offline.

Both work on instrument's files beside wandb's folder (``.instrument/``): a run's gates sidecar
(what its evals declared, returned and were judged) and the baseline store
(``baselines/<project>/<prefix>.json``, meant to be committed).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from instrument import _gatefiles, baselines
from instrument._gates import Suite
from instrument.cli import _runs, _sidecar
from instrument.cli._common import (
    FAILED,
    NO_BASELINE,
    OK,
    RUN_HELP,
    CommandError,
    number,
    relative,
    text_table,
    unknown_key,
)

_MARKS = {"pass": "✅ passed", "fail": "❌ failed", "warn": "⚠️ passed with warnings"}


def add_parser(commands: Any) -> None:
    """Add the ``gate`` and ``baseline`` commands to the top-level parser's *commands*."""
    gate = commands.add_parser("gate", help="re-check a run's gates offline (gate check RUN)",
                               description="Regression gates of a run's evals, offline.")
    gate_commands = gate.add_subparsers(dest="gate_command", required=True, metavar="COMMAND")
    check = gate_commands.add_parser(
        "check", help="re-evaluate a run's gates against the baseline store or a given baseline",
        description="Re-evaluate every gate a run's evals declared (from its sidecar, with the values they "
        "returned) against the baseline store as it is now, or against --baseline. Exit status 0 all passed, "
        "1 a fail-severity gate failed, 2 bad arguments or not a run (or a run without gates), 3 no baseline "
        "for a regression gate.",
    )
    check.add_argument("run", metavar="RUN", help=RUN_HELP)
    check.add_argument("--baseline", metavar="PATH", help="a baseline store file, or another run's gates.json")
    check.add_argument("--md", action="store_true", help="print a GitHub-flavoured Markdown report (for CI)")
    check.set_defaults(handler=run_check, verb="gate check")

    baseline = commands.add_parser("baseline", help="manage the baseline store (set, show, promote)",
                                   description="The baseline store: .instrument/baselines/<project>/<prefix>.json.")
    baseline_commands = baseline.add_subparsers(dest="baseline_command", required=True, metavar="COMMAND")
    for name, text in (
        ("set", "write a run's gated metrics into the store, whatever its verdicts"),
        ("promote", "write a run's gated metrics into the store, for suites that passed"),
    ):
        verb = baseline_commands.add_parser(
            name, help=text, description=f"{text[0].upper()}{text[1:]} (every suite, or --prefix). Exit status 0; "
            "2 when RUN is not a run, has no gates, or (promote) a suite did not pass.")
        verb.add_argument("run", metavar="RUN", help=RUN_HELP)
        verb.add_argument("--prefix", action="append", metavar="PREFIX", help="only this suite (repeatable)")
        verb.set_defaults(handler=run_set if name == "set" else run_promote, verb=f"baseline {name}")
    show = baseline_commands.add_parser(
        "show", help="print the baselines in the store",
        description="Print every baseline in the store of ./.instrument (or $WANDB_DIR/.instrument). Exit status 0; "
        "2 when --project or --prefix names none of the store's.")
    show.add_argument("--project", help="only this project")
    show.add_argument("--prefix", help="only this suite")
    show.set_defaults(handler=run_show_baselines, verb="baseline show")


def run_check(arguments: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """Re-evaluate a run's gates; print the verdicts; return 0, 1 or 3 (see the command's help)."""
    run = _runs.resolve_run(arguments.run, environ)
    try:
        suites = _gatefiles.recheck(run.path, baseline=arguments.baseline, root=_runs.instrument_dir(run.path))
    except _gatefiles.GateFileError as error:
        raise CommandError(_message(error)) from error
    if not suites:
        raise CommandError(f"run {run.run_id} has no gates")
    entries = {suite.prefix: suite.to_json() for suite in suites}
    failed = [s.prefix for s in suites if not s.passed]
    missing = [s.prefix for s in suites if s.no_baseline]
    status = FAILED if failed else NO_BASELINE if missing else OK
    verdict = "❌ failed" if failed else "⚠️ no baseline" if missing else _MARKS.get(
        "warn" if any(s.status == "warn" for s in suites) else "pass", "")
    source = f"the baseline in {arguments.baseline}" if arguments.baseline else "the baselines its evals declared"
    if arguments.md:
        lines = [f"### Gates of run {run.run_id}{f' ({run.name})' if run.name else ''}: {verdict}", "",
                 f"Re-checked offline against {source}, as they are now.", "", *_sidecar.markdown(entries)]
    else:
        lines = [f"run {run.run_id}: {verdict.split(' ', 1)[1]} (re-checked against {source}, as they are now)",
                 *text_table(_sidecar.HEADERS, _sidecar.verdict_rows(entries), _sidecar.RIGHT)]
    if missing:
        lines += ["", *_no_baseline_hints(run.path, missing, arguments.baseline)]
    print("\n".join(lines))
    return status


def _no_baseline_hints(run_path: Path, missing: list[str], given: str | None) -> list[str]:
    """Say, for each suite in *missing*, where its declared baseline was looked for and what gives it one:
    the store takes ``instrument baseline set``, but ``Baseline.best``/``median`` read the suite's history
    and ``Baseline.from_run`` another run, which that command does not change."""
    if given is not None:
        return [f"No baseline for {prefix} in {given}." for prefix in missing]
    root = _runs.instrument_dir(run_path)
    data = _gatefiles.read_sidecar(_gatefiles.find_sidecar(run_path, root))
    hints = []
    for prefix in missing:
        baseline = Suite.from_json(prefix, data["suites"][prefix]["declaration"]).baseline
        if baseline.kind in ("best", "median"):
            history = relative(_gatefiles.history_path(data["project"], prefix, root))
            hints.append(f"No baseline for {prefix}: Baseline.{baseline.kind}({baseline.n}) compares with the last "
                         f"{baseline.n} earlier runs of the suite, and {history} holds none with these metrics yet "
                         "(each run of the suite records one there).")
        elif baseline.kind == "from_run":
            hints.append(f"No baseline for {prefix}: run {baseline.run} (Baseline.from_run) recorded no values for "
                         "these metrics.")
        elif baseline.kind == "values":
            hints.append(f"No baseline for {prefix}: Baseline.values(...) declares no value for these metrics.")
        else:
            store = relative(_gatefiles.store_path(data["project"], prefix, root))
            hints.append(f"No baseline for {prefix} in {store}: set one with `instrument baseline set RUN`.")
    return hints


def _promote(arguments: argparse.Namespace, environ: Mapping[str, str], force: bool) -> int:
    run = _runs.resolve_run(arguments.run, environ)
    try:
        written = baselines.promote(run.path, prefixes=arguments.prefix, force=force,
                                    root=_runs.instrument_dir(run.path))
    except (_gatefiles.GateFileError, ValueError) as error:
        raise CommandError(_message(error)) from error
    for path in written:
        print(f"baseline from run {run.run_id} written to {relative(path)}")
    return OK


def run_set(arguments: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """``baseline set RUN``: write the run's gated metrics into the store, whatever they scored."""
    return _promote(arguments, environ, force=True)


def run_promote(arguments: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """``baseline promote RUN``: write the run's gated metrics into the store if its suites passed."""
    return _promote(arguments, environ, force=False)


def run_show_baselines(arguments: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> int:
    """``baseline show``: print each store file's metrics (value, stderr, direction, run, commit, time).

    Raises:
        CommandError: ``--project`` or ``--prefix`` names none of the store's (exit status 2; the
            message names the closest there are).
    """
    folder = _gatefiles.instrument_root(environ) / "baselines"
    files = sorted(folder.glob("*/*.json")) if folder.is_dir() else []
    stores = []
    for path in files:
        try:
            store = _gatefiles.read_store(path)
        except _gatefiles.GateFileError as error:
            print(f"instrument baseline show: {_message(error)}", file=sys.stderr)
            continue
        if store:
            stores.append(store)
    for option, field in (("--project", "project"), ("--prefix", "prefix")):
        wanted = getattr(arguments, field)
        if wanted and stores and wanted not in {store[field] for store in stores}:
            raise unknown_key(option, wanted, {store[field] for store in stores}, f"{field} in {relative(folder)}")
    rows = []
    for store in stores:
        if (arguments.project and store["project"] != arguments.project) or (
            arguments.prefix and store["prefix"] != arguments.prefix
        ):
            continue
        for metric, entry in sorted(store["metrics"].items()):
            rows.append([store["project"], store["prefix"], metric, number(_sidecar.decode(entry.get("value"))),
                         number(_sidecar.decode(entry.get("stderr"))), entry.get("direction") or "-",
                         entry.get("run_id") or "-", (entry.get("git_commit") or "-")[:12], entry.get("time") or "-"])
    if not rows:
        chosen = [f"{field} {value}" for field, value in (("project", arguments.project), ("suite", arguments.prefix))
                  if value]
        print(f"no baselines in {relative(folder)}" + (f" for {' and '.join(chosen)}" if stores else ""))
        return OK
    headers = ["project", "suite", "metric", "value", "stderr", "direction", "run", "commit", "time"]
    print("\n".join(text_table(headers, rows, [False, False, False, True, True])))
    return OK


def _message(error: Exception) -> str:
    """The error's message without the ``instrument:`` or ``instrument.baselines.promote:`` it starts with."""
    text = str(error)
    head, sep, rest = text.partition(": ")
    return rest if sep and head.startswith("instrument") and " " not in head else text


