"""9. Fidelity: `nvidia-smi -q -x` (535) over the fake vs the real capture of the same board,
field by field under the rules of fidelity.py; at least 90 % of the compared fields must match."""
import re

import pytest

import fgpu
import fidelity

BOARDS = {"h100": "qx-h100.xml", "a100-40gb": "qx-a100.xml", "l40s": "qx-l40s.xml", "t4": "qx-t4.xml"}


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_fidelity(name):
    capture = fgpu.REPO / "tests/fixtures/hardware" / BOARDS[name]
    gpus = len(re.findall(r"<gpu id=", capture.read_text()))
    out = fgpu.run([str(fgpu.NVIDIA_SMI), "-q", "-x"], fgpu.env_for(name, n=gpus)).stdout
    matches, compared, mismatches = fidelity.compare(out, str(capture))
    ratio = matches / compared
    print(f"\nfidelity {name}: {matches}/{compared} = {ratio:.1%}")
    for path, ours, real in mismatches:
        print(f"  {path}: ours={ours!r} real={real!r}")
    assert compared >= 100, "too few comparable fields: the comparison itself is broken"
    assert ratio >= 0.90
