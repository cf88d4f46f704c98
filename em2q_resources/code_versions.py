"""What code a step runs, as a version: the digest of its step function and of every function
and class of the platform's science code it calls, directly or not.

A changed smoothing kernel changes the version of exactly the steps that call it (the steps of
other assets keep theirs), so Dagster marks only their results stale, and a ``WorkflowRun``
names the code that made its outputs. The code is read, never imported: the source files are
parsed (``ast``) to find each definition and what it uses, and each definition's own source
lines are hashed: a blank line elsewhere or moving a function leaves the version as it was (a
changed comment inside a definition counts as a change), and the numba kernels are not loaded to learn
their version (the code location must import quickly). Standard library only, like the
catalogue that owns the versions (:meth:`em2q_resources.catalog.Catalog.code_version`).

Followed: names a definition uses that resolve, through the module's imports (module-level or
inside a function), to a definition in :data:`TRACKED` modules. Not followed: third-party
libraries (their versions are the image's), and :data:`IGNORED` modules, which move bytes
around without shaping them (records, atomic writes, error classes).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: module prefixes whose code shapes a result
TRACKED = ("em2q_msi", "em2q_assets", "em2q_resources.results_layout")
#: modules that record, schedule or write atomically, and do not change a result's bytes
IGNORED = frozenset(
    {
        "em2q_assets.provenance",
        "em2q_assets.adapters",
        "em2q_assets.run_failures",
        "em2q_assets.partitions",
        "em2q_msi.temporaries",
        "em2q_msi.errors",
    }
)
#: hex digits of the digest kept in a version
DIGEST_LENGTH = 12


def module_file(module: str) -> Path | None:
    """The source file of ``module`` (found, not imported); None when it has none."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def read_module_source(module: str) -> str | None:
    """The source text of ``module`` (found, not imported); None when it has no source file."""
    path = module_file(module)
    return None if path is None else path.read_text(encoding="utf-8")


def _file_state(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_mtime_ns, stat.st_size]


def default_cache_file() -> Path | None:
    """Where the platform keeps its digests between processes (per checkout): reading the
    sources costs ~0.3 s, which every process that loads the code location would pay."""
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home folder
        return None
    checkout = str(Path(__file__).resolve().parents[1]).encode()
    return base / "em2q" / f"code-versions-{hashlib.sha256(checkout).hexdigest()[:12]}.json"


def tracked(module: str) -> bool:
    return module not in IGNORED and any(
        module == prefix or module.startswith(prefix + ".") for prefix in TRACKED
    )


@dataclass
class _Module:
    """A parsed module: its top-level definitions and what its top-level imports bind."""

    name: str
    definitions: dict[str, ast.AST]
    imports: dict[str, tuple[str, str | None]]  # bound name -> (module, attribute or None)
    lines: list[str]

    def text(self, node: ast.AST) -> str:
        """The definition's source lines, decorators included (where it sits does not count)."""
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        return "\n".join(self.lines[first - 1 : node.end_lineno])


def _bind_import(
    statement: ast.Import | ast.ImportFrom, package: str, bound: dict[str, tuple[str, str | None]]
) -> None:
    if isinstance(statement, ast.Import):
        for alias in statement.names:
            if alias.asname:
                bound[alias.asname] = (alias.name, None)
            else:
                top = alias.name.split(".")[0]
                bound[top] = (top, None)
        return
    base = statement.module or ""
    if statement.level:
        parts = package.split(".")[: len(package.split(".")) - statement.level + 1]
        base = ".".join([*parts, base] if base else parts)
    for alias in statement.names:
        bound[alias.asname or alias.name] = (base, alias.name)


def _scan(
    node: ast.AST, package: str
) -> tuple[set[tuple[str, ...]], dict[str, tuple[str, str | None]]]:
    """In one walk: the names a definition uses (``name`` and ``name.attribute``) and what its
    own imports (inside a function: the lazy ones) bind."""
    used: set[tuple[str, ...]] = set()
    bound: dict[str, tuple[str, str | None]] = {}
    for part in ast.walk(node):
        if isinstance(part, ast.Attribute):
            if isinstance(part.value, ast.Name):
                used.add((part.value.id, part.attr))
        elif isinstance(part, ast.Name):
            used.add((part.id,))
        elif isinstance(part, ast.Import | ast.ImportFrom):
            _bind_import(part, package, bound)
    return used, bound


