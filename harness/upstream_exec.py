"""Run a release's REAL nsa_backend.py (from its wheel, optionally patched) against stand-ins.

The file (and any file the series adds next to it, e.g. nsa/cuda_graph_metadata.py) is written
to build/upstream/<version>-<digest>/ and imported as a package of its own, so its relative imports
resolve to the series' files. Its absolute imports of sglang and of GPU-only libraries go through
an `__import__` installed in that package's modules' `__builtins__` (nothing is put in
sys.modules under those names, so releases load side by side in one process):

- WHEEL_DEFINITIONS: where semantics matter, the names are the wheel's OWN code, cut out of the
  same wheel's module with `ast` (with the module-level names they need) and exec'd;
- ENVIRONMENT: facts about the machine the metadata path asks sglang (not HIP; CUDA only if
  torch sees a GPU; attention TP size 1), and, without a GPU, the device capability of the H100 the
  series targets (0.5.9's __init__ reads it);
- everything else is an Inert stand-in that raises, naming itself, if the metadata path uses it.

`load_release(...)` returns an object shaped like the stub module (NativeSparseAttnBackend,
ForwardMode, build_model_runner, SpecInput), so harness.runner.GraphRunner drives it unchanged.
"""

from __future__ import annotations

import __future__
import ast
import builtins
import hashlib
import importlib.abc
import importlib.util
import importlib.machinery
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

from typing import TYPE_CHECKING

import torch

from .loader import REPO_ROOT, UPSTREAM_DIR
from .names import Names, release_names

if TYPE_CHECKING:
    from .series import Files

BUILD = REPO_ROOT / "build" / "upstream"
# What a GPU host without git, network or wheels runs releases from (bench.release_replay prepare):
# NSA_USE_BUILD=1 reads each release's wheel here, its sglang sources alone.
BUILT_WHEELS = REPO_ROOT / "build" / "releases" / "wheels"


def wheel_path(version: str) -> Path:
    """The release's wheel: with NSA_USE_BUILD the one prepared under build/, else the cache's."""
    if os.environ.get("NSA_USE_BUILD"):
        built = BUILT_WHEELS / f"sglang-{version}.whl"
        if not built.exists():
            raise StandinError(f"no {built}: run `python -m bench.release_replay prepare` "
                               "where the wheels are, and carry build/")
        return built
    from .releases import fetch_wheel  # git and the cache: not on a GPU host

    return fetch_wheel(version)

# Imports with these roots never reach the real import system: sglang itself, and libraries that
# only exist on GPU machines. (Discovered by running every release; extend when one needs more.)
STANDIN_ROOTS = ("sglang", "sgl_kernel", "deep_gemm", "flash_mla", "flashinfer", "aiter", "tilelang", "transformers")

# module -> names taken from the wheel's own source. Discovered per release by running it: a name
# the metadata path needs that is missing here fails with StandinError naming it.
WHEEL_DEFINITIONS = {
    # build_inner_fb_view: 0.5.13+'s multi-step backend hands its steps a view of the batch.
    "sglang.srt.model_executor.forward_batch_info": ("ForwardMode", "build_inner_fb_view"),
    "sglang.srt.configs.model_config": ("is_deepseek_nsa", "get_nsa_index_topk"),
    "sglang.srt.environ": ("envs",),
    "sglang.srt.layers.attention.base_attn_backend": ("AttentionBackend",),
    "sglang.kernel_api_logging": ("debug_kernel_api",),  # 0.5.10+: decorates AttentionBackend.forward
    "sglang.srt.layers.attention.nsa.nsa_indexer": ("BaseIndexerMetadata",),
    "sglang.srt.layers.attention.nsa.utils": ("compute_nsa_seqlens", "compute_cu_seqlens"),
    # 0.5.10+: nsa_seqlens_expanded from a Triton kernel (run by Triton's interpreter on CPU).
    "sglang.srt.layers.attention.utils": ("seqlens_expand_triton",),
    "sglang.srt.layers.attention.triton_ops.pad": ("seqlens_expand_triton",),  # 0.5.13+: defined here
    # 0.5.13+ (under its DSA names): the indexer metadata's default top-k backend, a class attribute.
    "sglang.srt.layers.attention.nsa.nsa_topk_backend": ("NSATopKBackend", "TopkTransformMethod"),
    "sglang.srt.layers.attention.nsa.nsa_backend_mtp_precompute": (
        "NativeSparseAttnBackendMTPPrecomputeMixin",
        "PrecomputedMetadata",
        "compute_cu_seqlens",
    ),
}


