"""``canaryctl`` / ``kubectl canary``: see a rollout and take over from the controller.

One program under two names; installed as ``kubectl-canary`` on PATH it is a
kubectl plugin, so ``kubectl canary list`` works. It follows kubectl's
conventions (``--kubeconfig``, ``--context``, ``-n``, ``-A``, ``-o``) so that
nothing needs learning twice, and its exit codes are a contract scripts rely on.

Manual actions (promote, promote --step, abort, pause, resume, retry) never
edit the Canary's spec: they are merge-patched onto its status subresource as
``status.requestedAction: {id, action, requestedAt, requestedBy}``, and the
controller acknowledges with ``status.lastAction: {id, action, result, at}``
(same id) and an Event that names the action. Why status and not spec or an
annotation: GitOps tools (Argo CD, Flux) own spec and metadata and would revert
or fight the edit, but leave status alone; status is stored by the API server,
so a request made while the controller restarts is handled when it is back;
``patch`` on ``canaries/status`` is an RBAC grant separate from editing
Canaries, so an on-call role can steer rollouts without rights to change them;
the id makes a request idempotent (the same id is handled once), and a request
is pending exactly while ``requestedAction.id != lastAction.id``. The full
story, including what happens to a pending request, is in docs/manual-actions.md.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TextIO

from canaryd.adapters.ctl_client import (
    ApiFailure,
    CtlClient,
    CtlError,
    ForbiddenError,
    NotFoundError,
    UnreachableError,
)
from canaryd.api.constants import Action
from canaryd.api.durations import parse_duration
from canaryd.cli import ctl_render as render
from canaryd.cli.ctl_actions import ActionReport, CanaryFollower, Outcome, next_step, request_action
from canaryd.core.revision import deployment_template_hash

# Exit codes: a contract with scripts. Listed in --help and docs/manual-actions.md.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CANARY_FAILED = 3
EXIT_NOT_FOUND = 4
EXIT_FORBIDDEN = 5
EXIT_UNREACHABLE = 6
EXIT_TIMEOUT = 7
EXIT_REFUSED = 8
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success (status, status --watch: the canary has not Failed; status --until-done: the
       run Succeeded)
  1    any other error (e.g. the API server answered 5xx, or another action replaced yours)
  2    wrong usage (unknown command or flag)
  3    the canary's phase is Failed (status, status --watch; --until-done: the run Failed)
  4    not found: no such canary in that namespace, or the Canary API is not installed
  5    forbidden: the cluster refused your credentials (401/403)
  6    no cluster: kubeconfig missing or unusable, connection refused, TLS failure, timeout
  7    timed out: no acknowledgement from the controller within --timeout (the request
       stays in status and is handled when the controller runs), or status --until-done
       --timeout
  8    refused: the controller acknowledged the action but ignored it, and the canary is
       not in the state you asked for (e.g. promote on a Failed run, retry on a canary
       that has not Failed); the error line ends with the next step
  130  interrupted (Ctrl-C)
"""

DEFAULT_ACTION_TIMEOUT = "10s"
CLEAR_SCREEN = "\x1b[H\x1b[2J"
PROGRAM = "kubectl canary" if os.path.basename(sys.argv[0]).startswith("kubectl-") else "canaryctl"


