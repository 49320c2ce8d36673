"""Puts tests/ on sys.path, so any test module can `import strategies`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
