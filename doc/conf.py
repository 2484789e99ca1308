# Sphinx configuration for the rbd_livemigrate operator documentation.
# Build: sphinx-build -W -b html doc <out>   (warnings are errors)

project = 'rbd_livemigrate'
author = 'rbd_livemigrate maintainers'
copyright = 'rbd_livemigrate maintainers'

master_doc = 'index'
root_doc = master_doc
source_suffix = {'.rst': 'restructuredtext'}
exclude_patterns = ['_build']

# sphinx itself only: no extensions that need extra packages
extensions = []

highlight_language = 'none'
pygments_style = 'sphinx'
html_theme = 'alabaster'
html_static_path = []
