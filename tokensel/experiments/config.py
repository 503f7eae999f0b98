"""Experiment configuration: structured (dataclass) schemas, YAML loading, ``key=value``
overrides and validation that runs before any model is loaded.

A config has six groups::

    model:     which VLM to load (zoo name, local checkpoint path or a registered test model)
    selector:  which token selector to apply and its constructor parameters
    budget:    how many vision tokens to keep (``k``, or ``ratio``, or ``adaptive``; ``k: null``
               without the others = keep all)
    dataset:   the evaluation data (JSONL or a local POPE / GQA / MME copy)
    eval:      generation and evaluation settings
    logging:   where results go (run directory, Weights & Biases)

Every mistake raises :class:`ConfigError` with the offending key in the message.
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tokensel.experiments.datasets import get_dataset, list_datasets
from tokensel.experiments.placement import register_resolvers
from tokensel.plugins import PluginError

__all__ = [
    "ConfigError",
    "ModelConfig",
    "SelectorConfig",
    "BudgetConfig",
    "DatasetConfig",
    "EvalConfig",
    "LoggingConfig",
    "ExperimentConfig",
    "load_config",
    "validate_config",
    "save_config",
    "to_flat_dict",
    "NO_SELECTOR",
    "check_output_dir",
    "budget_args",
    "budget_label",
    "read_yaml",
]

register_resolvers()  # ${relative_layer:...} / ${relative_layers:...}: in-LLM layers at the original's depth

#: Selector names that mean "run the unpruned model".
NO_SELECTOR = ("none",)


class ConfigError(ValueError):
    """An invalid experiment config. The message names the key."""


@dataclass
class ModelConfig:
    #: ``shapes-llava`` (embedded zoo model), a local checkpoint directory (loaded with
    #: ``tokensel.load_vlm``) or a name registered with
    #: :func:`tokensel.experiments.modeling.register_model` (``tiny-random-llava`` is a small
    #: randomly initialised LLaVA for tests and CI).
    name: str = "shapes-llava"
    #: ``auto`` = ``cuda:LOCAL_RANK`` when a GPU is present, else ``cpu``.
    device: str = "auto"
    dtype: str = "float32"
    #: Prompt with ``{question}`` and the processor's image placeholder; ``null`` = the model's default.
    prompt: Optional[str] = None
    #: Seed used by test models built at random.
    seed: int = 0


@dataclass
class SelectorConfig:
    #: A name from ``tokensel.list_selectors()``, or ``none`` for the unpruned model.
    name: str = "none"
    #: Keyword arguments for the selector's constructor (e.g. ``alpha``, ``tau_tv``).
    params: Dict[str, Any] = field(default_factory=dict)
    #: If false, params the selector does not accept are dropped with a warning instead of
    #: failing (used by grid sweeps whose parameters only apply to some selectors).
    strict_params: bool = True


@dataclass
class BudgetConfig:
    #: Vision tokens kept per image (per crop for any-res models); ``null`` keeps every token
    #: (unless ``ratio`` or ``adaptive`` is given: then ``k`` must be ``null``).
    k: Optional[int] = 64
    #: Fraction of each image's (crop's) tokens kept, in (0, 1] (see ``tokensel.prune``).
    ratio: Optional[float] = None
    #: A hardness-aware budget, ``{k_max, k_min, tol, coverage}`` (:class:`tokensel.AdaptiveBudget`):
    #: each image keeps between k_min and k_max tokens by its selector's stopping rule.
    adaptive: Optional[Dict[str, Any]] = None


def budget_args(cfg: DictConfig) -> tuple[Any, Optional[float]]:
    """``(k, ratio)`` for ``tokensel.prune`` from a validated config: ``k`` an int or a
    :class:`tokensel.AdaptiveBudget` (``budget.adaptive``), or ``(None, None)`` = keep all."""
    b = cfg.budget
    if b.get("adaptive") is not None:
        from tokensel.budget import AdaptiveBudget

        return AdaptiveBudget.from_dict(dict(OmegaConf.to_container(b.adaptive, resolve=True))), None
    if b.get("ratio") is not None:
        return None, float(b.ratio)
    return b.k, None


def budget_label(cfg: DictConfig) -> str:
    """Short budget name for run names and labels: ``k32``, ``r0.25``,
    ``adaptive-kmax128-kmin4-cov0.99-tol0.1``; ``full`` when every token is kept."""
    k, ratio = budget_args(cfg)
    if ratio is not None:
        return f"r{ratio:g}"
    if k is None:
        return "full"
    if isinstance(k, int):
        return f"k{k}"
    parts = [f"kmax{k.k_max}", f"kmin{k.k_min}"]
    parts += [f"cov{k.coverage:g}"] if k.coverage is not None else []
    parts += [f"tol{k.tol:g}"] if k.tol is not None else []
    return "adaptive-" + "-".join(parts)


def _validate_budget(cfg: DictConfig) -> None:
    b = cfg.budget
    k, ratio, adaptive = b.k, b.get("ratio"), b.get("adaptive")
    if k is not None and k <= 0:
        _fail("budget.k", f"must be a positive integer or null (keep all tokens), got {k}")
    if ratio is not None and adaptive is not None:
        _fail("budget.ratio", "and budget.adaptive are both set; give one of them")
    given = "budget.ratio" if ratio is not None else "budget.adaptive" if adaptive is not None else None
    if given and k is not None:
        _fail("budget.k", f"must be null when {given} is set (got k={k}): add budget.k=null")
    if ratio is not None and (isinstance(ratio, bool) or not 0 < float(ratio) <= 1):
        _fail("budget.ratio", f"must be a number in (0, 1], got {ratio!r}")
    if adaptive is not None:
        from tokensel.budget import AdaptiveBudget

        spec = OmegaConf.to_container(adaptive, resolve=True) if OmegaConf.is_config(adaptive) else adaptive
        try:
            AdaptiveBudget.from_dict(spec if isinstance(spec, dict) else adaptive)
        except (TypeError, ValueError) as exc:
            _fail("budget.adaptive", str(exc))
        name = cfg.selector.name
        if name not in NO_SELECTOR:
            from tokensel.selectors import create_selector

            sel = create_selector(name, **effective_selector_params(cfg))
            try:
                sel.check_adaptive(AdaptiveBudget.from_dict(spec))
            except ValueError as exc:
                _fail("budget.adaptive", str(exc))


@dataclass
class DatasetConfig:
    #: A registered dataset (:func:`tokensel.experiments.datasets.register_dataset`); built in:
    #: ``jsonl`` (the tokensel format) | ``pope`` | ``gqa`` | ``mme`` (local copies in their usual
    #: layouts, converted on load) | ``shapes`` (synthetic set, generated if the file is missing).
    format: str = "jsonl"
    #: The JSONL file (jsonl / shapes), the POPE question file, the GQA question JSON, or the
    #: MME root folder.
    path: str = "???"
    #: Image folder for pope / gqa (default: next to ``path``).
    image_root: Optional[str] = None
    #: Evaluate at most this many samples (after ``offset``); ``null`` = all.
    limit: Optional[int] = None
    offset: int = 0
    #: ``format: shapes``: scenes (several questions each) to generate when the file is missing.
    generate_images: int = 50
    #: A name for tables and W&B (default: the file stem).
    name: Optional[str] = None


@dataclass
class EvalConfig:
    #: Seeds torch / random / numpy before the run; passed to selectors that take ``seed``.
    seed: int = 0
    #: ``generate``: greedy decoding of up to ``max_new_tokens``, matched against the answer.
    #: ``choice``: one prefill; the answer is the candidate with the highest next-token logit
    #: (yes/no for yes/no questions, else the answers seen in the question's category; on the
    #: shapes set, the generator's answer vocabulary of the category).
    scoring: str = "generate"
    max_new_tokens: int = 8
    #: Samples per model call (left-padded). With 1, ``prefill_ms`` is measured per sample;
    #: larger batches report batch times divided by the batch size.
    batch_size: int = 1
    #: Check that every image file exists and decodes before loading the model.
    check_images: bool = True
    progress: bool = True
    #: ``auto`` | ``gloo`` | ``nccl``: backend when launched with torchrun.
    dist_backend: str = "auto"


@dataclass
class LoggingConfig:
    #: Parent directory for run directories (resolved config, per-sample results, W&B files).
    output_dir: str = "runs"
    #: Run name (default: built from dataset, selector and k).
    run_name: Optional[str] = None
    #: ``auto`` (online when logged in or WANDB_MODE is set, else offline) | ``online`` |
    #: ``offline`` | ``disabled``.
    wandb_mode: str = "auto"
    project: str = "tokensel"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    #: Log the per-sample results table.
    log_table: bool = True
    #: Images with their kept-token overlay logged per run.
    num_overlays: int = 4


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


_WANDB_MODES = ("auto", "online", "offline", "disabled")
_DTYPES = ("float32", "float16", "bfloat16", "auto")
_BACKENDS = ("auto", "gloo", "nccl")


def _omegaconf_error(exc: OmegaConfBaseException, where: str) -> ConfigError:
    key = getattr(exc, "full_key", None)
    msg = (getattr(exc, "msg", None) or str(exc)).strip().splitlines()[0]
    if key:
        return ConfigError(f"{where}: invalid value for key '{key}': {msg}")
    return ConfigError(f"{where}: {msg}")


def _mismatch(schema: Any, layer: Any, prefix: str = "") -> Optional[tuple[str, str]]:
    """The first key where ``layer`` holds a list or scalar and ``schema`` a mapping (or the
    reverse), with what was expected."""
    if not isinstance(layer, DictConfig) or not isinstance(schema, DictConfig):
        return None
    for key in layer.keys():
        if key not in schema:
            continue
        full = f"{prefix}{key}"
        want, got = schema._get_node(key), layer._get_node(key)
        if isinstance(want, DictConfig) and not isinstance(got, DictConfig) and not got._is_none():
            return full, "a mapping (key: value pairs)"
        if isinstance(want, ListConfig) and isinstance(got, DictConfig):
            return full, "a list"
        deeper = _mismatch(want, got, full + ".")
        if deeper:
            return deeper
    return None


def _shape_error(schema: Any, layer: Any, where: str, exc: Exception) -> ConfigError:
    found = _mismatch(schema, layer)
    if found is None:
        return ConfigError(f"{where}: {exc}")
    key, expected = found
    got = OmegaConf.select(layer, key)
    shown = OmegaConf.to_container(got) if isinstance(got, (DictConfig, ListConfig)) else got
    return ConfigError(f"{where}: invalid value for key '{key}': expected {expected}, got {shown!r}")


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """``["budget.k=32", "selector.name=mmtok"]`` -> a DictConfig. Values are parsed as YAML."""
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    import yaml

    items = []
    for o in overrides:
        key, value = o.lstrip("+").split("=", 1)
        # W&B agents format a null grid value as "None"
        item = f"{key}=null" if value == "None" else f"{key}={value}"
        try:
            OmegaConf.from_dotlist([item])
        except yaml.YAMLError as exc:
            raise ConfigError(f"overrides: invalid value for key '{key}': {value!r} is not a plain YAML value "
                              f"({_yaml_problem(exc)})") from None
        except OmegaConfBaseException as exc:
            raise _omegaconf_error(exc, "overrides") from None
        items.append(item)
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(exc, "overrides") from None


def _yaml_problem(exc: Exception) -> str:
    """What a YAML error says, without its file marks; a refused tag (``!!python/...``) says
    that configs are plain YAML."""
    problem = str(getattr(exc, "problem", None) or exc).strip()
    tag = re.search(r"constructor for the tag '([^']*)'", problem)
    if tag:
        shown = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        return f"the tag {shown} is not allowed: configs are plain YAML (python and other custom tags are refused)"
    return problem


def _key_at(lines: list[str], index: int) -> str:
    """The dotted key of the mapping entry at or above line ``index`` (0-based) of a YAML text,
    read from the indentation (best effort: ``""`` when there is none)."""
    path: list[str] = []
    indent: Optional[int] = None
    for line in reversed(lines[: index + 1]):
        m = re.match(r"^(\s*)(?:-\s+)?([^\s#:'\"\-\[{][^:#]*?|'[^']*'|\"[^\"]*\")\s*:(?:\s|$)", line)
        if not m or (indent is not None and len(m.group(1)) >= indent):
            continue
        path.append(m.group(2).strip("'\""))
        indent = len(m.group(1))
        if indent == 0:
            break
    return ".".join(reversed(path))


def read_yaml(path: str | os.PathLike, what: str = "config file") -> DictConfig:
    """The mapping in the YAML file ``path``. Raises :class:`ConfigError` naming the file, the
    line and column and the key of a syntax error or a refused tag (python tags are never
    constructed), and when the file is missing, unreadable or not a mapping."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} not found: {str(p)!r}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {str(p)!r} cannot be read: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)  # the syntax alone: nothing is constructed
        if node is not None and not isinstance(node, yaml.MappingNode):
            kind = "list" if isinstance(node, yaml.SequenceNode) else "scalar"
            raise ConfigError(f"{what} {str(p)!r} must hold a mapping at top level, got a {kind}")
        loaded = OmegaConf.create(text) if node is not None else OmegaConf.create({})  # safe: no python tags
    except yaml.YAMLError as exc:
        mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
        where = ""
        if mark is not None:
            key = _key_at(text.splitlines(), mark.line)
            where = f"line {mark.line + 1}, column {mark.column + 1}" + (f" (key '{key}')" if key else "") + ": "
        raise ConfigError(f"cannot parse {what} {str(p)!r}: {where}{_yaml_problem(exc)}") from None
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(exc, str(p)) from None
    assert isinstance(loaded, DictConfig)
    return loaded


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    validate: bool = True,
    base: Any = None,
) -> DictConfig:
    """Load ``path`` (YAML; or the name of a shipped config such as ``shapes``, see
    :mod:`tokensel.experiments.shipped`) over the schema defaults, apply ``overrides`` and validate.

    ``base`` is an optional dict / DictConfig merged between the YAML file and the overrides
    (used by sweeps). Returns a read-only, fully resolved DictConfig typed by
    :class:`ExperimentConfig`.
    """
    schema = OmegaConf.structured(ExperimentConfig)
    layers: list[tuple[str, Any]] = []
    p = None
    if path is not None:
        p = resolve_config_path(path, "experiment")
        layers.append((str(p), read_yaml(p)))
    if base is not None:
        layers.append(("sweep point", OmegaConf.create(base) if not isinstance(base, DictConfig) else base))
    if overrides:
        layers.append(("overrides", parse_overrides(list(overrides))))
    cfg = schema
    for where, layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as exc:
            raise _omegaconf_error(exc, where) from None
        except (TypeError, ValueError) as exc:  # e.g. a list where the schema has a mapping
            raise _shape_error(cfg, layer, where, exc) from None
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(exc, "interpolation") from None
    if validate:
        validate_config(cfg, config_dir=p.parent if p is not None else None)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def resolve_config_path(path: str | os.PathLike, kind: str) -> Path:
    """``path`` if it is a file, else the shipped config of that name and ``kind``
    (``experiment`` | ``sweep``, :mod:`tokensel.experiments.shipped`); ConfigError if neither."""
    from tokensel.experiments.shipped import find_shipped, names_hint

    p = Path(path)
    if p.is_file():
        return p
    found = find_shipped(str(path), kind)
    if found is None:
        what = "config file" if kind == "experiment" else "sweep config file"
        raise ConfigError(f"{what} not found: {str(p)!r}; give a path or a name ({names_hint(kind)})")
    return found


