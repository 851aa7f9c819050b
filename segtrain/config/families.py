"""The ``add_*_config`` of every built-in family, applied by ``get_cfg``.

A family owns one file in this package that adds its node; list it here.
"""
__all__ = ["add_all_family_configs"]


def add_all_family_configs(cfg) -> None:
    from .concept_config import add_concept_config
    from .criterion_config import add_criterion_config
    from .maskformer_config import add_maskformer_config
    from .video_config import add_video_config

    add_criterion_config(cfg)
    add_maskformer_config(cfg)
    add_video_config(cfg)
    add_concept_config(cfg)
