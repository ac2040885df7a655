"""Packages are found, not listed: the host under `harness`, and the built-in method and task
plugins, which live in the top-level folders `plugins/` and `tasks/`, under `harness.plugins`
and `harness.tasks` (so a plugin's folder in the tree is its package when installed)."""

from setuptools import find_packages, setup


def _installed_as(namespace: str, folder: str) -> list[str]:
    return [namespace, *(f"{namespace}.{package}" for package in find_packages(folder))]


setup(
    package_dir={"harness": "harness", "harness.plugins": "plugins", "harness.tasks": "tasks"},
    packages=[*find_packages(include=["harness", "harness.*"]),
              *_installed_as("harness.plugins", "plugins"), *_installed_as("harness.tasks", "tasks")],
)