def _device_capability(device=None) -> tuple[int, int]:
    return (9, 0)  # the H100 the series targets: no SM100 workspace, no Blackwell-only branch


# (module, name) -> value: the machine, as the metadata path asks sglang about it.
ENVIRONMENT = {
    ("sglang.srt.utils", "is_hip"): lambda: False,
    ("sglang.srt.utils", "is_cuda"): torch.cuda.is_available,
    ("sglang.srt.utils", "is_npu"): lambda: False,
    ("sglang.srt.utils", "is_blackwell"): lambda: False,
    ("sglang.srt.utils", "get_device_sm"): lambda: 90,
    ("sglang.srt.utils", "is_sm100_supported"): lambda: False,  # 0.5.13+: Hopper, as get_device_sm says
    ("sglang.srt.layers.dp_attention", "get_attention_tp_size"): lambda: 1,
    # 0.5.14+: the attention TP size is read off the runtime context's parallel state.
    ("sglang.srt.runtime_context", "get_parallel"): lambda: SimpleNamespace(attn_tp_size=1),
    # 0.5.13+: the decode / verify graphs are whole CUDA graphs, not piecewise (prefill) ones.
    ("sglang.srt.compilation.piecewise_context_manager", "is_in_piecewise_cuda_graph"): lambda: False,
    ("sglang.srt.model_executor.runner_backend_utils.tc_piecewise_cuda_graph", "is_in_tc_piecewise_cuda_graph"): lambda: False,  # 0.5.14+
    # 0.5.7+: the multi-step backend's replay precomputes once for every draft step, by default
    # (SGLANG_NSA_ENABLE_MTP_PRECOMPUTE_METADATA unset: "true").
    ("sglang.srt.layers.attention.nsa.utils", "NSA_ENABLE_MTP_PRECOMPUTE_METADATA"): True,
}


class StandinError(RuntimeError):
    """The real file used an sglang object the harness only stands in for."""


class Inert:
    """An sglang (or GPU library) object the metadata path must not use; using it says so."""

    def __init__(self, qualname: str, version: str):
        object.__setattr__(self, "_qualname", qualname)
        object.__setattr__(self, "_version", version)

    def _refuse(self, what: str):
        raise StandinError(
            f"sglang {self._version}'s metadata path {what} {self._qualname}, an inert stand-in: give it "
            "the wheel's own code (WHEEL_DEFINITIONS) or a value (ENVIRONMENT) in harness/upstream_exec.py"
        )

    def __call__(self, *args, **kwargs):
        self._refuse("called")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        self._refuse(f"read .{name} of")

    def __bool__(self):
        self._refuse("tested the truth of")

    def __mro_entries__(self, bases):
        self._refuse("subclassed")

    def __repr__(self):
        return f"<inert stand-in {self._qualname}>"


def _bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return {n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}


def _used_names(node: ast.stmt, postponed: bool = False) -> set[str]:
    """The names `node` reads; with `postponed` (from __future__ import annotations) not those only
    its annotations name, which are never evaluated (0.5.13's build_inner_fb_view annotates with
    ForwardBatch, a class it does not need)."""
    skipped: set[int] = set()
    if postponed:
        for n in ast.walk(node):
            notes = [getattr(n, "annotation", None), getattr(n, "returns", None)]
            skipped |= {id(m) for note in notes if note is not None for m in ast.walk(note)}
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and id(n) not in skipped}


# Modules cut without the names only their annotations use (never evaluated under postponed
# annotations): 0.5.13's build_inner_fb_view annotates with ForwardBatch, a class whose bases the
# stand-ins lack. Other modules keep every name they use, as the committed matrix ran them.
POSTPONED_ANNOTATIONS = ("sglang.srt.model_executor.forward_batch_info",)


