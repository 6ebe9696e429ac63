"""bench/gpu_smoke.py, the check run on a bare GPU box, keeps working: here on the CPU with the tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("packing", [[], ["--pack"]])
def test_gpu_smoke_passes_on_the_tiny_model(tiny_model_dir, packing):
    # float32: the exports must reproduce the learner to 1e-3, which bf16 (picked by 'auto' on CPUs with AVX-512
    # BF16) does not resolve: its reloads differed by up to 0.043, inside the smoke's own bf16 tolerance
    result = subprocess.run([sys.executable, str(ROOT / "bench/gpu_smoke.py"), "--model", str(tiny_model_dir),
                             "--dtype", "float32", "--steps", "1", "--batch", "2", "--prompt-tokens", "16",
                             "--completion-tokens", "16", *packing],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    checks = report["checks"]
    assert report["passed"] and report["device"] == "cpu" and len(report["steps"]) == 1
    assert report["packed"] is bool(packing)
    assert checks["adapter_export"]["max_diff"] <= 1e-3 and checks["merged_export"]["max_diff"] <= 1e-3
    assert checks["base_max_diff"] > max(checks["adapter_export"]["max_diff"], checks["merged_export"]["max_diff"])
    assert checks["checkpoint_restored_exactly"] is True
