"""Sphinx configuration of rif-native's API reference.

Build (warnings are errors; nothing is fetched over the network):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The reference is generated from the docstrings of the installed ``rif_native`` (``pip install
-e .[docs]``), so the compiled core must import.
"""

import rif_native
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.util import inspect as sphinx_inspect

project = "rif-native"
author = "rif-native developers"
copyright = "rif-native developers"
release = rif_native.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings are Google style (Args:, Returns:, Attributes:)
]

exclude_patterns = ["_build"]
# The images in this folder belong to the README; only the .rst pages are sources.
source_suffix = {".rst": "restructuredtext"}

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}

# Google style ("Args:", "Returns:", "Attributes:") throughout; rif_native.datasets uses NumPy style.
napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = False

html_theme = "alabaster"
html_static_path = []


def _init_signature(app, what, name, obj, options, signature, return_annotation):
    """Show the constructor's parameters for classes whose ``__new__`` only dispatches.

    ``Attribution.__new__(cls, X=None, *args, **kwargs)`` picks a subclass (multinomial, Dask);
    autodoc would show that signature instead of ``__init__``'s.
    """
    if what != "class" or "__new__" not in vars(obj) or "__init__" not in vars(obj):
        return None
    sig = sphinx_inspect.signature(obj.__init__, bound_method=True,
                                   type_aliases=app.config.autodoc_type_aliases)
    return sphinx_inspect.stringify_signature(sig, show_return_annotation=False), None


_property_docstrings = {}


def _keep_property_docstring(app, what, name, obj, options, lines):
    """Before napoleon: remember a property's docstring as written."""
    if what == "property":
        _property_docstrings[name] = list(lines)


def _parse_property_docstring(app, what, name, obj, options, lines):
    """After napoleon: parse a property's docstring as a method's.

    Napoleon reads the first line of a property's docstring as ``type: description``; this
    package's properties start with a sentence ("Names of theta's entries: X's column names ...").
    """
    if what == "property" and name in _property_docstrings:
        original = _property_docstrings.pop(name)
        lines[:] = GoogleDocstring(original, app.config, app, "method", name, obj).lines()


def setup(app):
    app.connect("autodoc-process-signature", _init_signature)
    # napoleon's own handler runs at the default priority, 500
    app.connect("autodoc-process-docstring", _keep_property_docstring, priority=400)
    app.connect("autodoc-process-docstring", _parse_property_docstring, priority=600)
