from . import advanced, attention_control, exact_inversion, storage

_MODULES = (exact_inversion, advanced, storage, attention_control)
NODE_CLASS_MAPPINGS = {k: v for module in _MODULES for k, v in module.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {k: v for module in _MODULES for k, v in module.NODE_DISPLAY_NAME_MAPPINGS.items()}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