def _duration(text: str) -> float:
    """A duration flag: Go style (10s, 1m30s) or a bare number of seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """kubectl's connection and output flags; accepted before or after the command."""
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("--kubeconfig", metavar="FILE", default=default,
                        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    parser.add_argument("--context", metavar="NAME", default=default,
                        help="kubeconfig context to use (default: the current context)")
    parser.add_argument("-n", "--namespace", metavar="NS", default=default,
                        help="namespace (default: the context's namespace, else 'default')")
    parser.add_argument("--request-timeout", metavar="DURATION", type=_duration,
                        default=argparse.SUPPRESS if suppress else 15.0,
                        help="give up on one API request after this long (default 15s)")


def _output_option(parser: argparse.ArgumentParser, choices: list[str], default: str) -> None:
    parser.add_argument("-o", "--output", choices=choices, default=default,
                        help=f"output format ({'|'.join(choices)}; default {default})")


def build_parser(prog: str = PROGRAM) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="See canaryd rollouts and steer them: list, status, promote, abort, pause, resume, "
        "retry.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES_HELP,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        _common_options(cmd, suppress=True)
        return cmd

    cmd = command("list", "list canaries: phase, weight, failed checks, revision, age")
    cmd.add_argument("-A", "--all-namespaces", action="store_true", help="list canaries in every namespace")
    _output_option(cmd, ["table", "wide", "json", "yaml", "name"], "table")
    cmd.set_defaults(run=_run_list)

    cmd = command("status", "the full picture of one canary; exits 3 when it has Failed")
    cmd.add_argument("name", metavar="NAME")
    cmd.add_argument("-w", "--watch", action="store_true",
                     help="redraw on every change until Ctrl-C (or --timeout)")
    cmd.add_argument("--until-done", action="store_true",
                     help="watch until the run of the Deployment's current revision ends: exit 0 when "
                          "it Succeeded, 3 when it Failed")
    cmd.add_argument("--timeout", metavar="DURATION", type=_duration, default=None,
                     help="with --until-done: give up after this long (exit 7); with --watch: stop "
                          "watching after this long (exit as status does); default: no limit")
    _output_option(cmd, ["table", "wide", "json", "yaml", "name"], "table")
    cmd.set_defaults(run=_run_status)

    actions = [
        ("promote", Action.PROMOTE, "skip the remaining steps and promote now (--step: advance one step)"),
        ("abort", Action.ABORT, "roll back now: all traffic to the primary, the canary scaled to 0"),
        ("pause", Action.PAUSE, "hold the canary at its current weight; no steps, no promotion"),
        ("resume", Action.RESUME, "continue a paused canary"),
        ("retry", Action.RETRY,
         "run the analysis again for a Failed revision, without touching the Deployment"),
    ]
    for name, action, help_text in actions:
        cmd = command(name, help_text)
        cmd.add_argument("name", metavar="NAME")
        if action is Action.PROMOTE:
            cmd.add_argument("--step", action="store_true",
                             help="advance one step only (action promote-step)")
        cmd.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                         help="wait for the controller's acknowledgement (default: wait)")
        cmd.add_argument("--timeout", metavar="DURATION", type=_duration,
                         default=_duration(DEFAULT_ACTION_TIMEOUT),
                         help=f"how long to wait for the acknowledgement (default {DEFAULT_ACTION_TIMEOUT})")
        cmd.add_argument("--request-id", metavar="ID", default=None,
                         help="use this request id (default: a new random one); retrying a command with "
                              "the same id never applies the action twice")
        _output_option(cmd, ["text", "json", "yaml"], "text")
        cmd.set_defaults(run=_run_action, action=action)
    return parser


def _fill_common_defaults(args: argparse.Namespace) -> None:
    for name, default in (("kubeconfig", None), ("context", None), ("namespace", None),
                          ("request_timeout", 15.0)):
        if not hasattr(args, name):
            setattr(args, name, default)


