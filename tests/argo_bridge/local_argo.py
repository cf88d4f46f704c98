"""Run an exported WorkflowTemplate's containers here, as subprocesses, in the order Argo would.

Just enough of Argo's semantics for the export: DAG tasks in dependency order, ``withItems``
fan-out, ``{{workflow.parameters.*}}``, ``{{workflow.name}}``, ``{{inputs.parameters.*}}`` and
``{{item}}``; ready tasks and fan-out items run side by side. The container's ``python`` is this interpreter, its ``envFrom`` is ``env``
(what the ConfigMap/Secret would hold). A failing step stops the run, as Argo's default
``depends`` (upstream succeeded) would.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from typing import Any

from argo_bridge.export import task_dependencies

PLACEHOLDER = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")


class ContainerExited(AssertionError):
    """A container exited non-zero."""


@dataclass
class LocalWorkflow:
    document: dict[str, Any]
    arguments: Mapping[str, str]
    name: str
    env: Mapping[str, str]
    parallelism: int = 4
    commands: list[list[str]] = field(default_factory=list)

    def run(self) -> list[list[str]]:
        spec = self.document["spec"]
        self._templates = {t["name"]: t for t in spec["templates"]}
        defaults = {p["name"]: p.get("value") for p in spec["arguments"]["parameters"]}
        self._workflow = {**defaults, **self.arguments}
        missing = [name for name, value in self._workflow.items() if value is None]
        if missing:
            raise ValueError(f"workflow parameters without a value: {missing}")
        self._run_template(spec["entrypoint"], {})
        return self.commands

    def _render(self, text: str, inputs: Mapping[str, str], item: str | None) -> str:
        def value(match: re.Match) -> str:
            name = match.group(1)
            if name == "workflow.name":
                return self.name
            if name == "item" and item is not None:
                return item
            for prefix, values in (
                ("workflow.parameters.", self._workflow),
                ("inputs.parameters.", inputs),
            ):
                if name.startswith(prefix) and name[len(prefix) :] in values:
                    return str(values[name[len(prefix) :]])
            raise KeyError(f"unresolved placeholder {{{{{name}}}}} in {text!r}")

        return PLACEHOLDER.sub(value, text)

    def _run_template(self, name: str, inputs: Mapping[str, str]) -> None:
        template = self._templates[name]
        declared = {p["name"] for p in template.get("inputs", {}).get("parameters", [])}
        assert set(inputs) == declared, f"{name}: inputs {sorted(inputs)} != {sorted(declared)}"
        if "container" in template:
            command = [
                self._render(part, inputs, None) for part in template["container"]["command"]
            ]
            self.commands.append(command)
            local = [sys.executable, *command[1:]] if command[0] == "python" else command
            done = subprocess.run(
                local, env=dict(self.env), capture_output=True, text=True, encoding="utf-8"
            )
            if done.returncode != 0:
                raise ContainerExited(
                    f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}"
                )
            return
        tasks = {t["name"]: t for t in template["dag"]["tasks"]}
        sorter = TopologicalSorter(task_dependencies(template))
        sorter.prepare()
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            while sorter.is_active():  # like Argo: every ready task (and each item) at once
                ready = sorter.get_ready()
                running = {pool.submit(self._run_task, tasks[name], inputs): name for name in ready}
                for future in running:
                    future.result()  # a failed step stops here, its dependents never start
                    sorter.done(running[future])

    def _run_task(self, task: Mapping[str, Any], inputs: Mapping[str, str]) -> None:
        items = task.get("withItems") or [None]
        calls = []
        for item in items:
            arguments = {
                p["name"]: self._render(p["value"], inputs, None if item is None else str(item))
                for p in task.get("arguments", {}).get("parameters", [])
            }
            calls.append(arguments)
        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            for done in [pool.submit(self._run_template, task["template"], a) for a in calls]:
                done.result()