@dataclass
class CodeVersions:
    """Step code digests from one way of reading sources (tests swap a kernel's source).

    With a ``cache_file``, digests are kept there with the size and mtime of every source file
    read to compute them, and taken from it while none of those files changed."""

    read_source: Callable[[str], str | None] = read_module_source
    cache_file: Path | None = None
    _files: dict[str, list[int]] = field(default_factory=dict)  # source file -> its state
    _cached: dict[str, str] | None = None  # digests of the cache file, while it holds
    _modules: dict[str, _Module | None] = field(default_factory=dict)
    _nodes: dict[tuple[str, str], tuple[str, frozenset[tuple[str, str]]]] = field(
        default_factory=dict
    )
    _digests: dict[tuple[str, str], str] = field(default_factory=dict)

    def _module(self, name: str) -> _Module | None:
        if name not in self._modules:
            path = module_file(name) if self.cache_file is not None else None
            state = _file_state(path) if path is not None else None
            if state is not None:
                self._files[str(path)] = state
            source = self.read_source(name)
            self._modules[name] = None if source is None else self._parse(name, source)
        return self._modules[name]

    @staticmethod
    def _parse(name: str, source: str) -> _Module:
        tree = ast.parse(source)
        definitions: dict[str, ast.AST] = {}
        imports: dict[str, tuple[str, str | None]] = {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                definitions[node.name] = node
            elif isinstance(node, ast.Assign | ast.AnnAssign):  # constants: tables, thresholds
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        definitions[target.id] = node
            elif isinstance(node, ast.Import | ast.ImportFrom):
                _bind_import(node, name, imports)
        return _Module(name, definitions, imports, source.splitlines())

    def _is_module(self, name: str) -> bool:
        return tracked(name) and self._module(name) is not None

    def _resolve(self, module: str, name: str, depth: int = 0) -> tuple[str, str] | None:
        """Where ``module.name`` is defined (following re-exports), if tracked."""
        found = self._module(module) if tracked(module) else None
        if found is None or depth > 8:
            return None
        if name in found.definitions:
            return module, name
        if name in found.imports:
            source, attribute = found.imports[name]
            if attribute is not None and tracked(source):
                return self._resolve(source, attribute, depth + 1)
        return None

    def _dependencies(self, module: _Module, node: ast.AST) -> set[tuple[str, str]]:
        names, own_imports = _scan(node, module.name)
        imports = {**module.imports, **own_imports}
        found: set[tuple[str, str]] = set()
        for used in names:
            name = used[0]
            if name in module.definitions and name not in imports:
                found.add((module.name, name))
                continue
            if name not in imports:
                continue
            source, attribute = imports[name]
            target = f"{source}.{attribute}" if attribute else source
            if len(used) == 2 and self._is_module(target):  # `module.function`
                resolved = self._resolve(target, used[1])
            elif attribute is not None:
                resolved = self._resolve(source, attribute)
            else:
                resolved = None
            if resolved is not None:
                found.add(resolved)
        return found

    def _node(self, key: tuple[str, str]) -> tuple[str, frozenset[tuple[str, str]]]:
        """A definition's source text and the definitions it uses (computed once)."""
        if key not in self._nodes:
            parsed = self._module(key[0])
            node = parsed.definitions.get(key[1]) if parsed is not None else None
            if parsed is None or node is None:
                self._nodes[key] = ("<no source>", frozenset())
            else:
                uses = frozenset(self._dependencies(parsed, node) - {key})
                self._nodes[key] = (parsed.text(node), uses)
        return self._nodes[key]

    def closure(self, module: str, name: str) -> dict[tuple[str, str], str]:
        """``{(module, definition): source}`` of ``module.name`` and all it uses."""
        seen: dict[tuple[str, str], str] = {}
        todo = [(module, name)]
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            text, uses = self._node(key)
            seen[key] = text
            todo.extend(uses - seen.keys())
        return seen

    def digest(self, module: str, name: str) -> str:
        """SHA-256 (hex) of ``module.name`` and every definition it uses, in a fixed order."""
        key = (module, name)
        if key not in self._digests:
            cached = self._from_cache(f"{module}:{name}")
            if cached is not None:
                self._digests[key] = cached
            else:
                hasher = hashlib.sha256()
                for (where, what), text in sorted(self.closure(module, name).items()):
                    hasher.update(f"{where}:{what}\n{text}\n".encode())
                self._digests[key] = hasher.hexdigest()
                self._save_cache()
        return self._digests[key]

    def _from_cache(self, key: str) -> str | None:
        if self.cache_file is None:
            return None
        if self._cached is None:
            self._cached = {}
            try:
                kept = json.loads(self.cache_file.read_text(encoding="utf-8"))
                files, digests = dict(kept["files"]), dict(kept["digests"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
            if all(_file_state(Path(path)) == state for path, state in files.items()):
                self._cached = digests
                self._files = {**files, **self._files}
        return self._cached.get(key)

    def _save_cache(self) -> None:
        """Keep every digest known, with the files read for them (atomic; best effort)."""
        if self.cache_file is None:
            return
        digests = {**(self._cached or {}),
                   **{f"{m}:{n}": d for (m, n), d in self._digests.items()}}  # fmt: skip
        temporary = self.cache_file.with_name(f".{self.cache_file.name}.{os.getpid()}")
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps({"files": self._files, "digests": digests}))
            os.replace(temporary, self.cache_file)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)


#: how the running platform reads its code (tests replace it to swap a kernel)
SOURCES = CodeVersions(cache_file=default_cache_file())


def step_digest(module: str, function: str) -> str:
    """The digest of the code a step function runs (:data:`SOURCES`)."""
    return SOURCES.digest(module, function)[:DIGEST_LENGTH]


def use_sources(read_source: Callable[[str], str | None]) -> CodeVersions:
    """Read code with ``read_source`` from now on; returns the previous reader (to restore)."""
    global SOURCES
    previous, SOURCES = SOURCES, CodeVersions(read_source)
    return previous


def restore(previous: CodeVersions) -> None:
    global SOURCES
    SOURCES = previous