class Console:
    """Where output goes; tests pass their own streams."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.marks = render.Marks.for_encoding(getattr(out, "encoding", None))

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    @property
    def is_terminal(self) -> bool:
        return bool(getattr(self.out, "isatty", lambda: False)())

    @property
    def size(self) -> tuple[int, int]:
        """Columns and lines of the terminal; 80x24 when the output is not one."""
        if self.is_terminal:
            try:
                size = os.get_terminal_size(self.out.fileno())
            except (OSError, ValueError):
                return 80, 24
            if not size.columns or not size.lines:  # a terminal that does not know its size
                return 80, 24
            return max(size.columns, 40), max(size.lines, 10)
        return 80, 24


def _namespace(args: argparse.Namespace, ctl: CtlClient) -> str:
    return str(args.namespace or ctl.default_namespace)


async def _run_list(args: argparse.Namespace, ctl: CtlClient, console: Console) -> int:
    namespace = None if args.all_namespaces else _namespace(args, ctl)
    canaries = await ctl.list_canaries(namespace)
    if args.output in ("json", "yaml"):
        console.print(render.dump(render.list_document(canaries), args.output))
        return EXIT_OK
    if args.output == "name":
        for canary in canaries:
            console.print(render.resource_name(canary))
        return EXIT_OK
    if not canaries:
        where = "any namespace" if namespace is None else f"namespace {namespace}"
        console.note(f"No canaries found in {where}.")
        return EXIT_OK
    console.print(render.list_table(canaries, all_namespaces=namespace is None,
                                    wide=args.output == "wide", now=datetime.now(UTC)))
    return EXIT_OK


def _exit_for_phase(canary: dict[str, Any]) -> int:
    return EXIT_CANARY_FAILED if render.phase(canary) == "Failed" else EXIT_OK


async def _run_status(args: argparse.Namespace, ctl: CtlClient, console: Console) -> int:
    namespace = _namespace(args, ctl)
    if args.timeout is not None and not (args.watch or args.until_done):
        console.note(f"error: --timeout needs --watch or --until-done (e.g. {PROGRAM} status {args.name} "
                     f"-n {namespace} --until-done --timeout {args.timeout:g}s)")
        return EXIT_USAGE
    if not (args.watch or args.until_done):
        canary = await ctl.get_canary(namespace, args.name)
        if args.output in ("json", "yaml"):
            console.print(render.dump(canary, args.output))
        elif args.output == "name":
            console.print(render.resource_name(canary))
        else:
            events = await ctl.events_for(canary)
            workloads = await _workloads(ctl, canary)
            console.print(_page(canary, events, args.output, console, workloads, datetime.now(UTC)))
        return _exit_for_phase(canary)
    return await _watch_status(args, ctl, console, namespace)


def _page(canary: dict[str, Any], events: list[dict[str, Any]], output: str, console: Console,
          workloads: render.Workloads, now: datetime, footer_lines: int = 0) -> str:
    """The status page: the essentials within the terminal (80x24 when not one), or all with -o wide."""
    revision = _revision_of(workloads)
    if output == "wide":
        return render.status_page(canary, events, now=now, marks=console.marks, target_revision=revision,
                                  workloads=workloads, max_events=10)
    width, height = console.size
    return render.status_summary(canary, events, now=now, marks=console.marks, workloads=workloads,
                                 target_revision=revision, width=width, height=height - footer_lines)


async def _workloads(ctl: CtlClient, canary: dict[str, Any]) -> render.Workloads:
    """The primary and the target Deployment as they are now; None for one that cannot be read."""
    namespace = str(render.meta(canary).get("namespace", ""))

    async def read(name: str) -> dict[str, Any] | None:
        try:
            return await ctl.get_deployment(namespace, name)
        except (NotFoundError, ForbiddenError):
            return None

    target = await read(render.target_name(canary))
    primary = await read(render.primary_name(canary))
    return render.Workloads(primary=primary, canary=target)


def _revision_of(workloads: render.Workloads) -> str | None:
    """The pod-template hash of the target Deployment as it is now (the controller's own hash).

    None when it cannot be read (missing, or no right to read Deployments); the
    phase alone then says when a run is over.
    """
    return deployment_template_hash(workloads.canary) if workloads.canary is not None else None


async def _watch_status(args: argparse.Namespace, ctl: CtlClient, console: Console, namespace: str) -> int:
    """Redraw on every change: until Ctrl-C (``--watch``) or until the run of the target's current
    revision ends (``--until-done``, the outcome in the exit code).

    A full page on a terminal (redrawn at least every 2s so ages and events stay
    current), one line per change elsewhere (CI logs), a document per change
    with -o json|yaml. ``--timeout`` ends a plain watch like ``status`` would
    (0, or 3 for a Failed canary); it ends ``--until-done`` with 7.
    """
    until_done = bool(args.until_done)
    loop = asyncio.get_running_loop()
    deadline = None if args.timeout is None else loop.time() + args.timeout
    updates = CanaryFollower(ctl, namespace, args.name)
    full_page = console.is_terminal and args.output in ("table", "wide")
    last_signature: tuple[Any, ...] | None = None
    canary: dict[str, Any] | None = None
    revision: str | None = None
    workloads = render.Workloads()
    try:
        while True:
            wait = 2.0 if full_page else None
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    if not until_done:
                        return _exit_for_phase(canary or {})
                    console.note(f"error: {args.name} did not finish within {args.timeout:g}s "
                                 f"(phase {render.phase(canary or {}) or '-'})")
                    return EXIT_TIMEOUT
                wait = remaining if wait is None else min(wait, remaining)
            update = await updates.next(wait)
            if update is None and (canary is None or not full_page):
                continue
            if update is not None:
                canary = update
            assert canary is not None
            if update is not None or full_page:  # the Deployments' readiness moves on its own too
                workloads = await _workloads(ctl, canary)
                revision = _revision_of(workloads)
            now = datetime.now(UTC)
            outcome = render.run_outcome(canary, revision)
            signature = render.watch_signature(canary, revision)
            if args.output in ("json", "yaml"):
                if signature != last_signature:
                    separator = "\n---" if args.output == "yaml" else ""
                    console.print(render.dump(canary, args.output) + separator)
            elif full_page:
                events = await ctl.events_for(canary)
                page = _page(canary, events, args.output, console, workloads, now, footer_lines=2)
                ended = f"run ended: {outcome}; " if outcome is not None and not until_done else ""
                console.out.write(CLEAR_SCREEN + page + f"\n\n({ended}watching; Ctrl-C to stop)\n")
                console.out.flush()
            elif signature != last_signature:
                console.print(render.watch_line(canary, now, revision))
            last_signature = signature
            if until_done and outcome is not None:
                if full_page:
                    console.print(f"run ended: {outcome}")
                return EXIT_CANARY_FAILED if outcome == "Failed" else EXIT_OK
    finally:
        await updates.close()


async def _run_action(args: argparse.Namespace, ctl: CtlClient, console: Console) -> int:
    action: Action = args.action
    if action is Action.PROMOTE and args.step:
        action = Action.PROMOTE_STEP
    namespace = _namespace(args, ctl)
    report = await request_action(ctl, namespace, args.name, action, wait=args.wait,
                                  timeout=args.timeout, request_id=args.request_id)
    for note in report.notes:
        console.note(note)
    if args.output in ("json", "yaml"):
        console.print(render.dump(report.document(), args.output))
    elif report.outcome == Outcome.REFUSED:
        console.note(f"error: {_describe_report(report, args.timeout)}")
    else:
        console.print(_describe_report(report, args.timeout))
    return {
        Outcome.DONE: EXIT_OK,
        Outcome.ALREADY_DONE: EXIT_OK,
        Outcome.NOT_WAITED: EXIT_OK,
        Outcome.REFUSED: EXIT_REFUSED,
        Outcome.TIMED_OUT: EXIT_TIMEOUT,
        Outcome.SUPERSEDED: EXIT_ERROR,
    }[report.outcome]


def _describe_report(report: ActionReport, timeout: float) -> str:
    action = report.request.get("action", "?")
    who = f"canary {report.namespace}/{report.name}"
    now = datetime.now(UTC)
    result = render.humanize(str((report.acknowledgement or {}).get("result") or "no result given"), now)
    state = ""
    if report.canary is not None:
        st = render.status(report.canary)
        phase = render.phase(report.canary) or "-"
        # What the controller's answer already says is not said again.
        parts = [] if f"phase {phase}" in result else [f"phase {phase}"]
        if f"{st.get('canaryWeight', 0)}%" not in result:
            parts.append(f"weight {st.get('canaryWeight', 0)}%")
        moving = st.get("movingToWeight")
        if moving is not None and f"moving to {moving}%" not in result:
            parts.append(f"moving to {moving}%")
        if st.get("paused") and "paused" not in result:
            parts.append("paused")
        state = f" ({', '.join(parts)})" if parts else ""
    request_id = report.request.get("id")
    if report.outcome in (Outcome.DONE, Outcome.ALREADY_DONE):
        return f"{who}: {action} acknowledged by the controller: {result}{state}"
    if report.outcome == Outcome.REFUSED:
        hint = "" if report.canary is None else f". Next: {next_step(str(action), report.canary, PROGRAM)}"
        return f"{who}: the controller did not apply {action}: {result}{state}{hint}"
    if report.outcome == Outcome.NOT_WAITED:
        return f"{who}: {action} requested (id {request_id}); not waiting for the controller"
    if report.outcome == Outcome.TIMED_OUT:
        return (f"{who}: {action} requested (id {request_id}) but not acknowledged within {timeout:g}s; "
                f"it stays pending and is handled when the controller runs{state}")
    return f"{who}: {action} (id {request_id}) was replaced by another request before the controller acted"


ERROR_EXITS: list[tuple[type[CtlError], int]] = [
    (NotFoundError, EXIT_NOT_FOUND),
    (ForbiddenError, EXIT_FORBIDDEN),
    (UnreachableError, EXIT_UNREACHABLE),
    (ApiFailure, EXIT_ERROR),
    (CtlError, EXIT_ERROR),
]


async def _run(args: argparse.Namespace, console: Console) -> int:
    command: Callable[[argparse.Namespace, CtlClient, Console], Coroutine[Any, Any, int]] = args.run
    ctl = await CtlClient.connect(args.kubeconfig, args.context, request_timeout=args.request_timeout)
    try:
        return await command(args, ctl, console)
    except NotFoundError as exc:
        name = getattr(args, "name", None)
        if not name or not exc.message.startswith(f'canary "{name}"'):
            raise
        raise NotFoundError(exc.message + await _elsewhere(ctl, name, _namespace(args, ctl))) from exc
    finally:
        await ctl.close()


async def _elsewhere(ctl: CtlClient, name: str, namespace: str) -> str:
    """Where a canary of that name does exist, or the nearest names: the end of a "not found" line."""
    try:
        everywhere = await ctl.list_canaries(None)
    except CtlError:
        try:
            everywhere = await ctl.list_canaries(namespace)
        except CtlError:
            return ""
    found = [(str(render.meta(c).get("namespace")), str(render.meta(c).get("name"))) for c in everywhere]
    places = sorted({where for where, other in found if other == name})
    if places:
        return f"; it exists in namespace {', '.join(places)}: {PROGRAM} status {name} -n {places[0]}"
    here = [other for where, other in found if where == namespace]
    close = difflib.get_close_matches(name, here, n=3, cutoff=0.6)
    if close:
        return f"; did you mean {' or '.join(close)}? ({PROGRAM} list -n {namespace})"
    return f"; {PROGRAM} list -A shows every canary" if everywhere else ""


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    console = Console(stdout or sys.stdout, stderr or sys.stderr)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    _fill_common_defaults(args)
    try:
        return asyncio.run(_run(args, console))
    except CtlError as exc:
        console.note(f"error: {exc.message}")
        return next(code for kind, code in ERROR_EXITS if isinstance(exc, kind))
    except KeyboardInterrupt:
        console.note("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # one line, never a traceback; CANARYCTL_DEBUG=1 shows it
        if os.environ.get("CANARYCTL_DEBUG"):
            raise
        console.note(f"error: unexpected {type(exc).__name__}: {exc}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
