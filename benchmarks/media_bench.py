"""Media benchmark: embedded generators' jobs per minute, media.create -> media.done, progress cadence.

Three parts, one run, on this machine:

- **generators**: each embedded generator (procedural image, animated
  video, procedural avatar) called directly, one job after another:
  seconds per job and jobs per minute (one process, ``SALON_MEDIA_CONCURRENCY=1``
  as shipped);
- **end to end**: a real ``salon serve`` (SQLite, in-process jobs) and one
  WebSocket session sending ``media.create`` for each kind, one at a time:
  latency from sending it to receiving ``media.done`` (p50/p95), jobs per
  minute through the whole stack, and the cadence of ``media.progress``
  events (events per job, the gap between consecutive ones);
- **diffusers step overhead**: the diffusers image generator against the
  same pipeline object called directly (same prompt, steps, size, seed),
  interleaved runs; ratio = direct time / generator time (1.0 = no overhead).
  The pipeline is a tiny random-weight Stable Diffusion (tests/diffusers_tiny.py):
  the real diffusers code path, where per-step overhead weighs most.

    .venv/bin/python benchmarks/media_bench.py [--runs 10] [--out benchmarks/results/media.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from services import Salon, machine_busy  # noqa: E402

from media.avatar.registry import create_avatar_builder  # noqa: E402
from media.generation import MediaRequest, PersonaLook  # noqa: E402
from media.images.registry import create_image_generator  # noqa: E402
from media.media_config import MediaConfig  # noqa: E402
from media.video.registry import create_video_generator  # noqa: E402

LOOK = PersonaLook("Ada", {"description": "a sea captain with a red coat", "tags": "sea, ships"})
PROMPTS = ["a lighthouse at dusk", "the harbour at night", "a red kite over the cliffs"]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(seconds, 50) * 1000, 1),
        "p95_ms": round(pct(seconds, 95) * 1000, 1),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 1),
        "jobs_per_minute": round(60 / statistics.fmean(seconds), 1),
    }


async def bench_generators(runs: int) -> dict[str, Any]:
    config = MediaConfig()
    out: dict[str, Any] = {}
    image_gen = create_image_generator(config)
    portrait = (
        await image_gen.generate(MediaRequest(kind="image", prompt="portrait", persona=LOOK))
    ).data
    cases = [
        ("image", image_gen, {"width": 512, "height": 512}),
        (
            "video",
            create_video_generator(config),
            {"width": 512, "height": 512, "seconds": 3.0, "fps": 12, "image": portrait},
        ),
        ("avatar", create_avatar_builder(config), {}),
    ]
    for kind, generator, fields in cases:
        await generator.generate(MediaRequest(kind=kind, prompt="warm up", persona=LOOK, **fields))  # type: ignore[arg-type]
        times = []
        for i in range(runs):
            request = MediaRequest(
                kind=kind,  # type: ignore[arg-type]
                prompt=PROMPTS[i % len(PROMPTS)],
                persona=LOOK,
                seed=i,
                **fields,
            )
            t0 = time.perf_counter()
            result = await generator.generate(request)
            times.append(time.perf_counter() - t0)
        out[kind] = {
            "generator": generator.name,
            "runs": runs,
            "bytes": len(result.data),
            **summary(times),
        }
        await generator.close()
    out["video"]["clip"] = "512x512, 3 s at 12 fps (36 frames)"
    out["image"]["size"] = "512x512"
    return out


async def bench_end_to_end(runs: int, workdir: Path) -> dict[str, Any]:
    import websockets

    salon = Salon(
        workdir / "salon",
        "http://127.0.0.1:9/v1",  # no model is asked: media needs none
        {
            "SALON_MEDIA_REQUESTS_PER_MINUTE": "100000",
            "SALON_EMBEDDINGS_PROVIDER": "none",
            "SALON_FEEDS_POLL": "false",
            "SALON_VIDEO_SECONDS": "3",
            "SALON_VIDEO_FPS": "12",
        },
    )
    out: dict[str, Any] = {}
    try:
        persona = salon.create_persona("Ada")
        url = f"ws://127.0.0.1:{salon.port}/v1/ws"
        headers = {"Authorization": f"Bearer {Salon.KEY}"}
        async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
            await ws.send(
                json.dumps({"type": "session.start", "persona": persona, "user": {"id": "bench"}})
            )
            while json.loads(await ws.recv())["type"] != "session.ready":
                pass
            for kind in ("image", "video", "avatar"):
                latencies: list[float] = []
                gaps: list[float] = []
                counts: list[int] = []
                busy0 = machine_busy()
                first_ms = None
                for i in range(runs + 1):  # the first job of a kind loads its models: apart
                    cid = f"{kind}-{i}"
                    t0 = time.perf_counter()
                    await ws.send(
                        json.dumps(
                            {
                                "type": "media.create",
                                "id": cid,
                                "kind": kind,
                                "prompt": PROMPTS[i % len(PROMPTS)],
                            }
                        )
                    )
                    job, last, seen = None, None, 0
                    while True:
                        event = json.loads(await asyncio.wait_for(ws.recv(), 120))
                        now = time.perf_counter()
                        if event.get("id") == cid and event["type"] == "media.progress":
                            job = event["job_id"]
                        if job is None or event.get("job_id") != job:
                            continue
                        if event["type"] == "media.progress":
                            seen += 1
                            if last is not None:
                                gaps.append(now - last)
                            last = now
                        elif event["type"] == "media.done":
                            if i == 0:
                                first_ms = round((now - t0) * 1000, 1)
                                gaps.clear()
                            else:
                                latencies.append(now - t0)
                                counts.append(seen)
                            break
                        elif event["type"] in ("error", "media.cancelled"):
                            raise RuntimeError(f"{kind} failed: {event}")
                busy1 = machine_busy()
                out[kind] = {
                    "runs": runs,
                    "first_job_ms": first_ms,
                    **summary(latencies),
                    "progress_events_per_job": round(statistics.fmean(counts), 1),
                    "progress_gap_p50_ms": round(pct(gaps, 50) * 1000, 1) if gaps else None,
                    "progress_gap_max_ms": round(max(gaps) * 1000, 1) if gaps else None,
                    "machine_busy_cores": round(
                        (busy1[0] - busy0[0])
                        / max(1e-9, busy1[1] - busy0[1])
                        * (os.cpu_count() or 1),
                        2,
                    ),
                }
    finally:
        salon.stop()
    return out


async def bench_diffusers_overhead(runs: int, steps: int, size: int) -> dict[str, Any]:
    from media.images.diffusers_image import DiffusersImageGenerator
    from tests.diffusers_tiny import build_tiny_sd_pipeline

    folder = Path(tempfile.mkdtemp(prefix="salon-tiny-sd-"))
    build_tiny_sd_pipeline(folder)
    generator = DiffusersImageGenerator(folder, device="cpu", default_steps=steps)
    request = MediaRequest(
        kind="image", prompt="a lighthouse", width=size, height=size, steps=steps, seed=1
    )
    await generator.generate(request)  # loads the pipeline
    pipe = generator._pipe
    import torch

    def direct() -> None:
        pipe(
            prompt=request.prompt,
            num_inference_steps=steps,
            width=size,
            height=size,
            generator=torch.Generator("cpu").manual_seed(1),
        ).images[0].save(tempfile.TemporaryFile(), "PNG")

    direct_s: list[float] = []
    wrapped_s: list[float] = []
    for _ in range(runs):  # interleaved, so load changes hit both alike
        t0 = time.perf_counter()
        await asyncio.to_thread(direct)
        direct_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await generator.generate(request)
        wrapped_s.append(time.perf_counter() - t0)
    await generator.close()
    d, w = statistics.median(direct_s), statistics.median(wrapped_s)
    return {
        "pipeline": f"tiny random-weight Stable Diffusion, {size}x{size}, {steps} steps",
        "runs": runs,
        "direct_ms": round(d * 1000, 1),
        "generator_ms": round(w * 1000, 1),
        "per_step_overhead_ms": round((w - d) / steps * 1000, 3),
        "ratio_direct_over_generator": round(d / w, 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--diffusers-runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/media.json")
    args = parser.parse_args()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "media",
        "command": "benchmarks/media_bench.py " + " ".join(sys.argv[1:]),
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    report["generators"] = await bench_generators(args.runs)
    print(json.dumps(report["generators"]), flush=True)
    with tempfile.TemporaryDirectory(prefix="salon-media-bench-") as workdir:
        report["end_to_end"] = await bench_end_to_end(args.runs, Path(workdir))
    print(json.dumps(report["end_to_end"]), flush=True)
    report["diffusers"] = await bench_diffusers_overhead(args.diffusers_runs, args.steps, args.size)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