def cut_definitions(source: str, names: tuple[str, ...], skip_annotations: bool = False) -> tuple[ast.Module, bool] | None:
    """The module-level statements defining `names` plus those they need (imports included)."""
    tree = ast.parse(source)
    defines: dict[str, list[int]] = {}
    for i, node in enumerate(tree.body):
        for name in _bound_names(node):
            defines.setdefault(name, []).append(i)
    wanted = [n for n in names if n in defines]
    if not wanted:
        return None
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)
    keep, todo = set(), list(wanted)
    while todo:
        for i in defines.get(todo.pop(), ()):
            if i not in keep:
                keep.add(i)
                todo.extend(_used_names(tree.body[i], postponed=future and skip_annotations) & defines.keys())
    body = [n for i, n in enumerate(tree.body) if i in keep and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]
    return ast.Module(body=body, type_ignores=[]), future


class _WithoutCudaAsserts(ast.NodeTransformer):
    """`assert <tensor>.is_cuda` removed (0.5.10's seqlens_expand_triton has two), for CPU runs
    alone: it checks where the tensors live, not what the code computes."""

    def visit_Assert(self, node: ast.Assert):
        test = node.test
        return None if isinstance(test, ast.Attribute) and test.attr == "is_cuda" else node


class ReleaseEnvironment:
    """The stand-in sglang of one release: its wheel's definitions, the machine's facts, inert rest."""

    def __init__(self, version: str, names: Names | None = None):
        self.version = version
        # The wheel's definitions and the machine's facts under the release's names (0.5.13: dsa).
        names = names or Names()
        self.definitions = {names.name(m): tuple(map(names.name, n)) for m, n in WHEEL_DEFINITIONS.items()}
        self.environment = {(names.name(m), names.name(a)): v for (m, a), v in ENVIRONMENT.items()}
        self.wheel = zipfile.ZipFile(wheel_path(version))
        self.wheel_names = set(self.wheel.namelist())
        self._modules: dict[str, ModuleType] = {}
        self._defined: dict[str, dict] = {}
        self.builtins = dict(vars(builtins), __import__=self.import_)
        self.torch = torch if torch.cuda.is_available() else _torch_with_capability()

    def _source_path(self, module: str) -> str | None:
        base = module.replace(".", "/")
        for path in (f"{base}.py", f"{base}/__init__.py"):
            if path in self.wheel_names:
                return path
        return None

    def _is_package(self, module: str) -> bool:
        prefix = module.replace(".", "/") + "/"
        return any(n.startswith(prefix) for n in self.wheel_names)

    def module(self, name: str) -> ModuleType:
        if name not in self._modules:
            env = self

            class StandinModule(ModuleType):
                def __getattr__(self, attr):
                    if attr.startswith("__"):
                        raise AttributeError(attr)
                    return env.value(name, attr)

            self._modules[name] = StandinModule(name, f"stand-in of sglang {self.version}'s {name}")
        return self._modules[name]

    def value(self, module: str, attr: str):
        if (module, attr) in self.environment:
            return self.environment[(module, attr)]
        if attr in self.definitions.get(module, ()):
            defined = self._wheel_definitions(module)
            if attr in defined:
                return defined[attr]
        if module.split(".")[0] in ("sglang",) and self._is_package(f"{module}.{attr}"):
            return self.module(f"{module}.{attr}")
        value = Inert(f"{module}.{attr}", self.version)
        setattr(self.module(module), attr, value)  # one object per name, like a real module
        return value

    def _wheel_definitions(self, module: str) -> dict:
        if module not in self._defined:
            path = self._source_path(module)
            source = self.wheel.read(path).decode() if path else None
            cut = cut_definitions(source, self.definitions[module], module in POSTPONED_ANNOTATIONS) if path else None
            # A real module in sys.modules under a private name: dataclasses look their class's
            # module up there. The name cannot collide with an installed sglang.
            holder = ModuleType(f"nsa_wheel_{self.version.replace('.', '_')}.{module}")
            holder.__dict__["__builtins__"] = self.builtins
            sys.modules[holder.__name__] = holder
            if cut:
                tree, future = cut
                flags = __future__.annotations.compiler_flag if future else 0
                if not torch.cuda.is_available():
                    tree = ast.fix_missing_locations(_WithoutCudaAsserts().visit(tree))
                # Written out: a Triton kernel among them is read back from its file (inspect).
                source = ast.unparse(tree) + "\n"
                file = BUILD / f"wheel-{self.version}" / path
                if not file.exists() or file.read_text() != source:
                    file.parent.mkdir(parents=True, exist_ok=True)
                    staging = file.with_name(f".{file.name}.{os.getpid()}")
                    staging.write_text(source)
                    os.replace(staging, file)
                code = compile(source, str(file), "exec", flags=flags, dont_inherit=True)
                exec(code, holder.__dict__)
            self._defined[module] = holder.__dict__
        return self._defined[module]

    def import_(self, name, globals=None, locals=None, fromlist=(), level=0):
        """`__import__` for the real file's modules: sglang and GPU libraries become stand-ins."""
        if level == 0 and name.split(".")[0] in STANDIN_ROOTS:
            if fromlist:
                return self.module(name)
            return self.module(name.split(".")[0])
        if level == 0 and name == "torch":
            return self.torch
        return builtins.__import__(name, globals, locals, fromlist, level)


