import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fgpu  # noqa: E402


def pytest_report_header(config):
    return [f"fake lib: {fgpu.LIB_DIR}", f"nvidia root: {fgpu.NVIDIA_ROOT}", f"profiles: {', '.join(fgpu.BUILTIN)}"]


@pytest.fixture(scope="session", autouse=True)
def _prerequisites():
    missing = [p for p in (fgpu.LIB_DIR / "libnvidia-ml.so.1", fgpu.NVIDIA_SMI, fgpu.NVML_H, fgpu.REAL_LIB) if not p.exists()]
    if missing:
        pytest.fail(f"missing {missing}: run tests/conformance/run.sh, which installs them")
