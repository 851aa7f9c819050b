from .config import CfgNode, all_keys, configurable, get_cfg, load_config

__all__ = ["CfgNode", "get_cfg", "configurable", "load_config", "all_keys"]
