from .build import *  # noqa
