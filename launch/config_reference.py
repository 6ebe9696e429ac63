"""Write docs/config-reference.md from the config schema (selfplay/config_reference.py).

    python launch/config_reference.py [--output docs/config-reference.md]
"""

import argparse
from pathlib import Path

import _bootstrap  # noqa: F401

from selfplay.config_reference import config_reference

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "config-reference.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(config_reference())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