def _torch_with_capability() -> ModuleType:
    """torch, except torch.cuda.get_device_capability answers for an H100 (CPU machines only)."""

    class Cuda(ModuleType):
        def __getattr__(self, attr):
            return _device_capability if attr == "get_device_capability" else getattr(torch.cuda, attr)

    class Torch(ModuleType):
        def __getattr__(self, attr):
            return cuda if attr == "cuda" else getattr(torch, attr)

    cuda = Cuda("torch.cuda")
    return Torch("torch")


class _SeriesPackageFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of one built package and execs them with the release's stand-in imports."""

    def __init__(self, package: str, directory: Path, env: ReleaseEnvironment):
        self.package, self.directory, self.env = package, directory, env

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.package:
            return importlib.util.spec_from_file_location(
                fullname, self.directory / "__init__.py",
                loader=_StandinLoader(fullname, str(self.directory / "__init__.py"), self.env),
                submodule_search_locations=[str(self.directory)],
            )
        if not fullname.startswith(self.package + "."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            spec.loader = _StandinLoader(fullname, spec.origin, self.env)
        return spec


class _StandinLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, env: ReleaseEnvironment):
        super().__init__(fullname, path)
        self.env = env

    def exec_module(self, module):
        module.__dict__["__builtins__"] = self.env.builtins
        super().exec_module(module)


class _StrictNamespace(SimpleNamespace):
    """A model-runner part whose missing attribute says which release reads it and where to add it."""

    def __init__(self, path: str, version: str, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_version", version)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise StandinError(
            f"sglang {self._version}'s NativeSparseAttnBackend reads {self._path}.{name}, which the model "
            f"runner stand-in lacks: add \"{f'{self._path}.{name}'.removeprefix('model_runner.')}\" = <value> "
            f"to that release's model_runner in patches/releases.toml"
        )


def _strict(obj, path: str, version: str, names: Names = Names()):
    """The stub's model-runner part as the release reads it: strict, its attributes under the
    release's names (0.5.13: token_to_kv_pool.dsa_kv_cache_store_fp8)."""
    if not isinstance(obj, SimpleNamespace):
        return obj
    fields = {names.name(k): v for k, v in vars(obj).items()}
    return _StrictNamespace(path, version, **{k: _strict(v, f"{path}.{k}", version, names) for k, v in fields.items()})


# A release's model_runner key (patches/releases.toml): the columns sglang's request pool gives
# every row past context_len, besides D when speculative (model_runner_kv_cache_mixin's
# extra_max_context_len). The stand-in pool is context_len wide; from 0.5.10 the backend's page
# table is context_len + D wide, so the launch there needs the pool as wide as sglang makes it.
SPARE_COLUMNS = "req_to_token_spare_columns"


