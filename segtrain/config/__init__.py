"""Configuration: ``CfgNode``, ``get_cfg`` (base defaults plus the registered additions of the
loss library and every family), ``load_config``, ``configurable`` and the start-up checks."""

from .cfg_node import CfgNode, all_keys
from .config import configurable, get_cfg, load_config, register_config_addition

__all__ = ["CfgNode", "get_cfg", "configurable", "load_config", "all_keys", "register_config_addition"]
