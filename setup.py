from setuptools import find_packages, setup

setup(
    name="segtrain",
    version="0.1.0",
    description="Detectron2-style training of Mask2Former, SAM 2.1 and SAM 3 segmentation models",
    packages=find_packages(include=["segtrain", "segtrain.*"]),
    # the official SAM 3 BPE vocabulary, read by segtrain.modeling.sam3's tokenizer
    package_data={"segtrain.modeling.sam3": ["bpe_simple_vocab_16e6.txt.gz"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1,<3",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "numpy",
        "scipy",
        "pycocotools>=2.0.6",
        "opencv-python-headless",
        "Pillow",
        "tabulate",
        "PyYAML",
        "tqdm",
    ],
    extras_require={
        "tb": ["tensorboard"],
        "wandb": ["wandb"],
        "plot": ["matplotlib"],
        "dev": ["pytest", "hypothesis", "matplotlib", "tensorboard", "ruff==0.17.6", "import-linter==2.17"],
    },
)
