"""The OpenAI emulator (with its Files + Batch API) under uvicorn, for the flush and
ingest benchmarks. Batches validate at once and finish ``--processing`` seconds after
creation, so a 50,000-line batch completes within the benchmark.

    python -m tests.benchmarks.emulator_server --port 9400 --files-dir DIR
"""

from __future__ import annotations

import argparse


def main() -> None:
    import uvicorn

    from adapters.emulators.openai.batch.emulator import BatchEmulatorConfig
    from adapters.emulators.openai.server import OpenAIEmulatorConfig, create_app

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--files-dir", required=True)
    parser.add_argument("--processing", type=float, default=1.0)
    args = parser.parse_args()
    batch_config = BatchEmulatorConfig(
        validation_delay=0.0,
        processing_time=args.processing,
        finalize_delay=0.0,
        max_creates_per_hour=None,
        directory=args.files_dir,
    )
    app = create_app(OpenAIEmulatorConfig(), batch_config=batch_config)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="asyncio",
        http="h11",
        log_level="warning",
        access_log=False,
        h11_max_incomplete_event_size=64 * 1024,
    )


if __name__ == "__main__":
    main()
