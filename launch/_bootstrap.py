"""Makes the project's packages importable when a launch script runs from a checkout (e.g. under `ray job submit
--working-dir .`, where the project is not pip-installed in the job's environment)."""

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))
