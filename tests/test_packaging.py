"""A non-editable install (wheel) carries every module and registers every built-in plugin."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_wheel_install_registers_all_builtin_plugins(tmp_path):
    from taste_toolkit.registry import available

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), ROOT],
                   check=True, capture_output=True)
    (wheel,) = list(wheels.glob("taste_toolkit-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = (
        "import json, taste_toolkit, taste_toolkit.registry as r;"
        "print(json.dumps({'file': taste_toolkit.__file__, 'plugins': r.available()}))"
    )
    # Run outside the source tree so the editable checkout cannot be picked up instead.
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(target)))
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["file"].startswith(str(target))
    from taste_toolkit.registry import get

    expected = available()
    for kind, names in expected.items():
        # Built-in = defined inside the package: not fsq (the example plugin package) nor the
        # plugins other test modules register in this process (e.g. a test encoder).
        builtin = [n for n in names if get(kind, n).__module__.startswith("taste_toolkit.")]
        assert set(builtin) <= set(result["plugins"][kind]), kind


def test_torch_ranges_in_setup_exact_versions_in_constraints_used_by_install():
    """install_requires declares ranges (a CUDA or newer torch can stay); the tested exact pair
    lives in constraints.txt, which scripts/install.sh (and so CI) installs with."""
    import configparser
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(root, "setup.cfg"))
    requires = {re.split(r"[<>=!~ ]", line.strip())[0]: line.strip()
                for line in cfg["options"]["install_requires"].splitlines() if line.strip()}
    for name in ("torch", "torchaudio"):
        assert "==" not in requires[name], requires[name]
    with open(os.path.join(root, "constraints.txt"), encoding="utf-8") as f:
        pins = dict(line.strip().split("==") for line in f if "==" in line and not line.startswith("#"))
    assert set(pins) >= {"torch", "torchaudio"}
    with open(os.path.join(root, "scripts", "install.sh"), encoding="utf-8") as f:
        install = f.read()
    assert "-c constraints.txt -e \".[test]\"" in install and "-c constraints.txt torch torchaudio" in install
