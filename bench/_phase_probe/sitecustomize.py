"""Phase timestamps for bench/trial_overhead.py, injected into every ftsweep process of a sweep through
PYTHONPATH (Python imports ``sitecustomize`` at start-up). Inactive unless FTSWEEP_BENCH_PHASES names a
directory. Nothing in ftsweep is changed: after a module listed in PATCHES is imported, the named
functions are wrapped to append ``{"ev": name, "t": wall time}`` lines to ``<dir>/<pid>.jsonl``.
A target that no longer exists (after a refactor) is recorded as ``probe_missing`` and its phase is
reported as unknown instead of breaking the run.
"""

import os

_DIR = os.environ.get("FTSWEEP_BENCH_PHASES")

if _DIR:
    import atexit
    import importlib.abc
    import json
    import sys
    import time

    _PATH = os.path.join(_DIR, f"{os.getpid()}.jsonl")

    def _emit(ev, **kw):
        with open(_PATH, "a", encoding="utf-8") as f:
            f.write(json.dumps({"ev": ev, "t": time.time(), **kw}) + "\n")

    def _process_start():
        """Wall-clock start of this process, from /proc (10 ms resolution)."""
        try:
            with open("/proc/self/stat") as f:
                start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
            age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
            return time.time() - age
        except (OSError, ValueError, IndexError):
            return None

    _emit("process_start", t0=_process_start(), argv=sys.argv,
          trial=os.environ.get("FTSWEEP_TRIAL_NUMBER"),
          parent=os.environ.get("FTSWEEP_PARENT_PID"))
    atexit.register(lambda: _emit("exit"))

    # (module, attribute path, phase name): wrapped after the module is first imported.
    PATCHES = [
        ("ftsweep.model", "load_tokenizer", "tokenizer"),
        ("ftsweep.data", "build_datasets", "data"),
        ("ftsweep.model", "load_model", "model"),
        ("ftsweep.model", "apply_lora", "lora"),
        ("ftsweep.tracking", "Tracker.start", "tracker"),
        ("ftsweep.tracking", "Tracker.finish", "tracker_finish"),
        ("ftsweep.train", "build_trainer", "trainer_init"),
        ("ftsweep.train", "save_outputs", "save"),
        ("transformers.trainer", "Trainer.train", "train"),
        ("transformers.trainer", "Trainer.evaluate", "evaluate"),
        ("transformers.trainer_callback", "CallbackHandler.on_step_end", "step_end"),
        ("ftsweep.sweeper.trial", "main", "warm_trial"),
        ("ftsweep.sweeper.warm", "WarmComponents.tokenizer", "warm_tokenizer"),
        ("ftsweep.sweeper.warm", "WarmComponents.datasets", "warm_data"),
        ("ftsweep.sweeper.warm", "WarmComponents.model", "warm_model"),
    ]
    HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "optuna", "wandb", "bitsandbytes", "accelerate")
    _depth = [0]

    _await_first_step = [False]  # step_end is recorded once per Trainer.train(): its first optimizer step

    def _wrap(fn, phase):
        def wrapper(*a, **k):
            if phase == "step_end" and not _await_first_step[0]:
                return fn(*a, **k)
            info = {}
            if phase == "warm_trial":  # a trial in a warm worker (imported there, not run as __main__)
                info = {"trial": os.environ.get("FTSWEEP_TRIAL_NUMBER")}
            _emit(phase + ":start", **info)
            if phase == "train":
                _await_first_step[0] = True
            try:
                return fn(*a, **k)
            finally:
                _emit(phase + ":end")
                if phase == "step_end":
                    _await_first_step[0] = False

        wrapper.__wrapped__ = fn
        return wrapper

    def _apply(modname, module):
        for target, path, phase in PATCHES:
            if target != modname:
                continue
            owner, *rest = path.split(".")
            try:
                if rest:
                    cls = getattr(module, owner)
                    setattr(cls, rest[0], _wrap(getattr(cls, rest[0]), phase))
                else:
                    setattr(module, owner, _wrap(getattr(module, owner), phase))
            except AttributeError:
                _emit("probe_missing", target=f"{modname}.{path}")

    class _Loader(importlib.abc.Loader):
        def __init__(self, inner, name):
            self.inner, self.name = inner, name

        def __getattr__(self, attr):  # get_resource_reader, is_package, ...: the real loader's
            return getattr(self.inner, attr)

        def create_module(self, spec):
            return self.inner.create_module(spec)

        def exec_module(self, module):
            heavy = self.name in HEAVY and _depth[0] == 0
            if heavy:
                _emit("import:start", module=self.name)
            _depth[0] += self.name in HEAVY
            try:
                self.inner.exec_module(module)
            finally:
                _depth[0] -= self.name in HEAVY
                if heavy:
                    _emit("import:end", module=self.name)
            _apply(self.name, module)

    _WATCH = {m for m, _, _ in PATCHES} | set(HEAVY)

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in _WATCH:
                return None
            for finder in sys.meta_path:
                if finder is self:
                    continue
                spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
                if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, name)
                    return spec
            return None

    sys.meta_path.insert(0, _Finder())
