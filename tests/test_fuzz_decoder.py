"""The body decoder fuzz target: seed corpus replay, a bounded atheris run, and a
hypothesis run over random bytes for machines where atheris is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.decode_target import check_input

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "tests" / "fuzz"
CORPUS = FUZZ / "corpus"
SEEDS = sorted(CORPUS.iterdir())
# Seconds of coverage-guided fuzzing per test run; raise it locally for a longer search.
ATHERIS_SECONDS = int(os.environ.get("FUZZ_SECONDS", "20"))


def test_seed_corpus_is_small() -> None:
    assert len(SEEDS) >= 30
    for seed in SEEDS:
        assert seed.stat().st_size <= 4096, seed.name


@pytest.mark.parametrize("seed", SEEDS, ids=[seed.name for seed in SEEDS])
def test_seed_replays_cleanly(seed: Path) -> None:
    check_input(seed.read_bytes())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.integers(0, 31),
    seed=st.sampled_from(SEEDS),
    cut=st.integers(0, 4096),
    noise=st.binary(max_size=64),
)
def test_mutated_seeds_decode_cleanly(mode: int, seed: Path, cut: int, noise: bytes) -> None:
    """Splice random bytes into a seed under a random mode: a cheap, uninstrumented fuzz."""
    body = seed.read_bytes()[1:]
    check_input(bytes([mode]) + body[:cut] + noise + body[cut:])


def test_atheris_run_finds_no_crash(tmp_path: Path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.fail("atheris is not installed; install the dev extra: pip install -e '.[dev]'")
    new_inputs = tmp_path / "corpus"
    new_inputs.mkdir()
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.decode_harness",
        f"-max_total_time={ATHERIS_SECONDS}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-max_len=8192",
        f"-dict={FUZZ / 'json.dict'}",
        f"-artifact_prefix={tmp_path}/",
        str(new_inputs),
        str(CORPUS),
    ]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=ATHERIS_SECONDS + 60,
    )
    crashes = sorted(tmp_path.glob("crash-*")) + sorted(tmp_path.glob("timeout-*"))
    details = "\n".join(f"{path.name}: {path.read_bytes()[:300]!r}" for path in crashes)
    assert result.returncode == 0, (
        f"atheris exited with {result.returncode}; inputs:\n{details}\n"
        f"output tail:\n{result.stderr[-4000:]}"
    )
    assert "Done" in result.stderr, result.stderr[-2000:]