def _fail(key: str, msg: str) -> None:
    raise ConfigError(f"{key}: {msg}")


def selector_accepted_params(name: str) -> Optional[set]:
    """Constructor parameters the selector ``name`` accepts (None = anything)."""
    from tokensel.selectors import selector_info

    cls = selector_info(name).cls
    if cls.__init__ is object.__init__:
        return set()
    sig = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {p for p in sig.parameters if p != "self"}


def effective_selector_params(cfg: DictConfig, with_seed: bool = False) -> dict:
    """The selector parameters that will be passed on, after ``strict_params`` filtering;
    with ``with_seed``, ``eval.seed`` is added as ``seed`` for selectors that take one.
    A ``null`` parameter the selector does not take is dropped (effective configs record
    parameters that do not apply as ``null``)."""
    params = dict(OmegaConf.to_container(cfg.selector.params, resolve=True) or {})
    if cfg.selector.name in NO_SELECTOR:
        params = {k: v for k, v in params.items() if v is not None}
        return params if cfg.selector.strict_params else {}
    accepted = selector_accepted_params(cfg.selector.name)
    if accepted is not None:
        # null = "does not apply" (how effective configs record it): dropped unless accepted
        params = {k: v for k, v in params.items() if v is not None or k in accepted}
    if not cfg.selector.strict_params and accepted is not None:
        params = {k: v for k, v in params.items() if k in accepted}
    if with_seed and "seed" not in params and accepted is not None and "seed" in accepted:
        params["seed"] = int(cfg.eval.seed)
    return params


