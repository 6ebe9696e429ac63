"""Merge the adapters of chosen checkpoints (of one run or several) into one standard PEFT adapter.

    python launch/merge.py runs/RUN --iterations 10,20,30 --method linear --output merged/
    python launch/merge.py runs/RUN_A runs/RUN_B --method slerp --t 0.3 --output merged/
    python launch/merge.py runs/RUN --iterations 8,9,10 --method ties --density 0.5 --weights 1,1,2 --output merged/

Each SOURCE is a run directory, a run checkpoint (RUN_DIR/checkpoints/iter-N) or a PEFT adapter directory (of a run
with one adapter per role, learner.adapters per_role: --role picks whose);
--iterations picks those iterations' checkpoints from every run directory given (without it, a run directory means
its latest checkpoint). The merge itself is learner/merge.py: in the space of weight deltas, factored back by SVD to
--rank (default: the inputs' summed ranks, exact for linear and slerp; a TIES result's truncation error is printed).
The output directory (adapter_config.json, adapter_model.safetensors, merge.json) loads in
`launch/eval.py --adapter` and as a vLLM LoRA; --output may be new, empty or an earlier merge's output (its merge.json
marks it), which is replaced. Problems exit with status 2 and one line; the last stdout line is a JSON summary. A run
keeps its last `run.keep_checkpoints` checkpoints (and each eval set's best).
"""

from __future__ import annotations

import argparse
import json
import shutil
import os
import sys
from pathlib import Path

import _bootstrap  # noqa: F401

from learner.merge import METHODS, LoRAFactors, MergeError, lora_factors, merge_adapters  # noqa: E402
from selfplay.adapters import ROLES, AdapterError, AdapterWeights, read_adapter, resolve_adapter  # noqa: E402
from selfplay.checkpoint import checkpoint_root  # noqa: E402

SUMMARY = "merge.json"  # written into every output with its adapter: what marks a directory as a merge's output


def number_list(kind):
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Merge LoRA adapters of run checkpoints (linear, slerp, ties)")
    parser.add_argument("sources", nargs="+", help="run directories, run checkpoints or PEFT adapter directories")
    parser.add_argument("--iterations", type=number_list(int), help="e.g. 10,20,30: these checkpoints of each run")
    parser.add_argument("--role", choices=ROLES, help="the role whose adapters to merge, in runs with one per role")
    parser.add_argument("--method", choices=METHODS, default="linear")
    parser.add_argument("--weights", type=number_list(float), help="one per adapter (linear, ties); default equal")
    parser.add_argument("--t", type=float, default=0.5, help="slerp position: 0 = first adapter, 1 = second")
    parser.add_argument("--density", type=float, default=1.0, help="ties: share of each delta kept by magnitude")
    parser.add_argument("--rank", type=int, help="rank of the merged adapter (default: sum of the inputs' ranks)")
    parser.add_argument("--output", required=True,
                        help="directory for the merged PEFT adapter: new, empty, or an earlier merge's (replaced)")
    return parser.parse_args(argv)


def expand_sources(sources: list[str], iterations: list[int] | None) -> list[Path]:
    """Run directories become their chosen (or latest) checkpoints; everything else is taken as given."""
    paths = []
    for source in map(Path, sources):
        if iterations and (source / "checkpoints").is_dir():
            for iteration in iterations:
                checkpoint = checkpoint_root(source) / f"iter-{iteration:06d}"
                if not checkpoint.is_dir():
                    kept = sorted(p.name for p in checkpoint_root(source).glob("iter-*"))
                    raise AdapterError(f"{source}: no checkpoint of iteration {iteration} (kept: "
                                       f"{', '.join(kept) or 'none'}; run.keep_checkpoints sets how many)")
                paths.append(checkpoint)
        else:
            paths.append(source)
    return paths


def check_output(target: Path) -> None:
    """Refuse an output the merge would destroy: anything but a new path, an empty directory or an earlier output."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise MergeError(f"--output {target}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / SUMMARY).is_file():
        raise MergeError(f"--output {target}: a non-empty directory that is not an earlier merge's output (it has no "
                         f"{SUMMARY}); choose a new directory")


def write_adapter(factors: LoRAFactors, like: AdapterWeights, target: Path, summary: dict) -> None:
    """A standard PEFT adapter of the factors (scaling 1: lora_alpha = r) and its summary, in place of `target`
    at once (`check_output` passed it)."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    rank = next(iter(factors.a.values())).shape[0]
    scratch = target.with_name(f"{target.name}.partial-{os.getpid()}")  # its own: never a directory of someone else's
    scratch.mkdir(parents=True)
    LoraConfig(r=rank, lora_alpha=rank, target_modules=list(like.target_modules), task_type="CAUSAL_LM",
               base_model_name_or_path=like.base_model).save_pretrained(str(scratch))
    tensors = {}
    for name in factors.a:
        tensors[f"{name}.lora_A.weight"] = factors.a[name].contiguous()
        tensors[f"{name}.lora_B.weight"] = factors.b[name].contiguous()
    save_file(tensors, scratch / "adapter_model.safetensors", metadata={"format": "pt"})
    (scratch / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    scratch.rename(target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    output = Path(args.output)
    try:
        check_output(output)
        paths = expand_sources(args.sources, args.iterations)
        if len(paths) < 2:
            raise MergeError(f"{len(paths)} adapter given; merging needs at least two (see --iterations)")
        adapters = [read_adapter(resolve_adapter(path, args.role)) for path in paths]
        factors = [lora_factors(adapter.tensors, adapter.scaling) for adapter in adapters]
        merged = merge_adapters(factors, args.method, args.weights, args.t, args.density, args.rank)
    except (AdapterError, MergeError) as error:
        print(f"merge: {error}", file=sys.stderr)
        return 2
    summary = {"output": str(output), "method": args.method, "sources": [str(path) for path in paths],
               "weights": args.weights, "t": args.t if args.method == "slerp" else None,
               "density": args.density if args.method == "ties" else None,
               "rank": next(iter(merged.factors.a.values())).shape[0],
               "relative_error": round(merged.relative_error, 6)}
    write_adapter(merged.factors, adapters[0], output, summary)
    print(f"merged {len(paths)} adapters ({args.method}) into {output}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
