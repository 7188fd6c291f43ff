"""Save a compiled model with its spec, and load it back: the ``.ncd`` source, the bound sizes,
the weights in safetensors and a model card (README.md: the diagram and the cost table).

The folder follows huggingface_hub's ``ModelHubMixin`` layout (``config.json``,
``model.safetensors``, ``README.md`` with YAML metadata), and ``NcdPretrained`` is a
``ModelHubMixin``, so ``push_to_hub`` / ``from_pretrained`` work wherever the hub is reachable.
Needs the ``ncd[hub]`` extra (safetensors; huggingface_hub for the mixin).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ncd.errors import NcdError

FORMAT = "ncd-pretrained"
SPEC_FILE = "spec.ncd"
CONFIG_FILE = "config.json"  # huggingface_hub's CONFIG_NAME
WEIGHTS_FILE = "model.safetensors"  # huggingface_hub's SAFETENSORS_SINGLE_FILE
CARD_FILE = "README.md"
DIAGRAM_FILE = "diagram.svg"
MAX_SPEC_BYTES = 4 << 20  # a spec is text: a larger file is not one


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError:
        raise NcdError("saving and loading models needs safetensors", hint="pip install 'ncd[hub]'") from None
    return st


def save(module, directory: str | os.PathLike[str], *, card: bool = True) -> Path:
    """Write ``module`` (from ``ncd.load``) into ``directory``: spec.ncd, config.json (sizes, entry),
    model.safetensors and, with ``card``, README.md and diagram.svg. Returns the directory."""
    from ncd import __version__
    from ncd.backends.pytorch import CompiledModule

    if not isinstance(module, CompiledModule) or not module._ncd_top:
        raise NcdError("ncd.save takes the module ncd.load returned (the whole model, not a sub-block)")
    source, filename = module._ncd_source
    if source is None:
        raise NcdError("this module does not know its spec's text", hint="compile it with ncd.load(path, ...)")
    st = _safetensors()
    ir = module._ncd_spec
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / SPEC_FILE).write_text(source, encoding="utf-8")
        config = {"format": FORMAT, "ncd_version": __version__, "spec": SPEC_FILE, "spec_name": Path(filename or "").name,
                  "entry": ir.entry_block.name, "sizes": dict(sorted(ir.bindings.items())),
                  "dtype": str(next(iter(module.state_dict().values()), None).dtype).removeprefix("torch.")
                  if module.state_dict() else None}
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        st.save_model(module, str(path / WEIGHTS_FILE))
        if card:
            from ncd.card import write_card

            write_card(module, path, config)
    except OSError as exc:
        raise NcdError(f"cannot write {path}: {exc.strerror or exc}", hint="choose a writable directory") from None
    return path


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise NcdError(f"{path} has no {CONFIG_FILE}: it is not a model saved by ncd.save")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NcdError(f"cannot read {config_path}: {exc}") from None
    sizes = config.get("sizes", {}) if isinstance(config, dict) else None
    if (not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(sizes, dict)
            or not all(isinstance(k, str) and type(v) is int for k, v in sizes.items())
            or not isinstance(config.get("entry"), str) or not isinstance(config.get("spec", SPEC_FILE), str)):
        raise NcdError(f"{config_path} is not an ncd model config",
                       hint=f"it needs format={FORMAT!r}, an entry name and integer sizes")
    return config


def load_pretrained(directory: str | os.PathLike[str], *, scan_backend: str = "auto", strict: bool = True):
    """The module ``save`` wrote to ``directory``: the spec compiled at its saved sizes, then its
    weights loaded. A hub repository id works too (downloaded with huggingface_hub)."""
    path = Path(directory)
    if not path.is_dir():
        path = _download(str(directory))
    config = read_config(path)
    spec = path / Path(config.get("spec", SPEC_FILE)).name  # never outside the folder
    if not spec.is_file() or spec.stat().st_size > MAX_SPEC_BYTES:
        raise NcdError(f"{path} has no readable {spec.name} (at most {MAX_SPEC_BYTES} bytes)")
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise NcdError(f"{path} has no {WEIGHTS_FILE}")
    import ncd

    st = _safetensors()
    source = spec.read_text(encoding="utf-8")
    module = ncd.load(source, block=config["entry"], sizes=config["sizes"], scan_backend=scan_backend)
    module.locate_errors(source, str(spec))
    try:
        missing, unexpected = st.load_model(module, str(weights), strict=strict)
    except RuntimeError as exc:
        raise NcdError(f"the weights in {weights} do not fit the spec: {str(exc).splitlines()[0][:300]}") from None
    del missing, unexpected
    return module


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise NcdError(f"no such directory: {repo_id}",
                       hint="a hub repository id needs huggingface_hub: pip install 'ncd[hub]'") from None
    return Path(snapshot_download(repo_id))


def _mixin():
    try:
        from huggingface_hub import ModelHubMixin
    except ImportError:
        raise NcdError("NcdPretrained needs huggingface_hub", hint="pip install 'ncd[hub]'") from None
    return ModelHubMixin


def __getattr__(name: str):
    if name == "NcdPretrained":  # built on first use so importing ncd.hub needs no huggingface_hub
        globals()[name] = cls = _make_pretrained(_mixin())
        return cls
    raise AttributeError(name)


def _make_pretrained(mixin):
    class NcdPretrained(mixin, library_name="ncd", tags=["ncd", "neural-circuit-diagram", "pytorch"]):
        """A compiled ncd model as a ``ModelHubMixin``: ``NcdPretrained(module).save_pretrained(dir)``,
        ``.push_to_hub(repo)``, ``NcdPretrained.from_pretrained(dir_or_repo).module``."""

        def __init__(self, module) -> None:
            self.module = module

        def _save_pretrained(self, save_directory: Path) -> None:
            save(self.module, save_directory)

        @classmethod
        def _from_pretrained(cls, *, model_id: str, revision: str | None = None, cache_dir=None,
                             force_download: bool = False, local_files_only: bool = False, token=None,
                             scan_backend: str = "auto", **kwargs):
            path = Path(model_id)
            if not path.is_dir():
                from huggingface_hub import snapshot_download

                path = Path(snapshot_download(model_id, revision=revision, cache_dir=cache_dir,
                                              force_download=force_download, local_files_only=local_files_only,
                                              token=token))
            return cls(load_pretrained(path, scan_backend=scan_backend))

    return NcdPretrained