def _check_finite_params(params: dict, prefix: str = "selector.params") -> None:
    """NaN / inf parameter values are config errors, whatever the selector would do with them."""
    import math

    for key, value in params.items():
        if isinstance(value, dict):
            _check_finite_params(value, f"{prefix}.{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, float) and not math.isfinite(item):
                    _fail(f"{prefix}.{key}[{i}]", f"must be a finite number, got {item}")
        elif isinstance(value, float) and not math.isfinite(value):
            _fail(f"{prefix}.{key}", f"must be a finite number, got {value}")
        elif isinstance(value, str) and value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
            _fail(f"{prefix}.{key}", f"must be a finite number, got {value!r}")


def _dry_batch():
    """A small synthetic input with every field a vision-stage selector may need."""
    import torch

    from tokensel.batch import TokenBatch

    g = torch.Generator().manual_seed(0)
    n = 16
    return TokenBatch(
        vision=torch.randn(1, n, 8, generator=g), vision_raw=torch.randn(1, n, 8, generator=g),
        text=torch.randn(1, 3, 8, generator=g), cls_attention=torch.rand(1, n, generator=g),
        keys=torch.randn(1, n, 4, generator=g), llm_attention=torch.rand(1, n, generator=g), grid=(4, 4),
    )


def _try_selector(name: str, params: dict) -> None:
    """Build the selector from the config's parameters and, for a vision-stage selector, run
    it once on a tiny synthetic input: a parameter error surfaces here, before any model
    loads, instead of at the first sample. A failure of the dry run that names none of the
    given parameters is left to the real run (the synthetic input may lack what it needs)."""
    from tokensel.selectors import create_selector

    try:
        selector = create_selector(name, **params)
    except (TypeError, ValueError) as exc:
        _fail("selector.params", f"selector {name!r} rejects its parameters: {exc}")
    if getattr(selector, "stage", "vision") != "vision" or not params:
        return
    try:
        selector(_dry_batch(), k=4)
    except Exception as exc:  # only errors naming a parameter are config errors
        named = [key for key in params if key in str(exc)]
        if named:
            _fail(f"selector.params.{named[0]}", f"selector {name!r} fails with its parameters: {exc}")


def _check_device(spec: Any) -> None:
    import torch

    if not isinstance(spec, str) or not spec:
        _fail("model.device", f"must be 'auto' or a torch device such as 'cpu' or 'cuda:0', got {spec!r}")
    if spec == "auto":
        return
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        _fail("model.device", f"must be 'auto' or a torch device such as 'cpu' or 'cuda:0', got {spec!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            _fail("model.device", f"{spec!r} was asked for but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            _fail("model.device", f"{spec!r}: only {torch.cuda.device_count()} CUDA device(s) are present")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        _fail("model.device", f"{spec!r} was asked for but MPS is not available")
    elif device.type not in ("cpu", "cuda", "mps"):
        _fail("model.device", f"device type {device.type!r} is not supported here; use 'auto', 'cpu' or 'cuda[:N]'")


def check_output_dir(path: Any) -> None:
    """Raise ConfigError unless ``logging.output_dir`` is (or can be created as) a writable
    folder. Creates nothing: a probe file is written in the nearest existing ancestor."""
    import tempfile

    target = Path(str(path)).expanduser()
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        _fail("logging.output_dir", f"{str(target)!r} cannot be created: {str(probe)!r} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".tokensel-write-probe-"):
            pass
    except OSError as exc:
        _fail("logging.output_dir", f"{str(target)!r} is not writable ({exc.strerror or exc})")


def validate_config(cfg: DictConfig, config_dir: Path | None = None, *, writes_output: bool = True) -> None:
    """Check everything that can be checked without loading a model. Raises ConfigError.

    Order: required keys, the output folder (first: a run must never fail at its end because
    of it; skipped with ``writes_output=False``, for a caller that writes no run folder), the
    selector (built, and dry-run on a tiny synthetic input), budget, dataset, model, eval and
    logging settings."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        _fail(missing[0], "is required (given as ??? / not set); set it in the config or as key=value")
    if writes_output:
        check_output_dir(cfg.logging.output_dir)
    _validate_selector(cfg)
    _validate_budget(cfg)
    _validate_dataset(cfg.dataset)
    _validate_model(cfg.model)
    _validate_eval_logging(cfg)


def _validate_selector(cfg: DictConfig) -> None:
    name = cfg.selector.name
    if name is None or not isinstance(name, str) or not name:
        _fail("selector.name", "must be a selector name (see `tokensel selectors`) or 'none'")
    if name in NO_SELECTOR:
        if effective_selector_params(cfg) and cfg.selector.strict_params:
            _fail("selector.params", f"selector 'none' takes no parameters, got {list(effective_selector_params(cfg))}")
        return
    try:
        from tokensel.selectors import list_selectors, selector_info

        available = list_selectors()
    except ImportError as exc:  # pragma: no cover - only while selectors are missing
        _fail("selector.name", f"cannot list selectors ({exc}); only 'none' is usable")
    if name not in available:
        try:
            selector_info(name)  # a plug-in that fails to import: its error names the distribution
        except ImportError as exc:
            _fail("selector.name", str(exc))
        except ValueError:
            pass
        _fail("selector.name", f"unknown selector {name!r}; available: none, {', '.join(available)}")
    params = effective_selector_params(cfg)
    _check_finite_params(params)
    _try_selector(name, params)


def _validate_dataset(ds: DictConfig) -> None:
    try:
        dataset = get_dataset(ds.format)
    except PluginError as err:  # an installed dataset plug-in of that name that fails to import
        _fail("dataset.format", str(err))
    except (TypeError, ValueError):
        _fail("dataset.format", f"must be a registered dataset ({', '.join(list_datasets())}), got {ds.format!r}")
    problem = dataset.check_path(Path(ds.path))
    if problem:
        _fail("dataset.path", problem)
    if ds.image_root is not None and not Path(ds.image_root).is_dir():
        _fail("dataset.image_root", f"image folder not found: {ds.image_root!r}")
    if ds.limit is not None and ds.limit <= 0:
        _fail("dataset.limit", f"must be a positive integer or null, got {ds.limit}")
    if ds.offset < 0:
        _fail("dataset.offset", f"must be >= 0, got {ds.offset}")
    if ds.generate_images <= 0:
        _fail("dataset.generate_images", f"must be positive, got {ds.generate_images}")


def _validate_model(model: DictConfig) -> None:
    if not model.name:
        _fail("model.name", "is required")
    _check_device(model.device)
    if model.dtype not in _DTYPES:
        _fail("model.dtype", f"must be one of {_DTYPES}, got {model.dtype!r}")
    from tokensel.experiments.modeling import is_known_model

    if not is_known_model(model.name):
        _fail("model.name", f"{model.name!r} is neither a registered model name nor an existing checkpoint directory")
    if model.prompt is not None and "{question}" not in model.prompt:
        _fail("model.prompt", "must contain the placeholder {question}")


def _validate_eval_logging(cfg: DictConfig) -> None:
    if cfg.eval.max_new_tokens < 1:
        _fail("eval.max_new_tokens", f"must be >= 1, got {cfg.eval.max_new_tokens}")
    if cfg.eval.batch_size < 1:
        _fail("eval.batch_size", f"must be >= 1, got {cfg.eval.batch_size}")
    if cfg.eval.scoring not in ("generate", "choice"):
        _fail("eval.scoring", f"must be 'generate' or 'choice', got {cfg.eval.scoring!r}")
    if cfg.eval.dist_backend not in _BACKENDS:
        _fail("eval.dist_backend", f"must be one of {_BACKENDS}, got {cfg.eval.dist_backend!r}")
    if cfg.logging.wandb_mode not in _WANDB_MODES:
        _fail("logging.wandb_mode", f"must be one of {_WANDB_MODES}, got {cfg.logging.wandb_mode!r}")
    if cfg.logging.num_overlays < 0:
        _fail("logging.num_overlays", f"must be >= 0, got {cfg.logging.num_overlays}")


def save_config(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True))


def to_flat_dict(cfg: DictConfig | dict, prefix: str = "") -> dict:
    """``{"selector": {"name": "x"}}`` -> ``{"selector.name": "x"}`` (dicts of params too)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else cfg
    out: dict = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(to_flat_dict(value, prefix=full + "."))
        else:
            out[full] = value
    return out
