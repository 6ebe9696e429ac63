"""A private local Ray head for the demo (and the launch-path test): its own directory, free ports, its own token,
and a stop that ends exactly that head's processes, never another Ray cluster on the machine.

    python launch/ray_head.py start DIR [--num-cpus N]   # prints the dashboard address (for `ray job submit`)
    python launch/ray_head.py follow DIR SUBMISSION_ID [--log FILE]   # the job's own log; exit 0 iff it succeeded
    python launch/ray_head.py stop DIR [--remove]

DIR holds the head's token (`DIR/auth_token`, mode 600: the cluster runs with RAY_AUTH_MODE=token) and Ray's
temp directory (`DIR/ray`, sessions and logs). Use the same environment for `ray job submit`:
RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=DIR/auth_token. Stop finds every process whose command line names DIR/ray
(or, for Ray's client server, the head's GCS port) and all their descendants (vLLM's engine-core processes are
children of Ray workers and ignore SIGTERM once orphaned), sends SIGTERM, and SIGKILLs what is left after a grace
period.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import TextIO

import psutil

TOKEN_FILE = "auth_token"
ADDRESS_FILE = "dashboard_address"
GCS_PORT_FILE = "gcs_port"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now (all held open together, so none repeats)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def head_environment(directory: Path) -> dict[str, str]:
    """The environment variables that `ray start`, `ray job submit` and `ray job logs` need for this head."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(directory / TOKEN_FILE)}


def write_token(directory: Path) -> Path:
    path = directory / TOKEN_FILE
    if not path.is_file():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path


def start_command(directory: Path, num_cpus: int) -> tuple[list[str], str]:
    """The `ray start --head` command line for a head of its own, and its dashboard (job submission) address."""
    gcs, dashboard, client, agent_http, agent_grpc, metrics, runtime_env = free_ports(7)
    command = ["ray", "start", "--head", "--dashboard-host", "127.0.0.1", "--disable-usage-stats",
               "--num-cpus", str(num_cpus), "--temp-dir", str(directory / "ray"), "--port", str(gcs),
               "--dashboard-port", str(dashboard), "--ray-client-server-port", str(client),
               "--dashboard-agent-listen-port", str(agent_http), "--dashboard-agent-grpc-port", str(agent_grpc),
               "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env)]
    return command, f"http://127.0.0.1:{dashboard}"


def start(directory: Path, num_cpus: int, environment: dict[str, str] | None = None) -> str:
    """Start the head; returns its dashboard address. `environment` (default: this process's, with the head's own
    token from `write_token` and this Python's bin directory first on PATH) is what `ray start`, and so every job
    on the head, runs with."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if environment is None:
        write_token(directory)
        tools = str(Path(sys.executable).parent)  # the job's `python` is the first one on the head's PATH
        environment = os.environ | head_environment(directory) | {
            "PATH": os.pathsep.join([tools, os.environ.get("PATH", "")])}
    command, address = start_command(directory, num_cpus)
    (directory / GCS_PORT_FILE).write_text(command[command.index("--port") + 1])
    result = subprocess.run(command, env=environment, capture_output=True, text=True)
    if result.returncode != 0:
        stop(directory)
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"ray start failed (status {result.returncode}): {tail[0]}; "
                           f"logs under {directory / 'ray'}")
    (directory / ADDRESS_FILE).write_text(address)
    return address


def _names_head(arguments: list[str], ray_directory: str, gcs_address_suffix: str | None) -> bool:
    """Ray's processes name the head's Ray temp dir, except the client server, which names only the GCS address."""
    return any(ray_directory in argument or (gcs_address_suffix is not None and argument.startswith("--address=")
                                             and argument.endswith(gcs_address_suffix)) for argument in arguments)


def head_processes(directory: Path) -> list[psutil.Process]:
    """The head's processes (their command line names its Ray temp dir or GCS port) and all their descendants;
    never this process or its ancestors (a shell whose command line names the directory)."""
    directory = directory.resolve()
    port_file = directory / GCS_PORT_FILE
    gcs_suffix = f":{port_file.read_text().strip()}" if port_file.is_file() else None
    spared = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter(["cmdline"]):
        arguments = process.info["cmdline"] or []
        if process.pid in spared or not _names_head(arguments, str(directory / "ray"), gcs_suffix):
            continue
        try:
            for member in [process, *process.children(recursive=True)]:
                if member.pid not in spared:
                    found[member.pid] = member
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def stop(directory: Path, grace_s: float = 10.0) -> int:
    """End every process of the head in `directory`; returns how many there were."""
    processes = head_processes(directory)
    for process in processes:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return len(processes)


def follow(directory: Path, submission_id: str, log_path: Path | None = None) -> int:
    """Print the job's log as it comes (only the job's own lines, not the CLI's banners), also into `log_path`;
    0 iff the job succeeded."""
    import asyncio
    import logging

    from ray.job_submission import JobStatus, JobSubmissionClient

    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)  # "WebSocket closed ..." lines

    client = JobSubmissionClient((directory / ADDRESS_FILE).read_text().strip())

    async def tail(log: TextIO | None) -> None:
        async for lines in client.tail_job_logs(submission_id):
            print(lines, end="", flush=True)
            if log is not None:
                log.write(lines)
                log.flush()

    with open(log_path, "w") if log_path else nullcontext() as log:
        asyncio.run(tail(log))
    info = client.get_job_info(submission_id)
    if info.status == JobStatus.SUCCEEDED:
        return 0
    reason = (info.message or "").splitlines()[0] if info.message else "no status message"
    print(f"job {submission_id} {info.status.value.lower()}: {reason}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a private local Ray head (start/stop)")
    parser.add_argument("action", choices=["start", "follow", "stop"])
    parser.add_argument("directory", type=Path, help="the head's own directory (token, Ray temp dir)")
    parser.add_argument("submission_id", nargs="?", help="follow: the job's submission id")
    parser.add_argument("--num-cpus", type=int, default=max(os.cpu_count() or 1, 3))
    parser.add_argument("--remove", action="store_true", help="stop: also delete the directory")
    parser.add_argument("--log", type=Path, help="follow: also write the job's log to this file")
    args = parser.parse_args(argv)
    if args.action == "start":
        try:
            print(start(args.directory, args.num_cpus))
        except RuntimeError as error:
            print(f"ray_head: {error}", file=sys.stderr)
            return 1
        return 0
    if args.action == "follow":
        if not args.submission_id:
            parser.error("follow needs the job's SUBMISSION_ID")
        try:
            return follow(args.directory, args.submission_id, args.log)
        except (KeyboardInterrupt, BrokenPipeError):
            return 130
    stop(args.directory)
    if args.remove:
        time.sleep(0.2)
        shutil.rmtree(args.directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
