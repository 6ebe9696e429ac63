"""Run Multi-Agent Evolve self-play: a proposer, a solver and a judge played by one model, trained together.

    python launch/evolve.py --config configs/arithmetic-cpu.yaml [key=value ...]
    ray job submit --working-dir . -- python launch/evolve.py --config configs/tiny-cpu.yaml [key=value ...]
    python launch/evolve.py --config configs/tiny-cpu.yaml --dry-run
    python launch/evolve.py --resume runs/tiny-cpu-20261125-101500 [key=value ...]

Overrides are dotted keys (docs/config-reference.md lists them all). Config and rubric problems stop the job
here, before Ray starts, with one line and exit status 2.
"""

import argparse
import os
import re
import sys
from pathlib import Path

import _bootstrap  # noqa: F401

from selfplay.config import ConfigError, config_to_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def shipped_configs() -> str:
    """One line per configs/*.yaml: its name and what its leading comment says first (up to a colon or a stop)."""
    lines = ["shipped configs:"]
    for path in sorted(CONFIGS.glob("*.yaml")):
        first = next((line for line in path.read_text().splitlines() if line.strip()), "")
        summary = re.split(r"[:.;] ", first.lstrip("# ").strip())[0] if first.startswith("#") else ""
        lines.append(f"  configs/{path.name:<22} {summary}")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=shipped_configs(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML run config (configs/*.yaml)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last completed iteration")
    parser.add_argument("--dry-run", action="store_true", help=(
        "validate, print the resolved config and the placement plan (on the cluster at RAY_ADDRESS, else on this "
        "machine), exit"))
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=2e-5 judge.rubric=lenient")
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("one of --config or --resume is required")
    if args.config and args.resume:
        parser.exit(2, "evolve.py: --config with --resume: a resumed run reads the config.yaml saved in its run "
                       "directory; give changes as key=value overrides\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from selfplay.preflight import PreflightError, load_run_config, preflight

    try:
        config = load_run_config(args.config, args.overrides, args.resume)
        preflight(config)
    except (ConfigError, PreflightError) as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        from selfplay.preflight import plan_run_placement, resolved_auto_values
        from selfplay.wiring import dry_run_nodes

        # on a cluster (RAY_ADDRESS) a plan it cannot hold is refused; this machine may only be where a config for
        # a cluster is checked, so there the plan is reported
        try:
            nodes, where = dry_run_nodes(config, os.environ)
            plan = plan_run_placement(config, nodes).lines()
        except PreflightError as error:
            if os.environ.get("RAY_ADDRESS"):
                print(f"config error: {error}", file=sys.stderr)
                return 2
            plan = [f"a run here would stop: {error}"]
        print(config_to_yaml(config), end="")
        resolved = resolved_auto_values(config, os.environ)
        if resolved:
            print("# auto values on this machine:")
            print("\n".join(f"#   {key}: {value}" for key, value in resolved.items()))
        print(f"# placement plan on {where}:")
        print("\n".join(f"#   {line}" for line in plan))
        return 0
    from selfplay.driver import run
    from selfplay.run_end import RunEnded

    try:
        run_dir = run(config, resume_dir=args.resume)
    except PreflightError as error:  # what only the connected cluster can tell (its resources)
        print(f"config error: {error}", file=sys.stderr)
        return 2
    except RunEnded as error:
        print(error, file=sys.stderr)
        return 1
    print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    from rollout.exit_cleanup import no_orphans

    with no_orphans():
        sys.exit(main())
