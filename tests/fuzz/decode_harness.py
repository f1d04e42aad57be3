"""atheris entry point for the body decoder fuzz target in decode_target.py.

Run it for a minute, keeping new inputs out of the committed seed corpus (libFuzzer writes
new inputs into the first corpus folder only)::

    mkdir -p /tmp/fuzz-corpus
    python -m tests.fuzz.decode_harness -max_total_time=60 \
        -dict=tests/fuzz/json.dict /tmp/fuzz-corpus tests/fuzz/corpus

A crash prints the Python traceback and saves the input as ``crash-<sha1>``; replay it with
``python -m tests.fuzz.decode_harness crash-<sha1>``.
"""

from __future__ import annotations

import sys


def main() -> None:
    import atheris

    # Instrument the collector's modules (and the target's own checks) for coverage
    # feedback. pydantic-core and orjson are compiled, so their branches are not seen.
    with atheris.instrument_imports(include=["collector", "tests.fuzz.decode_target"]):
        from tests.fuzz.decode_target import check_input

    atheris.Setup(sys.argv, check_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
