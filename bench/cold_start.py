"""Cold start: each function's handler module imported in a fresh interpreter, beside the floor
`import boto3, stripe` measured in the same rounds, in an environment built like Lambda's:

- the layer as `sam build` makes it (layers/shared/Makefile): the packages of
  layers/shared/requirements.txt and clinic_payments, with their bytecode compiled once
  (unchecked-hash), since /opt is read-only and Lambda could not write it;
- the runtime's own packages (boto3, botocore and their dependencies), as installed here;
- nothing else of the dev venv (aiohttp, moto...): what the layer does not ship cannot be
  imported, as on Lambda, where stripe-python then falls back to requests;
- the environment a deployed function has: the template's variables, LAMBDA_TASK_ROOT (so the
  tracer is on and patches botocore and requests at import, as with `Tracing: Active`).
"""

from __future__ import annotations

import compileall
import importlib.metadata
import importlib.util
import os
import py_compile
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from local.template import ROOT, load_template
from tests.support.functions import CALLS_STRIPE

LAYER = ROOT / "layers" / "shared"
# What Lambda's python3.13 runtime provides: the layer leaves them out (Makefile RUNTIME_PACKAGES).
RUNTIME_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
FLOOR = "boto3, stripe"
# What every function imports before any code of its own: boto3, pydantic, Powertools' event
# handler, and the logger, metrics and tracer of clinic_payments.api.observability (the tracer
# brings the X-Ray SDK and patches botocore and requests, as with `Tracing: Active`).
FRAMEWORK = (
    "boto3, pydantic, aws_lambda_powertools.event_handler, clinic_payments.api.observability"
)
STRIPE_GOAL, NO_STRIPE_GOAL = 1.25, 0.9


@dataclass(frozen=True)
class Function:
    logical_id: str
    folder: Path  # functions/<name>: Lambda's /var/task

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def goal(self) -> float:
        return STRIPE_GOAL if self.name in CALLS_STRIPE else NO_STRIPE_GOAL


def functions() -> list[Function]:
    found = []
    for logical_id, resource in load_template()["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function":
            folder = ROOT / str(resource["Properties"]["CodeUri"]).rstrip("/")
            found.append(Function(logical_id, folder))
    return sorted(found, key=lambda f: f.name)


def build_environment(into: Path) -> tuple[Path, Path, list[str]]:
    """The layer (copied, compiled as the layer's build compiles it) and the runtime's
    packages (linked); notes on versions that differ from the layer's pins."""
    layer, runtime = into / "layer", into / "runtime"
    layer.mkdir()
    runtime.mkdir()
    notes = []
    for line in (LAYER / "requirements.txt").read_text().splitlines():
        if "==" not in line or line.lstrip().startswith("#"):
            continue
        name, pinned = (part.strip() for part in line.split("#")[0].split("=="))
        dist = importlib.metadata.distribution(name)
        if dist.version != pinned:
            notes.append(f"{name} {dist.version} here, {pinned} in the layer")
        for file in dist.files or ():
            if file.parts[0] == ".." or "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            target = layer / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(str(dist.locate_file(file))), target)
    shutil.copytree(
        LAYER / "clinic_payments",
        layer / "clinic_payments",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    # As layers/shared/Makefile builds it: bytecode compiled once, unchecked-hash.
    compileall.compile_dir(
        layer,
        quiet=1,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    for module in RUNTIME_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise SystemExit(f"make bench: {module} is not installed")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (runtime / source.name).symlink_to(source)
    return layer, runtime, notes


def lambda_environment(function: Function | None) -> dict[str, str]:
    """The variables a deployed function sees at init (a !Ref is its parameter's default, or made
    up: nothing reads a table name at import)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "POWERTOOLS_", "AWS_", "STRIPE_"))
    }
    template = load_template()
    for key, value in template["Globals"]["Function"]["Environment"]["Variables"].items():
        if isinstance(value, dict) and "Ref" in value:
            value = template["Parameters"].get(value["Ref"], {}).get("Default", "bench")
        env[key] = str(value)
    name = function.logical_id if function else "Floor"
    env.update(
        {
            "LAMBDA_TASK_ROOT": str(function.folder if function else ROOT),
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        }
    )
    return env


def import_ms(statement: str, path: list[Path], env: dict[str, str]) -> float:
    # -I -S: no site-packages, no PYTHON* variables; -B: nothing written (the layer's bytecode
    # is read, as from the read-only /opt).
    code = (
        "import sys, time; "
        f"sys.path[:0] = {[str(p) for p in path]!r}; "
        f"t = time.perf_counter(); import {statement}; "
        "print((time.perf_counter() - t) * 1000)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", code],
        cwd=path[0],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"make bench: `import {statement}` failed:\n{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class ColdStart:
    floor_ms: float
    framework_ms: float
    by_function: dict[str, float]
    notes: list[str]


def measure(workdir: Path, rounds: int = 5) -> ColdStart:
    """Median of `rounds` fresh imports of each, the floor measured in every round too (the
    machine is shared: a busy minute slows all alike)."""
    layer, runtime, notes = build_environment(workdir)
    targets = functions()
    floor: list[float] = []
    framework: list[float] = []
    samples: dict[str, list[float]] = {f.name: [] for f in targets}
    for _ in range(rounds):
        floor.append(import_ms(FLOOR, [layer, runtime], lambda_environment(None)))
        framework.append(import_ms(FRAMEWORK, [layer, runtime], lambda_environment(targets[0])))
        for function in targets:
            samples[function.name].append(
                import_ms("app", [function.folder, layer, runtime], lambda_environment(function))
            )
    return ColdStart(
        statistics.median(floor),
        statistics.median(framework),
        {name: statistics.median(times) for name, times in samples.items()},
        notes,
    )


def report(result: ColdStart) -> list[str]:
    floor = result.floor_ms
    lines = [
        f"floor, `import {FLOOR}`: {floor:.0f} ms",
        f"framework every function imports first (boto3, pydantic, Powertools with the tracer "
        f"on): {result.framework_ms:.0f} ms, {result.framework_ms / floor:.2f} x the floor",
        f"{'function':<20}{'import':>9}{'x floor':>9}{'goal':>6}  {'Stripe':<8}",
    ]
    for function in functions():
        ms = result.by_function[function.name]
        ratio = ms / floor
        verdict = "met" if ratio <= function.goal else "not met"
        stripe = "yes" if function.name in CALLS_STRIPE else "no"
        figures = f"{ms:>6.0f} ms{ratio:>9.2f}{function.goal:>6.2f}"
        lines.append(f"{function.name:<20}{figures}  {stripe:<8}{verdict}")
    lines += [f"note: {note}" for note in result.notes]
    return lines
