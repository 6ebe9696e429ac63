"""bench/learning.py: the bare-arithmetic held-out set built from GSM8K's calculator annotations, and the tables
comparing trained modes with the base model and with each other, by hand."""

import json

from bench.learning import arms_table, between_arms, calculations, table

ROWS = [
    {"answer": "She sold 48/2 = <<48/2=24>>24 clips.\nIn all <<48+24=72>>72.\n#### 72"},
    {"answer": "<<0.2*50=10>>10 (a decimal) and <<48/2=24>>24 (seen) and <<7/2=3.5>>3.5 (not whole)\n#### 3"},
    {"answer": "<<100-50-30-15=5>>5 (three operators) <<12=12>>12 (none) <<3*4=13>>13 (wrong) <<2+3*4=14>>14\n#### 14"},
]


def test_calculations_keep_distinct_whole_number_one_or_two_operator_annotations_in_order():
    assert calculations(ROWS, 10) == [{"question": "What is 48 / 2?", "answer": "24"},
                                      {"question": "What is 48 + 24?", "answer": "72"},
                                      {"question": "What is 2 + 3 * 4?", "answer": "14"}]
    assert calculations(ROWS, 2) == calculations(ROWS, 10)[:2]


def test_table_pairs_every_trained_mode_with_the_base_row():
    paired = {"difference": 0.05, "ci95": [0.01, 0.09], "gained": 7, "lost": 2, "mcnemar_p": 0.0703}
    result = {"base": {"calculations": {"n": 100, "accuracy": 0.2, "lenient_accuracy": 0.25}},
              "full": {"calculations": {"accuracy": 0.24, "lenient_accuracy": 0.3,
                                        "vs_baseline": {"lenient": paired}}}}
    assert table(result, ["full"], ["calculations"]).splitlines()[2:] == [
        "| calculations (n=100) | base | 0.200 | 0.250 | |",
        "| | full | 0.240 | 0.300 | +0.050 (+0.010 to +0.090; 7/2; 0.07) |"]


def test_each_trained_mode_is_compared_with_the_ones_run_before_it(tmp_path):
    lenient = {"sft-only": [True, False, False, True], "solver-only": [True, True, False, True],
               "full": [False, True, True, True]}
    for mode, grades in lenient.items():
        (tmp_path / mode).mkdir()
        rows = [{"id": f"q{index}", "correct": False, "lenient_correct": grade} for index, grade in enumerate(grades)]
        rows_file = tmp_path / mode / "trained-calculations.jsonl"
        rows_file.write_text("".join(json.dumps(row) + "\n" for row in rows[::-1]))  # order does not matter
    compared = between_arms(tmp_path, list(lenient), ["calculations"])
    assert list(compared) == ["solver-only vs sft-only", "full vs sft-only", "full vs solver-only"]
    # full vs sft-only: q1 and q2 gained, q0 lost, q3 right in both
    full_vs_sft = compared["full vs sft-only"]["calculations"]["lenient"]
    assert (full_vs_sft["gained"], full_vs_sft["lost"], full_vs_sft["difference"]) == (2, 1, 0.25)
    assert compared["solver-only vs sft-only"]["calculations"]["strict"]["difference"] == 0.0
    lines = arms_table(compared, ["calculations"]).splitlines()
    assert len(lines) == 5 and lines[3].startswith("| calculations | full vs sft-only | +0.250 (")
    assert lines[3].endswith("; 2/1; 1) |")
    assert between_arms(tmp_path, ["full"], ["calculations"]) == {}


def test_held_out_sets_default_to_the_shipped_files_and_take_paths_by_flag(tmp_path):
    import pytest

    from bench.learning import SHIPPED_SETS, held_out_sets

    (tmp_path / "a").mkdir()
    shipped = held_out_sets(tmp_path / "a", [], None, limit=5)
    assert list(shipped) == ["arithmetic", "arithmetic_hard"]
    for name in shipped:
        assert shipped[name].read_text().splitlines() == SHIPPED_SETS[name].read_text().splitlines()[:5]
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    gsm8k = tmp_path / "train.jsonl"
    gsm8k.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    (tmp_path / "b").mkdir()
    both = held_out_sets(tmp_path / "b", [("mine", mine)], gsm8k, limit=None)
    assert list(both) == ["mine", "calculations", "one_step", "multi_step"]  # no shipped set once one is named
    assert json.loads(both["calculations"].read_text().splitlines()[0]) == {"question": "What is 48 / 2?",
                                                                            "answer": "24"}
    assert len(both["multi_step"].read_text().splitlines()) == 3  # every row has two or more calculations
    with pytest.raises(SystemExit, match="--set lost=.*: file not found"):
        held_out_sets(tmp_path / "b", [("lost", tmp_path / "nowhere.jsonl")], None, None)


def test_an_arm_finished_by_an_earlier_invocation_is_kept_only_with_every_sets_evaluation(tmp_path):
    from bench.learning import MODE_RESULT, finished_arm

    assert finished_arm(tmp_path, ["arithmetic"]) is None
    result = {"run_dir": "r", "arithmetic": {"n": 3}}
    (tmp_path / MODE_RESULT).write_text(json.dumps(result))
    assert finished_arm(tmp_path, ["arithmetic"]) is None  # its rows are missing
    (tmp_path / "trained-arithmetic.jsonl").write_text("")
    assert finished_arm(tmp_path, ["arithmetic"]) == result
    assert finished_arm(tmp_path, ["arithmetic", "arithmetic_hard"]) is None  # a set it was not evaluated on
