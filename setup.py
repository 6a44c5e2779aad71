"""Build config beside pyproject.toml: the one thing pyproject's `packages.find` cannot say.

The prompt templates live at the repository's top level (`teacher_prompts/`, their one source) and ship inside the
wheel as `distill/teacher_prompts/` (package data listed in pyproject.toml), so `pip install` users find them where
`distill.teacher.prompts.installed_prompts_dir()` looks. Every other package is found as usual.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["distill", "distill.*"]), "distill.teacher_prompts"],
    package_dir={"distill.teacher_prompts": "teacher_prompts"},
)
