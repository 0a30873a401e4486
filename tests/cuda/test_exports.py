"""The export set: `nm -D --defined-only` of the fake libcuda has exactly the names of NVIDIA's
libcuda.so.535.261.03 from Debian's libcuda1 deb (clients pick ABI variants by name), and the
library answers to the names CUDA clients and NVIDIA's tools load."""
import subprocess

import cudafix


def exports(path):
    out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.split() and line.split()[-1].startswith("cu")}


def test_export_set_matches_real_535():
    real = exports(cudafix.REAL_LIBCUDA)
    fake = exports((cudafix.LIB_DIR / "libcuda.so.1").resolve())
    assert len(real) == 620
    assert sorted(real - fake) == [], "missing"
    assert sorted(fake - real) == [], "extra"
    # The committed list build.rs generates stubs from is the same list.
    committed = set((cudafix.REPO / "cuda-shim/exports-535.txt").read_text().split())
    assert committed == real


def test_soname_and_names():
    out = subprocess.run(["readelf", "-d", str((cudafix.LIB_DIR / "libcuda.so.1").resolve())], capture_output=True, text=True,
                         check=True).stdout
    assert "Library soname: [libcuda.so.1]" in out
    for name in ["libcuda.so.1", "libcuda.so", "libcuda.so.535.261.03"]:
        assert (cudafix.LIB_DIR / name).resolve() == (cudafix.LIB_DIR / "libcuda.so.1").resolve()
