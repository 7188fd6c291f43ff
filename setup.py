"""Maps the design card's top-level folders into the one import path `ncd.*`.

`backends/`, `grammar/` and `specs/` live beside `ncd/` in the repository (the layout users read),
but install as `ncd.backends`, `ncd.grammar` and `ncd.specs` (the import path users type).
pyproject.toml cannot express a prefix for discovered subpackages, hence this file.
"""
from setuptools import find_packages, setup

ROOTS = {"ncd": "ncd", "ncd.backends": "backends", "ncd.grammar": "grammar", "ncd.specs": "specs"}

packages = []
for package, folder in ROOTS.items():
    packages.append(package)
    packages.extend(f"{package}.{sub}" for sub in find_packages(folder))

setup(packages=packages, package_dir=ROOTS)
