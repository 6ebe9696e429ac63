"""How often the judge's question-quality verdicts parse, and whether they tell good questions from bad, with the
question-verdict demonstrations (agents.prompts) against the answer-verdict demonstration the judge was shown before.

    python bench/judge_format.py [--run RUN_DIR] [--questions 24] [--anchors 24] [--samples 2] [--seed 0]

The judge is the model of RUN_DIR's latest checkpoint (its config's rubric, temperature, top_p and max_tokens), or
without --run the base model of configs/arithmetic-cpu.yaml. It scores, under both prompts:
- proposals: the questions RUN_DIR's proposers wrote (its tables/proposals-*.json), or without --run the seed file's;
- anchors: seed questions with reference answers (known good) and the same cut to half their words (known bad,
  selfplay.anchors.spoiled), alternately.
Per prompt: the share of verdicts whose score parses (agents.parsing.parse_score), the mean score on proposals, and
the anchor accuracy (good at judge.quality_threshold or above, bad below it; over parsed verdicts). Sampling with
HF transformers `generate` (the same model and sampling settings as the engines). Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import sys
import tempfile
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import offline, resolve_dtype  # noqa: E402

CONFIG = ROOT / "configs/arithmetic-cpu.yaml"


def proposals_of(run_dir: Path) -> list[str]:
    questions = []
    for path in sorted(glob.glob(str(run_dir / "tables/proposals-*.json"))):
        table = json.loads(Path(path).read_text())
        column = table["columns"].index("question")
        questions += [row[column] for row in table["rows"] if row[column]]
    return list(dict.fromkeys(questions))


def judge_model(config, run_dir: Path | None, scratch: Path) -> str:
    """A model directory holding the judge: the base model, or RUN_DIR's latest checkpoint merged into it."""
    from selfplay.embedded_model import resolve_model_path

    base = resolve_model_path(config.model.path, config.model.cache_dir)
    if run_dir is None:
        return base
    sys.path.insert(0, str(ROOT / "launch"))
    import eval as launch_eval

    return str(launch_eval.merge_adapter(config, base, launch_eval.resolve_adapter(run_dir), scratch / "judge"))


def sample_verdicts(model_dir: str, dtype: str, conversations: list, samples: int, config) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    texts = [tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
             for messages in conversations]
    verdicts = []
    for start in range(0, len(texts), 16):
        batch = tokenizer(texts[start:start + 16], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            output = model.generate(**batch, do_sample=True, temperature=config.judge.temperature,
                                    top_p=config.judge.top_p, max_new_tokens=config.judge.max_tokens,
                                    num_return_sequences=samples, pad_token_id=tokenizer.pad_token_id)
        verdicts += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        print(f"  {len(verdicts)} of {len(texts) * samples} verdicts", file=sys.stderr, flush=True)
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run directory: its latest checkpoint judges its proposals")
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--anchors", type=int, default=24)
    parser.add_argument("--samples", type=int, default=2, help="verdicts per question and prompt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    offline()
    import torch

    from agents.parsing import neutralise_tags, parse_score, special_markers
    from agents.prompts import JUDGE_DEMONSTRATION, JUDGE_SYSTEM, _demonstrated, judge_question_messages
    from rewards.rubric import load_rubric, render_question
    from selfplay.anchors import spoiled
    from selfplay.config import load_config
    from selfplay.question_pool import load_seed_file

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    config = load_config(args.run / "config.yaml" if args.run else CONFIG)
    rubric = load_rubric(config.judge.rubric)
    seeds = [seed for seed in load_seed_file(ROOT / config.pool.seed_file) if seed.answer is not None]
    chosen = rng.sample(seeds, min(args.anchors, len(seeds)))
    anchors = [(seed.text, True) if index % 2 == 0 else (spoiled(seed.text), False)
               for index, seed in enumerate(chosen)]
    pool = proposals_of(args.run) if args.run else [seed.text for seed in seeds]
    proposals = rng.sample(pool, min(args.questions, len(pool)))
    with tempfile.TemporaryDirectory(prefix="judge-format-") as scratch:
        model_dir = judge_model(config, args.run, Path(scratch))
        from transformers import AutoTokenizer

        markers = special_markers(AutoTokenizer.from_pretrained(model_dir))
        prompts = {
            "answer_demonstration": lambda question: _demonstrated(
                JUDGE_SYSTEM, [JUDGE_DEMONSTRATION], render_question(rubric, neutralise_tags(question)), markers),
            "question_demonstrations": lambda question: judge_question_messages(rubric, question, markers),
        }
        questions = proposals + [text for text, _ in anchors]
        conversations = [prompt(question) for prompt in prompts.values() for question in questions]
        verdicts = sample_verdicts(model_dir, resolve_dtype("auto"), conversations, args.samples, config)
    per_prompt = len(questions) * args.samples
    result = {"run": str(args.run) if args.run else None, "proposals": len(proposals), "anchors": len(anchors),
              "samples": args.samples, "threshold": config.judge.quality_threshold}
    for index, name in enumerate(prompts):
        scores = [parse_score(verdict).value for verdict in verdicts[index * per_prompt:(index + 1) * per_prompt]]
        on_proposals = scores[:len(proposals) * args.samples]
        on_anchors = scores[len(proposals) * args.samples:]
        labels = [good for _, good in anchors for _ in range(args.samples)]
        judged = [(score >= config.judge.quality_threshold) == good
                  for score, good in zip(on_anchors, labels) if score is not None]
        parsed = [score for score in on_proposals if score is not None]
        result[name] = {
            "parsed": round(sum(score is not None for score in scores) / len(scores), 3),
            "parsed_on_proposals": round(len(parsed) / len(on_proposals), 3) if on_proposals else None,
            "proposal_score_mean": round(fmean(parsed), 2) if parsed else None,
            "at_threshold_on_proposals": round(sum(s >= config.judge.quality_threshold for s in parsed)
                                               / len(on_proposals), 3) if on_proposals else None,
            "anchor_accuracy": round(fmean(judged), 3) if judged else None,
        }
        print(f"{name}: {result[name]}", file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
