"""The app `benches/scale_out.py` runs in `flowcraft-fastd`: the benchmark shapes."""

from __future__ import annotations

from workloads import blueprints, step, sum_inputs

from flowcraft_fast import FlowRuntime

runtime = FlowRuntime(registry={"step": step, "sum": sum_inputs}, blueprints=blueprints())
