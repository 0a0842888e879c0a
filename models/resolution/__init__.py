"""Layer 9, which class runs a model id and ``get_model`` that returns it ready.

The model families (``catalog``); the (task, model type) -> family table and a model built from
its artifacts on disk (``build``);
``get_model`` / ``get_model_type`` (``registry``); models built from registry packages
(``package_loader``) and foundation families (``foundation_loader``); every cached model, both
layouts (``cached_models``); one shared instance per model key (``manager``).

May import: ``models.common`` .. ``models.foundation`` (everything below it).
"""
