"""Import user modules named in the config (``MODULES``) or by ``--module``."""

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Iterable, List

from .errors import ConfigError

__all__ = ["import_user_modules"]


def import_user_modules(names: Iterable[str]) -> List[ModuleType]:
    """Import each dotted module name or ``.py`` path once, so its registrations run.
    A failure is one line naming the module."""
    out = []
    for name in dict.fromkeys(names):
        if not name:
            continue
        try:
            if name.endswith(".py"):
                if not os.path.isfile(name):
                    raise ConfigError(f"user module file not found: {name!r}")
                mod_name = "segtrain_user_" + os.path.splitext(os.path.basename(name))[0]
                if mod_name in sys.modules:
                    out.append(sys.modules[mod_name])
                    continue
                spec = importlib.util.spec_from_file_location(mod_name, name)
                module = importlib.util.module_from_spec(spec)
                sys.modules[mod_name] = module
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(name)
        except ConfigError:
            raise
        except ModuleNotFoundError as e:
            raise ConfigError(f"cannot import user module {name!r}: {e}") from e
        except Exception as e:
            raise ConfigError(f"user module {name!r} failed to import: {type(e).__name__}: {e}") from e
        out.append(module)
    return out
