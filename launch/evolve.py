"""Entry point of a self-play run.

    ray job submit --working-dir . -- python launch/evolve.py --config configs/tiny-cpu.yaml [key=value ...]
    python launch/evolve.py --config configs/tiny-cpu.yaml --dry-run
    python launch/evolve.py --resume runs/tiny-cpu-20261125-101500

Config and rubric problems stop the job here, before Ray starts, with one line and exit status 2.
"""

import argparse
import sys

import _bootstrap  # noqa: F401

from selfplay.config import ConfigError, config_to_yaml


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Multi-Agent Evolve self-play run")
    parser.add_argument("--config", help="YAML run config (configs/*.yaml)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last completed iteration")
    parser.add_argument("--dry-run", action="store_true", help="validate, print the resolved config, exit")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=2e-5 judge.rubric=lenient")
    args = parser.parse_args(argv)
    if not args.config and not args.resume:
        parser.error("one of --config or --resume is required")
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
        print(config_to_yaml(config), end="")
        return 0
    from selfplay.driver import run
    from selfplay.memory_kill import MemoryKilled

    try:
        run_dir = run(config, resume_dir=args.resume)
    except PreflightError as error:  # what only the connected cluster can tell (its resources)
        print(f"config error: {error}", file=sys.stderr)
        return 2
    except MemoryKilled as error:
        print(error, file=sys.stderr)
        return 1
    print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    from rollout.exit_cleanup import no_orphans

    with no_orphans():
        sys.exit(main())
