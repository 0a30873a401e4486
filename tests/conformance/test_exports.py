"""8. The export set: `nm -D --defined-only` of the fake has exactly the nvml* names of NVIDIA's
libnvidia-ml.so.535.261.03 from the libnvidia-ml1 deb (clients pick ABI variants by symbol
presence, so a missing or an extra name changes their behaviour)."""
import subprocess

import fgpu


def nvml_exports(path):
    out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.split() and line.split()[-1].startswith("nvml")}


def test_export_set_matches_real_535():
    real = nvml_exports(fgpu.REAL_LIB)
    fake = nvml_exports((fgpu.LIB_DIR / "libnvidia-ml.so.1").resolve())
    assert len(real) == 332
    assert sorted(real - fake) == [], "missing"
    assert sorted(fake - real) == [], "extra"


def test_soname():
    out = subprocess.run(["readelf", "-d", str((fgpu.LIB_DIR / "libnvidia-ml.so.1").resolve())],
                         capture_output=True, text=True, check=True).stdout
    assert "Library soname: [libnvidia-ml.so.1]" in out
