"""The model card (README.md) ``ncd.save`` writes: hub metadata, the diagram, the sizes, the cost
table from the same analysis as ``ncd cost``, and how to load the model."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def card_text(module, config: dict[str, Any], diagram: str | None) -> str:
    """``diagram``: the name of the SVG beside the card, or None to embed the DOT text."""
    from ncd.analysis import analyze
    from ncd.analysis.table import caption, markdown_table
    from ncd.notebook import dot_text

    ir = module._ncd_spec
    title = ir.meta.title or Path(config.get("spec_name") or ir.name).stem
    report = analyze(ir)
    n_params = sum(p.numel() for p in module.parameters())
    lines = ["---", "library_name: ncd", "tags:", "- ncd", "- neural-circuit-diagram", "- pytorch", "---", "",
             f"# {title}", ""]
    if ir.meta.paper:
        lines += [f"Paper: {ir.meta.paper}", ""]
    lines += [f"A Neural-Circuit-Diagram spec (`{config['spec']}`, entry block `{config['entry']}`) compiled to "
              f"PyTorch by ncd {config['ncd_version']}: {n_params:,} parameters in `model.safetensors`.", "",
              "## Diagram", ""]
    if diagram:
        lines += [f"![{title}]({diagram})", ""]
    else:
        lines += ["```dot", dot_text(ir).rstrip(), "```", ""]
    lines += ["## Sizes", "", "| axis | size |", "|---|---:|"]
    for name, axis in sorted(ir.axes.items()):
        if axis.prime_of:
            continue
        value = ir.bindings.get(name, report.size.number(report.size(name)))
        lines.append(f"| {name} | {value if value is not None else 'free'} |")
    lines += ["", "## Cost", "", caption(report) + " (a free axis leaves a formula: the bound sizes put in, "
              "the symbolic formula beside it).", "", markdown_table(report, substitute=True).rstrip(), "",
              "## Use", "", "```python", "import ncd", "", f'model = ncd.load_pretrained("path/to/this/folder")',
              "```", "", "The spec itself is `spec.ncd`; `ncd render spec.ncd` draws it and `ncd cost spec.ncd` "
              "costs it at other sizes.", ""]
    return "\n".join(lines)


def write_card(module, path: Path, config: dict[str, Any]) -> None:
    from ncd.notebook import svg

    image = svg(module._ncd_spec)
    diagram = None
    if image is not None:
        (path / "diagram.svg").write_text(image, encoding="utf-8")
        diagram = "diagram.svg"
    (path / "README.md").write_text(card_text(module, config, diagram), encoding="utf-8")