def with_spare_columns(req_to_token: torch.Tensor, columns: int) -> torch.Tensor:
    """`req_to_token` widened to `columns`, its rows continued cyclically (values of the same ranges;
    no replay within the context reads them)."""
    if req_to_token.shape[1] >= columns:
        return req_to_token
    reps = -(-columns // req_to_token.shape[1])
    return req_to_token.repeat(1, reps)[:, :columns].contiguous()


def model_runner_builder(stub: ModuleType, version: str, extra: dict, names: Names = Names()):
    """The stub's build_model_runner (0.5.6's attributes, under the release's names) plus the
    release's own, strict on the rest. A value "None" in the table (TOML has no null) is None."""

    extra = dict(extra)
    spare = extra.pop(SPARE_COLUMNS, None)

    def build_model_runner(**kwargs):
        if spare is not None:
            kwargs["req_to_token"] = with_spare_columns(
                kwargs["req_to_token"], kwargs["context_len"] + spare + (kwargs.get("num_draft_tokens") or 0)
            )
        runner = _strict(stub.build_model_runner(**kwargs), "model_runner", version, names)
        for dotted, value in extra.items():
            *parents, leaf = dotted.split(".")
            target = runner
            for i, part in enumerate(parents):
                if part not in vars(target):
                    setattr(target, part, _StrictNamespace(".".join(["model_runner", *parents[: i + 1]]), version))
                target = vars(target)[part]
            if isinstance(value, str) and value.startswith("torch."):  # TOML has no dtypes
                value = getattr(torch, value.removeprefix("torch."))
            elif value == "None":  # nor null
                value = None
            setattr(target, leaf, value)
        return runner

    return build_model_runner


def load_release(version: str, files: Files, stub: ModuleType, model_runner: dict, label: str) -> SimpleNamespace:
    """The real nsa_backend.py of `version` as in `files` (python/sglang/... paths), ready for GraphRunner."""
    digest = hashlib.sha256(b"".join(k.encode() + b"\0" + v for k, v in sorted(files.items()))).hexdigest()[:12]
    folder = BUILD / f"{version}-{digest}"
    if not folder.exists():  # written aside then renamed: a crash never leaves half a build
        staging = folder.with_name(f".{folder.name}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        prefix = UPSTREAM_DIR + "/"
        for rel, data in files.items():
            if rel.startswith(prefix):
                (staging / rel[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel[len(prefix):]).write_bytes(data)
        (staging / "__init__.py").write_text(f"# sglang {version} {UPSTREAM_DIR}, as built by harness.upstream_exec\n")
        try:
            staging.rename(folder)
        except OSError:  # another process won the race with identical content
            shutil.rmtree(staging, ignore_errors=True)
    package = "nsa_upstream_" + re.sub(r"\W", "_", f"{version}_{label}_{digest}")
    names = release_names(version)
    if package not in sys.modules:
        env = ReleaseEnvironment(version, names)
        sys.meta_path.insert(0, _SeriesPackageFinder(package, folder, env))
    backend = importlib.import_module(f"{package}.{names.name('nsa_backend')}")
    return SimpleNamespace(
        renames=names.renames,  # the release's names for the series' (harness.names)
        names=names,
        __name__=backend.__name__,
        __file__=backend.__file__,
        module=backend,
        NativeSparseAttnBackend=with_capture_and_replay_calls(getattr(backend, names.name("NativeSparseAttnBackend"))),
        NativeSparseAttnMultiStepBackend=getattr(backend, names.name("NativeSparseAttnMultiStepBackend")),
        ForwardMode=backend.ForwardMode,
        build_model_runner=model_runner_builder(stub, version, model_runner, names),
        SpecInput=spec_input(stub, names.renames),
    )


def with_capture_and_replay_calls(backend_class: type) -> type:
    """The backend class, reached through the two calls of sglang 0.5.6 - 0.5.12's interface that
    harness.runner.GraphRunner makes. From 0.5.13 a backend has neither: a graph runner calls
    init_forward_metadata_out_graph(forward_batch, in_capture=True) before the capture and
    init_forward_metadata_out_graph(forward_batch) before every replay, forward_batch a view of its
    static inputs (sglang's build_replay_fb_view); a subclass makes those calls. Earlier releases'
    classes are returned as they are."""
    if hasattr(backend_class, "init_forward_metadata_replay_cuda_graph"):
        return backend_class

    class OutOfGraphCalls(backend_class):
        def init_forward_metadata_capture_cuda_graph(
            self, bs, num_tokens, req_pool_indices, seq_lens, encoder_lens, forward_mode, spec_info
        ):
            batch = _graph_batch(bs, req_pool_indices, seq_lens, None, encoder_lens, forward_mode, spec_info)
            self.init_forward_metadata_out_graph(batch, in_capture=True)

        def init_forward_metadata_replay_cuda_graph(
            self, bs, req_pool_indices, seq_lens, seq_lens_sum, encoder_lens, forward_mode, spec_info,
            seq_lens_cpu=None,
        ):
            batch = _graph_batch(bs, req_pool_indices, seq_lens, seq_lens_cpu, encoder_lens, forward_mode, spec_info)
            self.init_forward_metadata_out_graph(batch)

    OutOfGraphCalls.__name__ = OutOfGraphCalls.__qualname__ = backend_class.__name__
    return OutOfGraphCalls


def _graph_batch(bs, req_pool_indices, seq_lens, seq_lens_cpu, encoder_lens, forward_mode, spec_info):
    """What sglang's graph runners pass init_forward_metadata_out_graph (build_replay_fb_view's fields)."""
    return SimpleNamespace(
        batch_size=bs, req_pool_indices=req_pool_indices, seq_lens=seq_lens, seq_lens_cpu=seq_lens_cpu,
        encoder_lens=encoder_lens, forward_mode=forward_mode, spec_info=spec_info,
    )


def spec_input(stub: ModuleType, renames: dict):
    """The stub's SpecInput where the release keeps accept_length; else one holding it under the
    release's name (0.5.11: num_accepted_tokens), built from the same keyword as the stub's."""
    name = renames.get("accept_length")
    if name is None:
        return stub.SpecInput

    class SpecInput(SimpleNamespace):
        def __init__(self, accept_length: torch.Tensor):
            super().__init__(**{name: accept_length})

    return SpecInput


# -- the release's graph runner: its capture and replay code, cut out of the (patched) real file --

# Where each release's decode graph runner captures and replays: (class, capture method, replay
# method). 0.5.5 - 0.5.13: CudaGraphRunner (model_executor/cuda_graph_runner.py); 0.5.14 rebuilt it
# as DecodeCudaGraphRunner (model_executor/runner/), whose graph backend runs the warm-ups and the
# capture (self.backend.capture_one) and whose load_batch prepares a replay.
GRAPH_RUNNER_LAYOUTS = (
    ("CudaGraphRunner", "capture_one_batch_size", "replay_prepare"),
    ("DecodeCudaGraphRunner", "capture_one_shape", "load_batch"),
)


def _classes(source: str) -> set[str]:
    return {node.name for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}


def _method(source: str, cls: str, name: str) -> ast.FunctionDef:
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == name:
                    return item
    raise StandinError(f"no {cls}.{name} in the graph runner file")


def _calls(node: ast.AST, attr: str) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == attr for n in ast.walk(node))


def _assigns(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store) for n in ast.walk(node))


# The backend calls a graph runner makes before its capture and before each replay: sglang 0.5.5 -
# 0.5.12's two methods, then (0.5.13+) init_forward_metadata_out_graph(forward_batch, in_capture).
CAPTURE_CALLS = ("init_forward_metadata_capture_cuda_graph", "init_forward_metadata_out_graph")
REPLAY_CALLS = ("init_forward_metadata_replay_cuda_graph", "init_forward_metadata_out_graph")


def module_function(source: str, name: str, filename: str):
    """A module-level function of the release's file, compiled alone (it must need only builtins
    and its arguments: 0.5.13's build_replay_fb_view), or None where the file has none."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            node.returns = None
            for arg in node.args.args:
                arg.annotation = None
            namespace = {"SimpleNamespace": SimpleNamespace}
            exec(compile(ast.fix_missing_locations(ast.Module(body=[node], type_ignores=[])), filename, "exec"), namespace)
            return namespace[name]
    return None


def runner_code(source: str, filename: str):
    """(capture, replay) code objects from the release's decode graph runner (GRAPH_RUNNER_LAYOUTS).

    capture: the capture method from the attention backend's metadata capture to the end (the
    run_once closure, the warm-up runs, the graph capture), a final `return graph, out` dropped so
    that `out` stays in the namespace. replay: the replay method's call of the backend's replay,
    with the statement choosing the backend before it where the release has one (pdmux).
    """
    classes = _classes(source)
    layout = next((layout for layout in GRAPH_RUNNER_LAYOUTS if layout[0] in classes), None)
    if layout is None:
        raise StandinError(f"{filename} has none of {', '.join(c for c, _, _ in GRAPH_RUNNER_LAYOUTS)}: is it sglang's decode graph runner?")
    cls, capture_method, replay_method = layout
    capture = _method(source, cls, capture_method).body
    start = next(i for i, s in enumerate(capture) if any(_calls(s, c) for c in CAPTURE_CALLS))
    tail = [s for s in capture[start:] if not isinstance(s, ast.Return)]
    replay = _method(source, cls, replay_method).body
    call = next(i for i, s in enumerate(replay) if any(_calls(s, c) for c in REPLAY_CALLS))
    # From the statement choosing the backend, where there is one: 0.5.13+ build the backend's
    # view of the static inputs between it and the call.
    first = max((i for i in range(call) if _assigns(replay[i], "attn_backend")), default=call)
    return tuple(
        compile(ast.Module(body=body, type_ignores=[]), filename, "exec", dont_inherit=True)
        for body in (tail, replay[first : call + 1])
    )


def run_graph_runner(source: str, filename: str, runner, bs: int, recorder) -> list[str]:
    """The release's capture and replay code for captured `bs` of harness `runner` (CPU).

    `recorder(bs, forward_mode, capturing)`, when given, is what the backend offers the runner as
    record_forward_metadata_cuda_graph. Returns what happened, in order: "capture" (the backend's
    metadata capture), "record" / "forward" (prefixed "captured " inside the graph capture),
    "replay call" where replay_prepare calls the backend's replay, and "replay: N launches" (Triton
    launches of replay_prepare's backend code after capture).
    """
    from .counters import count_replay
    from .cuda_graph import RunnerBackend

    capture_code, replay_code = runner_code(source, filename)
    events: list[str] = []
    state = SimpleNamespace(capturing=False)
    backend = runner.backend

    class Backend(RunnerBackend):
        def init_forward_metadata_capture_cuda_graph(self, *args, **kwargs):
            events.append("capture")
            return backend.init_forward_metadata_capture_cuda_graph(*args, **kwargs)

        def init_forward_metadata_replay_cuda_graph(self, *args, **kwargs):
            events.append("replay call")
            return backend.init_forward_metadata_replay_cuda_graph(*args, **kwargs)

        def init_forward_metadata_out_graph(self, forward_batch, in_capture=False):  # 0.5.13+
            events.append("capture" if in_capture else "replay call")
            return backend.init_forward_metadata_out_graph(forward_batch, in_capture=in_capture)

    def prefix() -> str:
        return "captured " if state.capturing else ""

    def record(bs, forward_mode):
        events.append(prefix() + "record")
        recorder(bs, forward_mode, lambda: state.capturing)

    def forward(input_ids, positions, forward_batch):
        events.append(prefix() + "forward")
        return torch.zeros(())

    def capture_graph(graph, pool, stream, run_once_fn):
        state.capturing = True
        try:
            return run_once_fn()
        finally:
            state.capturing = False

    def capture_one(shape_key, forward_fn, dummies=None, post_warmup_hook=None):
        """0.5.14+'s graph backend (FullCudaGraphBackend.capture_one): two warm-up runs, each
        followed by the backend's post-warm-up hook, then the capture."""
        for _ in range(2):
            forward_fn()
            if post_warmup_hook is not None:
                post_warmup_hook()
        capture_graph(None, None, None, forward_fn)

    attn_backend = Backend(backend, record if recorder else None)
    tokens = bs * runner.tokens_per_req
    buffers = SimpleNamespace(
        input_ids=torch.zeros(tokens, dtype=torch.int64),  # 0.5.13+: the backend's view holds them
        req_pool_indices=runner.req_pool_indices,
        seq_lens=runner.seq_lens,
        encoder_lens=None,
        seq_lens_cpu=runner.seq_lens_cpu,  # 0.5.10+ read it off the buffers
        out_cache_loc_swa=None,  # 0.5.11+: no sliding-window layers
    )
    forward_batch = SimpleNamespace(
        batch_size=bs,  # 0.5.13+: the backend reads the batch itself
        req_pool_indices=runner.req_pool_indices[:bs],
        seq_lens=runner.seq_lens[:bs],
        seq_lens_cpu=runner.seq_lens_cpu[:bs],
        forward_mode=runner.forward_mode,
        spec_info=runner._spec_info(bs),
        attn_backend=attn_backend,
        positions=torch.zeros(tokens, dtype=torch.int64),
        dp_padding_mode=SimpleNamespace(is_max_len=lambda: False),
        seq_lens_sum=int(runner.seq_lens_cpu[:bs].sum()),
        input_ids=torch.zeros(tokens, dtype=torch.int64),  # 0.5.14+: run_once reads the batch's
        lora_ids=None,
        global_dp_buffer_len=None,
        global_num_tokens_cpu=None,
    )
    this = SimpleNamespace(
        model_runner=SimpleNamespace(
            attn_backend=attn_backend,
            tp_group=SimpleNamespace(barrier=lambda: None),
            spec_algorithm=SimpleNamespace(is_dflash=lambda: False),  # 0.5.11+
            is_draft_worker=False,
            canary_manager=None,  # 0.5.13+
        ),
        attn_backend=attn_backend,  # 0.5.11+: the runner's own backend
        buffers=buffers,
        pp_size=1,
        enable_pdmux=False,
        is_encoder_decoder=False,
        seq_len_fill_value=runner.fill_value,
        capture_forward_mode=runner.forward_mode,
        deepep_adapter=SimpleNamespace(capture=lambda is_extend_in_batch: None),
        tbo_plugin=SimpleNamespace(capture_one_batch_size=lambda forward_batch, num_tokens: None),  # 0.5.13+
        num_tokens_per_bs=runner.tokens_per_req,
        device_module=SimpleNamespace(synchronize=lambda: None, graph_pool_handle=lambda: "pool"),
        _capture_graph=capture_graph,
        backend=SimpleNamespace(capture_one=capture_one),  # 0.5.14+
        _make_graph_key=lambda bs, stream_idx=None, variant_label=None: bs,
        req_pool_indices=runner.req_pool_indices,  # 0.5.5-0.5.5.post2 keep the static inputs on self
        seq_lens=runner.seq_lens,
    )
    pool = SimpleNamespace(handle=None)
    namespace = {
        "__builtins__": builtins,
        "self": this,
        "bs": bs,
        "num_tokens": tokens,
        "raw_bs": bs,
        "input_ids": torch.zeros(tokens, dtype=torch.int64),
        "req_pool_indices": runner.req_pool_indices[:bs],
        "seq_lens": runner.seq_lens[:bs],
        "seq_lens_cpu": runner.seq_lens_cpu[:bs],
        "encoder_lens": None,
        "buffers": buffers,
        "forward_batch": forward_batch,
        "forward": forward,
        "attn_backend": attn_backend,
        "graph": None,
        "stream": None,
        "global_dp_buffer_len": None,
        "global_num_tokens_cpu": None,  # 0.5.13+
        "stream_idx": None,  # 0.5.14+: one capture stream, no LoRA variant
        "variant_label": None,
        "pp_proxy_tensors": None,
        "inspect": __import__("inspect"),
        "PPProxyTensors": dict,
        "set_dp_buffer_len": lambda *args: None,
        "set_is_extend_in_batch": lambda flag: None,
        "set_graph_pool_id": lambda pool_id: None,
        "get_global_graph_memory_pool": lambda: pool.handle,
        "set_global_graph_memory_pool": lambda handle: setattr(pool, "handle", handle),
        "get_current_stream_idx": lambda: 0,
        # 0.5.13+: the capture runs in the backend's forward context, the replay passes its view
        "lora_ids": None,
        "contextlib": __import__("contextlib"),
        "forward_context": lambda context: __import__("contextlib").nullcontext(),
        "ForwardContext": SimpleNamespace,
        "build_replay_fb_view": module_function(source, "build_replay_fb_view", filename),
    }
    exec(capture_code, namespace)
    with count_replay() as counts:
        exec(replay_code, namespace)
    return events + [f"replay: {counts.triton_launches} launches"]
