"""4. pynvml 13.0.1's own pytest suite (pynvml_utils/tests/test_nvml.py), in its own venv
(pynvml and nvidia-ml-py both install a module named `pynvml`; the suite tests the pynvml
package's copy) against each built-in profile."""
import re

import pytest

import fgpu

DESELECT = [
    # pynvml 13's own bug: the parametrize list's first entry for p2pIndex is a ctypes-incompatible
    # value, so nvmlDeviceGetP2PStatus raises ctypes.ArgumentError before reaching any library.
    "test_nvml.py::test_nvmlDeviceGetP2PStatus[index0]",
    # Require NVLink on every link (asserts nvmlDeviceGetNvLinkCapability succeeds for links 0-5);
    # the fake models PCIe-only nodes and reports NVLink NOT_SUPPORTED, like a PCIe board.
    *[f"test_nvml.py::test_nvml_nvlink_capability[{i}]" for i in range(6)],
]


@pytest.mark.parametrize("name", fgpu.BUILTIN)
def test_pynvml_suite(name, tmp_path):
    suite = next((fgpu.VENV_PYNVML / "lib").glob("python3*/site-packages/pynvml_utils/tests/test_nvml.py"))
    args = [str(fgpu.VENV_PYNVML / "bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
            f"--rootdir={suite.parent}", suite.name]
    for d in DESELECT:
        args += ["--deselect", d]
    r = fgpu.run(args, fgpu.env_for(name), check=False, cwd=suite.parent)
    summary = r.stdout.strip().splitlines()[-1]
    print(summary)
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error|errors|skipped|xfailed|xpassed|deselected)", summary)}
    assert r.returncode == 0, r.stdout[-6000:]
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0 and counts.get("errors", 0) == 0
    assert counts.get("deselected") == len(DESELECT), summary
    assert counts.get("passed", 0) >= 20, summary
